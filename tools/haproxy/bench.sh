#!/usr/bin/env bash
# One versus two hashrig verification servers behind HAProxy, beside a
# direct connection, on this machine: a benchmark, not a test.
#
#   tools/haproxy/bench.sh [HASHRIG_BIN] [SECONDS] [THREADS_PER_SERVER]
#
# Starts two `hashrig run --no-mine --sigserve` servers (THREADS each, CPU
# signatures only) and HAProxy with tools/haproxy/hashrig-sigserve.cfg,
# then measures, with `hashrig bench sig --sigserve` (16 connections each
# one batch at a time, Ed25519 batches of 1 and 64):
#   direct     one server, no balancer
#   lb-1       through HAProxy with the second server disabled
#   lb-2       through HAProxy with both servers
# and prints items/s and the ratios lb-1/direct and lb-2/lb-1, measured in
# the same run. On a machine with fewer cores than the two servers and the
# load generator want, lb-2 cannot beat lb-1: the ratio shows the
# balancer's cost, not the scaling.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/release/hashrig}
SECS=${2:-3}
THREADS=${3:-1}
command -v haproxy >/dev/null || { echo "haproxy not found (make deps installs it)"; exit 1; }
[ -x "$BIN" ] || { echo "$BIN not found: cargo build --release"; exit 1; }
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
S1=$(port); M1=$(port); S2=$(port); M2=$(port); LB=$(port); ST=$(port)
serve() { # sigserve port, metrics port
    "$BIN" run --no-mine --sigserve "127.0.0.1:$1" --metrics "127.0.0.1:$2" --threads "$THREADS" --no-pin \
        --sig-demo-rate 0 --sig-engines cpu --status-interval 600 >"$WORK/srv-$1.log" 2>&1 &
    PIDS+=($!)
}
ready() { for _ in $(seq 300); do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0; sleep 0.1; done; echo "not ready: $1"; exit 1; }
serve "$S1" "$M1"; serve "$S2" "$M2"; ready "$M1"; ready "$M2"
HASHRIG_LB_BIND=127.0.0.1:$LB HASHRIG_LB_STATS=127.0.0.1:$ST HASHRIG_SIG1=127.0.0.1:$S1 HASHRIG_SIG1_CHECK_PORT=$M1 \
    HASHRIG_SIG2=127.0.0.1:$S2 HASHRIG_SIG2_CHECK_PORT=$M2 \
    haproxy -db -f tools/haproxy/hashrig-sigserve.cfg >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
# The stats page's status column for a server.
status() { curl -s "http://127.0.0.1:$ST/stats;csv" | awk -F, -v s="$1" '$1=="sigserve" && $2==s {print $18}'; }
up() { for _ in $(seq 200); do [ "$(status "$1")" = "$2" ] && return 0; sleep 0.1; done; echo "haproxy: $1 not $2"; exit 1; }
up sig1 UP; up sig2 UP

measure() { # address → "items/s at batch 1" "items/s at batch 64"
    "$BIN" bench sig --sigserve "$1" --connections 16 --schemes ed25519 --max-batch 64 --seconds "$SECS" --json |
        python3 -c 'import json,sys; r={p["batch"]: p["saturated_items_per_sec"] for p in json.load(sys.stdin)["results"]}; print(round(r[1]), round(r[64]))'
}
read -r D1 D64 < <(measure "127.0.0.1:$S1")
# One backend: sig2 in maintenance (the stats page is read-only, so the
# second server stops instead; HAProxy's checks take it out).
kill -STOP "${PIDS[1]}"
up sig2 DOWN
read -r L1_1 L1_64 < <(measure "127.0.0.1:$LB")
kill -CONT "${PIDS[1]}"
up sig2 UP
read -r L2_1 L2_64 < <(measure "127.0.0.1:$LB")
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs; servers: $THREADS thread(s) each; $SECS s per point"
printf '%-10s %14s %14s\n' "" "batch 1 (/s)" "batch 64 (/s)"
printf '%-10s %14s %14s\n' direct "$D1" "$D64" lb-1 "$L1_1" "$L1_64" lb-2 "$L2_1" "$L2_64"
python3 -c "
d1,d64,a1,a64,b1,b64=map(float,'$D1 $D64 $L1_1 $L1_64 $L2_1 $L2_64'.split())
print(f'lb-1/direct: {a1/d1:.2f} (batch 1)  {a64/d64:.2f} (batch 64)')
print(f'lb-2/lb-1:   {b1/a1:.2f} (batch 1)  {b64/a64:.2f} (batch 64)')"
