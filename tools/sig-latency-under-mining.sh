#!/usr/bin/env bash
# sig-latency-under-mining.sh — what a validator sees from sigserve while the
# same machine mines: round-trip latency of small batches (p50, p99, p99.9)
# with the PoW workers at each scheduling priority, beside a run that does
# not mine at all. One session, modes alternated, so the ratios are fair.
#
# Usage:
#   tools/sig-latency-under-mining.sh [seconds-per-point]     (default 2)
#   env: HASHRIG=path    hashrig binary (default target/release/hashrig)
#        MODES="..."     modes in order (default "no-mine normal low idle")
#        SCHEMES=...     bench sig --schemes (default ed25519,ecdsa)
#        MAX_BATCH=N     largest batch (default 64: sizes 1, 4, 16, 64)
#        ADDR=host:port  sigserve address (default 127.0.0.1:9798)
#
# Each mode starts `hashrig run` on the demo node with --sigserve and no demo
# feed (every core mining, except no-mine), waits for it to listen, runs
# `hashrig bench sig --sigserve` (one connection, one batch at a time), then
# stops it and prints its last hashrate line.
set -euo pipefail
SECS=${1:-2}
HASHRIG=${HASHRIG:-target/release/hashrig}
MODES=${MODES:-"no-mine normal low idle"}
SCHEMES=${SCHEMES:-ed25519,ecdsa}
MAX_BATCH=${MAX_BATCH:-64}
ADDR=${ADDR:-127.0.0.1:9798}
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') | $(nproc) CPUs | $(uptime)"
for mode in $MODES; do
  if [ "$mode" = no-mine ]; then args=(--no-mine); else args=(--cpu-priority "$mode"); fi
  log=$(mktemp)
  "$HASHRIG" run "${args[@]}" --sigserve "$ADDR" --sig-demo-rate 0 --no-metrics --status-interval 1 >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q "sigserve: listening" "$log" && break; sleep 0.1; done
  sleep 2 # let the miners reach full speed
  echo "== mode $mode: hashrig run ${args[*]}"
  "$HASHRIG" bench sig --sigserve "$ADDR" --schemes "$SCHEMES" --max-batch "$MAX_BATCH" --seconds "$SECS" | tail -n +2
  grep -o "speed 10s[^|]*" "$log" | tail -1 | sed 's/^/   last status while measured: /' || true
  kill -INT "$pid"; wait "$pid" || true
  rm -f "$log"
done
echo "after: $(uptime)"
