#!/usr/bin/env bash
# Soak: one `journeys serve` node (every role) over a fresh MariaDB database, driven for
# --minutes by two journeys-load processes at once, forwarding-half and abandonment, each paced
# at a fixed rate (--forwarding-rate, --abandonment-rate; `--max` measures the maxima). Every
# 10 s it appends to a CSV the node's RSS, open fds and CPU, each generator's acknowledged rate
# and p99 over its last 10 s (forwarding-half: event -> webhook; abandonment: nudge lateness
# after checkout sent + hold), the backlog (outbox rows still PENDING, timers past due, timers
# in all) and the database's size. At the end it prints the averages of the first, middle and
# last 5 minutes of each series, the relative change first -> last, and both generators'
# reports; it exits 1 if either saw a duplicate, a missing webhook or a nudged buyer.
#
#   cargo build --release -p journeys -p journeys-bench
#   bench/soak.sh                        # 30 minutes at the default rates
#   bench/soak.sh --quick                # 3 minutes (the windows become thirds of the run)
#   bench/soak.sh --minutes 10 --forwarding-rate 4000 --abandonment-rate 800
#   bench/soak.sh --max                  # instead: the maxima, one short unpaced run each
#
# Options: --minutes N (30), --quick (= --minutes 3), --forwarding-rate EVENTS_PER_S,
# --abandonment-rate CHECKOUTS_PER_S, --retention-days N (0), --csv PATH (default
# bench/soak/soak-<date>.csv), --max.
#
# The node keeps its store bounded, as a deployment does once its retention has passed: dedupe
# window 120 s and finished-instance retention 0 days (finished instances and delivered sends go
# at the next run of the minutely housekeeping), so a run measures the steady state.
# `--retention-days 1` keeps them a day instead: the database then grows by the rows of every
# forwarded event and every session for the whole run (the CSV's db_mb column).
#
# The node logs at RUST_LOG=warn plus the housekeeping jobs' runs (each with its elapsed_ms) in
# node.log of the kept log directory; SOAK_LOG=<filter> replaces that filter.
#
# SOAK_NODE=<path> runs another build of the node (default target/release/journeys), e.g. one
# built with --no-default-features (the system allocator) run under jemalloc's heap profiling
# (BENCHMARKS.md, "A heap profile of the soak's node").
#
# Needs MariaDB/MySQL at $MYSQL (default mysql://root@127.0.0.1:3306), which it leaves running;
# it creates database soak_<pid>_<time> and drops it at the end, and kills only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=30
# Rates that keep pace on the shared 2-core box with both running: see `bench/soak.sh --max`
# and BENCHMARKS.md, "Soak (issue 15)", for the maxima and why not half of each alone.
forwarding_rate="${FORWARDING_RATE:-1000}"
abandonment_rate="${ABANDONMENT_RATE:-500}"
retention_days=0
csv=""
measure_max=false
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --retention-days) retention_days="$2"; shift 2 ;;
        --quick) minutes=3; shift ;;
        --forwarding-rate) forwarding_rate="$2"; shift 2 ;;
        --abandonment-rate) abandonment_rate="$2"; shift 2 ;;
        --csv) csv="$2"; shift 2 ;;
        --max) measure_max=true; shift ;;
        *) echo "unknown option $1 (see the head of $0)" >&2; exit 2 ;;
    esac
done
if ! [[ "$minutes" =~ ^[0-9]+$ ]] || [ "$minutes" -lt 1 ]; then
    echo "--minutes must be a whole number >= 1" >&2
    exit 2
fi

mysql_url="${MYSQL:-mysql://root@127.0.0.1:3306}"
run="soak_$$_$(date +%s)"
bin=target/release
work="$(mktemp -d "/tmp/$run.XXXX")"
hold_secs=5
interval=10

mysql_host_port="${mysql_url#mysql://}"
mysql_user="${mysql_host_port%%@*}"
mysql_host_port="${mysql_host_port#*@}"
sql() {
    command mariadb -u"$mysql_user" -h"${mysql_host_port%%:*}" -P"${mysql_host_port##*:}" \
        --batch --skip-column-names "$@"
}

pids=()
created=false
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if $created; then sql -e "DROP DATABASE IF EXISTS $run" || true; fi
    echo "logs kept in $work" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts the node over a fresh database; sets node_pid, grpc, http.
