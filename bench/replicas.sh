#!/usr/bin/env bash
# Forwarding throughput with N `journeys serve` replicas (every role) sharing one MariaDB
# database and one NATS JetStream log, measured by journeys-load through replica 0's front
# (which publishes every event into the log; each replica applies the partitions it owns).
# Prints journeys-load's report and the CPU seconds each process used during the run.
#
#   cargo build --release -p journeys -p journeys-bench
#   bench/replicas.sh 2                 # two replicas, NATS log
#   bench/replicas.sh 1 --no-log        # one node, no log (the in-process path), for comparison
#   EVENTS=100000 bench/replicas.sh 3
#
# Needs MariaDB/MySQL at $MYSQL (default mysql://root@127.0.0.1:3306) and NATS with JetStream
# at $NATS (default nats://127.0.0.1:4222). Everything runs on 127.0.0.1; the database and
# stream are created for the run and removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

replicas="${1:?usage: bench/replicas.sh N [--no-log]}"
log=true
[ "${2:-}" = "--no-log" ] && log=false
mysql_url="${MYSQL:-mysql://root@127.0.0.1:3306}"
nats_url="${NATS:-nats://127.0.0.1:4222}"
events="${EVENTS:-100000}"
run="jbench_$$_$(date +%s)"
bin=target/release

mysql_host_port="${mysql_url#mysql://}"
mysql_user="${mysql_host_port%%@*}"
mysql_host_port="${mysql_host_port#*@}"
mysql() { command mysql -u"$mysql_user" -h"${mysql_host_port%%:*}" -P"${mysql_host_port##*:}" "$@"; }
mysql -e "CREATE DATABASE $run"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    mysql -e "DROP DATABASE IF EXISTS $run" || true
    if $log; then
        # The stream goes with the run: JetStream's delete request, over the plain NATS protocol.
        local hostport="${nats_url#nats://}"
        python3 - "${hostport%%:*}" "${hostport##*:}" "$run" <<'PY' || true
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.recv(4096)
s.sendall(f"CONNECT {{}}\r\nPUB $JS.API.STREAM.DELETE.{sys.argv[3]} 0\r\n\r\nPING\r\n".encode())
while b"PONG" not in s.recv(4096):
    pass
PY
    fi
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc_addrs=()
http_addrs=()
for i in $(seq 0 $((replicas - 1))); do
    grpc="127.0.0.1:$(port)"
    http="127.0.0.1:$(port)"
    grpc_addrs+=("$grpc")
    http_addrs+=("$http")
    log_flags=()
    $log && log_flags=(--nats-url "$nats_url" --nats-stream "$run")
    RUST_LOG=warn "$bin/journeys" serve --roles control-plane,data-plane,scheduler,delivery \
        --database-url "$mysql_url/$run" "${log_flags[@]}" --node-id "node-$i" \
        --grpc-addr "$grpc" --http-addr "$http" --destination-allow 127.0.0.1 \
        --housekeeping-schedule "" --allow-short-durations >"/tmp/$run-$i.log" 2>&1 &
    pids+=($!)
done
# Until every replica answers and the partitions are spread.
for grpc in "${grpc_addrs[@]}"; do
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/${grpc%%:*}/${grpc##*:}") 2>/dev/null && break
        sleep 0.1
    done
done
sleep 3

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A before
for pid in "${pids[@]}"; do before[$pid]=$(cpu "$pid"); done
nats_pid=$(pgrep -x nats-server | head -1 || true)
[ -n "$nats_pid" ] && nats_before=$(cpu "$nats_pid")
mysqld_pid=$(pgrep -x mariadbd || pgrep -x mysqld || true)
mysqld_pid=${mysqld_pid%% *}
[ -n "$mysqld_pid" ] && mysqld_before=$(cpu "$mysqld_pid")

"$bin/journeys-load" --grpc-addr "${grpc_addrs[0]}" --http-addr "${http_addrs[0]}" \
    --workload forwarding --events "$events" --quiet

ticks=$(getconf CLK_TCK)
echo "CPU seconds during the run (replicas=$replicas, log=$log):"
total=0
for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    used=$(( $(cpu "$pid") - before[$pid] ))
    total=$((total + used))
    echo "  node-$i: $(awk -v t="$used" -v k="$ticks" 'BEGIN{printf "%.1f", t/k}')"
done
if [ -n "$nats_pid" ] && $log; then
    used=$(( $(cpu "$nats_pid") - nats_before ))
    total=$((total + used))
    echo "  nats-server: $(awk -v t="$used" -v k="$ticks" 'BEGIN{printf "%.1f", t/k}')"
fi
if [ -n "$mysqld_pid" ]; then
    used=$(( $(cpu "$mysqld_pid") - mysqld_before ))
    echo "  mariadbd: $(awk -v t="$used" -v k="$ticks" 'BEGIN{printf "%.1f", t/k}')"
fi
echo "  journeys + nats per event: $(awk -v t="$total" -v k="$ticks" -v n="$events" 'BEGIN{printf "%.1f µs", t/k/n*1e6}')"