start_node() {
    sql -e "SET GLOBAL innodb_buffer_pool_size = 2147483648"
    # A redo log of 1 GB (MariaDB >= 10.9; MySQL >= 8.0.30 names it innodb_redo_log_capacity):
    # with the server default of 96-128 MB the checkpoint age sat at its limit, InnoDB flushed
    # furiously, and the purge of finished instances fell behind (BENCHMARKS.md, "The redo log
    # was the limit on this box").
    sql -e "SET GLOBAL innodb_log_file_size = 1073741824" 2>/dev/null \
        || sql -e "SET GLOBAL innodb_redo_log_capacity = 1073741824" 2>/dev/null \
        || echo "warning: could not resize the redo log; the purge may fall behind" >&2
    sql -e "CREATE DATABASE $run"
    created=true
    grpc="127.0.0.1:$(port)"
    http="127.0.0.1:$(port)"
    RUST_LOG="${SOAK_LOG:-warn,journeys_scheduler::housekeeping=info}" "${SOAK_NODE:-$bin/journeys}" serve --roles control-plane,data-plane,scheduler,delivery \
        --database-url "$mysql_url/$run" --node-id soak \
        --grpc-addr "$grpc" --http-addr "$http" --destination-allow 127.0.0.1 \
        --allow-short-durations --dedupe-window-secs 120 --instance-retention-days "$retention_days" \
        >"$work/node.log" 2>&1 &
    node_pid=$!
    pids+=("$node_pid")
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/${grpc%%:*}/${grpc##*:}") 2>/dev/null && break
        kill -0 "$node_pid" 2>/dev/null || { cat "$work/node.log" >&2; exit 1; }
        sleep 0.1
    done
    sleep 2
}

stop_node() {
    kill -TERM "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
    sql -e "DROP DATABASE IF EXISTS $run"
    created=false
}

load() { "$bin/journeys-load" --grpc-addr "$grpc" --http-addr "$http" "$@"; }

if $measure_max; then
    # Unpaced, alone, each on a fresh node: long enough for the delivery to reach its pace.
    start_node
    echo "== forwarding-half, unpaced, 200,000 events"
    load --workload forwarding-half --events 200000 --quiet | tee "$work/max-forwarding.txt"
    stop_node
    start_node
    echo "== abandonment, unpaced, 40,000 checkouts"
    load --workload abandonment --events 40000 --hold-secs "$hold_secs" --quiet \
        | tee "$work/max-abandonment.txt"
    stop_node
    # Both at once, as in the soak: what each reaches while the other runs too.
    start_node
    echo "== both at once, unpaced: forwarding-half 200,000 events, abandonment 40,000 checkouts"
    load --workload forwarding-half --events 200000 --quiet >"$work/max-both-forwarding.txt" &
    both_fwd=$!
    pids+=("$both_fwd")
    load --workload abandonment --events 40000 --hold-secs "$hold_secs" --quiet \
        >"$work/max-both-abandonment.txt" &
    both_ab=$!
    pids+=("$both_ab")
    wait "$both_fwd"
    wait "$both_ab"
    cat "$work/max-both-forwarding.txt" "$work/max-both-abandonment.txt"
    stop_node
    exit 0
fi

seconds=$((minutes * 60))
forwarding_events=$(awk -v r="$forwarding_rate" -v s="$seconds" 'BEGIN{printf "%d", r*s}')
abandonment_events=$(awk -v r="$abandonment_rate" -v s="$seconds" 'BEGIN{printf "%d", r*s}')
mkdir -p bench/soak
[ -n "$csv" ] || csv="bench/soak/soak-$(date -u +%Y%m%d-%H%M).csv"
datadir=$(sql -e "SELECT @@datadir")
echo "soak: $minutes min, forwarding-half $forwarding_rate events/s ($forwarding_events)," \
    "abandonment $abandonment_rate checkouts/s ($abandonment_events), hold $hold_secs s" >&2
echo "disk before: $(df -h --output=avail "$datadir" | tail -1) free at $datadir" >&2

start_node
echo "node pid $node_pid on $grpc / $http, database $run, logs in $work" >&2

load --workload forwarding-half --rate "$forwarding_rate" --events "$forwarding_events" \
    >"$work/forwarding.txt" 2>"$work/forwarding.log" &
fwd_pid=$!
pids+=("$fwd_pid")
load --workload abandonment --rate "$abandonment_rate" --events "$abandonment_events" \
    --hold-secs "$hold_secs" >"$work/abandonment.txt" 2>"$work/abandonment.log" &
ab_pid=$!
pids+=("$ab_pid")

# The last progress line of a generator's log: "<n>s  acked <n> (+<n>/s) ... p99(10s) <x> ms".
progress() { grep ' acked ' "$1" 2>/dev/null | tail -1 || true; }
acked_of() { progress "$1" | awk '{print ($3 == "" ? 0 : $3)}'; }
p99_of() {
    local v
    v=$(progress "$1" | sed -n 's/.*p99(10s) \([0-9.]*\) ms.*/\1/p')
    echo "${v:-}"
}
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks=$(getconf CLK_TCK)

columns="elapsed_s,rss_mb,fds,node_cpu_pct,fwd_acked_per_s,fwd_p99_ms,ab_acked_per_s,ab_p99_ms"
echo "$columns,outbox_pending,timers_overdue,timers_total,db_mb,load1" >"$csv"
start=$(date +%s)
next=$((start + interval))
prev_cpu=$(cpu "$node_pid")
prev_fwd=0
prev_ab=0
while kill -0 "$fwd_pid" 2>/dev/null || kill -0 "$ab_pid" 2>/dev/null; do
    now=$(date +%s)
    if [ "$now" -lt "$next" ]; then sleep 1; continue; fi
    # After a stall (a slow query), the next sample is the next 10 s mark, not a catch-up burst.
    while [ "$next" -le "$now" ]; do next=$((next + interval)); done
    elapsed=$((now - start))
    kill -0 "$node_pid" 2>/dev/null || { echo "the node died; see $work/node.log" >&2; exit 1; }
    rss_kb=$(awk '/^VmRSS:/{print $2}' "/proc/$node_pid/status")
    fds=$(find "/proc/$node_pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
    node_cpu=$(cpu "$node_pid")
    fwd=$(acked_of "$work/forwarding.log")
    ab=$(acked_of "$work/abandonment.log")
    backlog=$(sql -e "SELECT (SELECT COUNT(*) FROM $run.outbox WHERE status = 'PENDING'),
        (SELECT COUNT(*) FROM $run.timers WHERE due_at < UTC_TIMESTAMP(6)),
        (SELECT COUNT(*) FROM $run.timers),
        (SELECT ROUND(SUM(data_length + index_length) / 1048576) FROM information_schema.tables
         WHERE table_schema = '$run')" | tr '\t' ',')
    cpu_pct=$(awk -v d=$((node_cpu - prev_cpu)) -v k="$ticks" -v i="$interval" \
        'BEGIN{printf "%.0f", d / k / i * 100}')
    fwd_rate=$(((fwd - prev_fwd) / interval))
    ab_rate=$(((ab - prev_ab) / interval))
    fwd_p99=$(p99_of "$work/forwarding.log")
    ab_p99=$(p99_of "$work/abandonment.log")
    load1=$(cut -d' ' -f1 /proc/loadavg)
    echo "$elapsed,$((rss_kb / 1024)),$fds,$cpu_pct,$fwd_rate,$fwd_p99,$ab_rate,$ab_p99,$backlog,$load1" \
        >>"$csv"
    tail -1 "$csv" >&2
    prev_cpu=$node_cpu
    prev_fwd=$fwd
    prev_ab=$ab
done
fwd_status=0
wait "$fwd_pid" || fwd_status=$?
ab_status=0
wait "$ab_pid" || ab_status=$?

echo
echo "== samples in $csv"
# First, middle and last window (5 minutes, or a third of a shorter run) of each series.
awk -F, -v total="$seconds" '
    NR == 1 { for (i = 1; i <= NF; i++) name[i] = $i; n = NF; next }
    $1 > total { next }
    {
        w = (total >= 900) ? 300 : total / 3
        mid = total / 2
        win = ""
        if ($1 <= w) win = "first"
        else if ($1 > mid - w / 2 && $1 <= mid + w / 2) win = "middle"
        else if ($1 > total - w) win = "last"
        if (win == "") next
        for (i = 2; i <= n; i++) if ($i != "") { sum[win, i] += $i; cnt[win, i]++ }
    }
    END {
        printf "%-16s %10s %10s %10s %9s\n", "series", "first", "middle", "last", "change"
        for (i = 2; i <= n; i++) {
            for (k = 1; k <= 3; k++) {
                win = (k == 1) ? "first" : (k == 2) ? "middle" : "last"
                avg[k] = cnt[win, i] ? sum[win, i] / cnt[win, i] : 0
            }
            change = avg[1] ? sprintf("%+.1f %%", (avg[3] - avg[1]) / avg[1] * 100) : "-"
            printf "%-16s %10.1f %10.1f %10.1f %9s\n", name[i], avg[1], avg[2], avg[3], change
        }
    }' "$csv"
echo
echo "== forwarding-half (exit $fwd_status)"
cat "$work/forwarding.txt"
echo "== abandonment (exit $ab_status)"
cat "$work/abandonment.txt"
echo "disk after: $(df -h --output=avail "$datadir" | tail -1) free at $datadir"
bad=$(grep -h '^RESULT' "$work/forwarding.txt" "$work/abandonment.txt" \
    | grep -oE '(duplicates|missing|wrongly_nudged|unexpected)=[0-9]+' | grep -v '=0$' || true)
if [ -n "$bad" ] || [ "$fwd_status" -ne 0 ] || [ "$ab_status" -ne 0 ]; then
    echo "NOT CLEAN: ${bad:-a generator failed}" | tr '\n' ' '
    echo
    exit 1
fi
echo "clean: no duplicates, nothing missing, no buyer nudged"
