#!/usr/bin/env bash
# compare-cpuminer.sh — measure hashrig beside cpuminer-opt (and OpenSSL's
# SHA-256) in one session, so the figures can be compared as ratios taken on
# the same machine under the same conditions.
#
# Usage:
#   tools/compare-cpuminer.sh /path/to/cpuminer [seconds]
#     seconds  measured time per phase (default 20; below ~12 s cpuminer gets
#              too few 5-second scan samples to be trusted)
#   env: HASHRIG=path   hashrig binary (default target/release/hashrig)
#        THREADS=N      "all threads" count (default: nproc)
#        ROUNDS=N       repeat the whole alternation N times (default 1)
#        HASHRIG_ARGS=  extra `bench pow` flags, e.g. "--backend sha-ni" to pair
#                       a hashrig path with the cpuminer-opt build of the same kind
#
# Order of runs (alternating, so a load change hits both sides alike):
#   cpuminer 1 thread, hashrig 1 thread, cpuminer N threads, hashrig N threads,
#   openssl speed (single thread, 64-byte and 16 KiB inputs).
# Run it on an otherwise idle machine: the script prints `uptime` before and
# after; a 1-minute load above ~0.3 means the numbers are disturbed.
#
# Getting cpuminer-opt (JayDDee/cpuminer-opt, GPL; none of its code belongs in
# this repository — build it outside the tree, e.g. in /tmp):
#   git clone https://github.com/JayDDee/cpuminer-opt /tmp/cpuminer-opt
#     (measured with v26.1, commit b34565bfaca5da9ed894a326e3ba0dfe459550a4)
#   apt-get install -y build-essential automake autoconf libssl-dev \
#       libcurl4-openssl-dev libjansson-dev libgmp-dev zlib1g-dev
#   cd /tmp/cpuminer-opt && ./autogen.sh \
#     && CFLAGS="-O3 -march=native -Wall" ./configure --with-curl && make -j"$(nproc)"
#   (this is what its build.sh does; `./cpuminer --version` should list
#   "SW features: ... SHA256" on a SHA-NI CPU)
#   Which sha256d it runs is fixed at compile time: 16-way AVX-512 when the
#   build targets AVX-512 (F, VL, DQ, BW), else SHA-NI, else 8-way AVX2. For
#   its SHA path on an AVX-512 CPU build a second copy with
#   CFLAGS="-O3 -march=native -mno-avx512f -Wall".
#
# How cpuminer-opt's figure is read: the run is
#   cpuminer -a sha256d --benchmark -t N --time-limit=S --hash-meter --no-color
# With --hash-meter every worker logs "Thread i, CPU c: X Mh/s" after each
# scan (~5 s; the rate of that scan alone). Its own "Total:" line is a
# cumulative average over whole seconds since start-up (includes start-up,
# truncated denominator: reads a few % high), and its final "Benchmark:" line is
# the sum of the threads' last scans, the last of which is cut short by the
# time limit. So this script takes, per thread, the median of its scan rates
# without the first one (a 1000-hash calibration scan), and sums the threads.
# The "Benchmark:" line is shown too, for reference.
#
# What the OpenSSL column counts: `openssl speed -evp sha256 -bytes 64` hashes
# 64-byte messages, each a full SHA256 init/update/final: 2 compressions (the
# data block plus a padding block, since 64+9 bytes > 64), plus EVP call
# overhead. Reported as compressions/s = (bytes/s / 64) * 2. The overhead is
# large at 64 bytes, so a second run with 16384-byte messages (256 data blocks
# + 1 padding block = 257 compressions each) gives OpenSSL's near-raw SHA-NI
# compression rate: compressions/s = bytes/s / 16384 * 257. The table's
# "nonces/compr" ratios are hashrig 1-thread nonces/s divided by each: a miner
# doing 2 compressions per nonce (midstate + second hash) sits near 0.5 of the
# raw rate; early-exit / fixed-padding tricks can push it a little above.
set -euo pipefail

usage() { sed -n '/^# Usage:/,/same kind/p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
CPUMINER=$1
SECONDS_PER=${2:-20}
HASHRIG=${HASHRIG:-target/release/hashrig}
THREADS=${THREADS:-$(nproc)}
ROUNDS=${ROUNDS:-1}
HASHRIG_ARGS=${HASHRIG_ARGS:-}

[ -x "$CPUMINER" ] || { echo "not executable: $CPUMINER" >&2; exit 1; }
[ -x "$HASHRIG" ] || { echo "not executable: $HASHRIG (cargo build --release, or set HASHRIG=)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "openssl not found" >&2; exit 1; }
[[ $SECONDS_PER =~ ^[0-9]+$ ]] && [ "$SECONDS_PER" -ge 5 ] || { echo "seconds must be an integer >= 5" >&2; exit 1; }
[ "$SECONDS_PER" -ge 12 ] || echo "warning: under 12 s cpuminer yields only 1-2 scan samples per thread" >&2

LOGDIR=$(mktemp -d /tmp/compare-cpuminer.XXXXXX)
echo "logs: $LOGDIR"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') | nproc $(nproc) | all-threads = $THREADS"
echo "cpuminer: $("$CPUMINER" --version 2>&1 | grep -m1 -o 'cpuminer-opt [0-9.]*' || echo '?')"
echo "hashrig:  $("$HASHRIG" --version 2>/dev/null || echo "$HASHRIG")"
echo "hashrig bench pow flags: ${HASHRIG_ARGS:-(none: the path chosen by measurement)}"
echo "openssl:  $(openssl version)"
echo "load before: $(uptime)"

# cpuminer <threads> <log> -> prints hashes/s (sum over threads of per-thread median scan rate)
run_cpuminer() {
    local t=$1 log=$2
    timeout $((SECONDS_PER + 30)) "$CPUMINER" -a sha256d --benchmark -t "$t" \
        --time-limit="$SECONDS_PER" --hash-meter --no-color >"$log" 2>&1 || true
    awk '
        function scale(u) { return u ~ /^k/ ? 1e3 : u ~ /^M/ ? 1e6 : u ~ /^G/ ? 1e9 : u ~ /^T/ ? 1e12 : 1 }
        /Thread [0-9]+, CPU [0-9]+: [0-9.]+ [a-zA-Z]*\/s/ {
            match($0, /Thread [0-9]+,/); id = substr($0, RSTART + 7, RLENGTH - 8) + 0
            n = split($0, f, " "); v = f[n-1] * scale(f[n])
            k = ++cnt[id]; if (k > 1) s[id, k - 1] = v   # drop calibration scan
        }
        END {
            total = 0; used = 0
            for (id in cnt) {
                m = cnt[id] - 1; if (m < 1) continue
                for (i = 1; i <= m; i++) a[i] = s[id, i]
                for (i = 2; i <= m; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j+1] = a[j]; a[j+1] = x }
                med = (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
                total += med; used++
            }
            if (used == 0) { print "NaN"; exit }
            printf "%.0f\n", total
        }' "$log"
}

# hashrig <threads> <log> -> prints hashes/s (the "hashes_per_sec" all-thread figure)
run_hashrig() {
    local t=$1 log=$2
    # with --threads > 1, bench pow measures a 1-thread phase first, then all threads
    # shellcheck disable=SC2086 # HASHRIG_ARGS is a list of flags
    "$HASHRIG" bench pow --threads "$t" --seconds "$SECONDS_PER" --json $HASHRIG_ARGS >"$log" 2>&1 \
        || { echo "hashrig failed, see $log:" >&2; tail -5 "$log" >&2; return 1; }
    grep -o '"hashes_per_sec":[0-9.eE+-]*' "$log" | tail -1 | cut -d: -f2
}

# openssl <bytes> -> prints bytes/s (machine-readable +F line)
run_openssl() {
    openssl speed -mr -evp sha256 -bytes "$1" -seconds "$SECONDS_PER" 2>/dev/null \
        | awk -F: '/^\+F:/ { print $4 }' | tail -1
}

mhs() { awk -v x="$1" 'BEGIN { if (x == "" || x == "NaN") print "n/a"; else printf "%.2f", x / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "NaN" || b == "NaN" || b == 0) print "n/a"; else printf "%.3f", a / b }'; }

for r in $(seq 1 "$ROUNDS"); do
    echo "--- round $r/$ROUNDS (about $(( SECONDS_PER * 7 + 5 )) s)"
    cm1=$(run_cpuminer 1 "$LOGDIR/cpuminer-1t-r$r.log")
    hr1=$(run_hashrig 1 "$LOGDIR/hashrig-1t-r$r.log")
    cmN=$(run_cpuminer "$THREADS" "$LOGDIR/cpuminer-${THREADS}t-r$r.log")
    hrN=$(run_hashrig "$THREADS" "$LOGDIR/hashrig-${THREADS}t-r$r.log")
    os64=$(run_openssl 64)
    os16k=$(run_openssl 16384)
    # compressions/s: 64-byte msg = 2 blocks; 16384-byte msg = 257 blocks
    c64=$(awk -v b="$os64" 'BEGIN { printf "%.0f", b / 64 * 2 }')
    c16k=$(awk -v b="$os16k" 'BEGIN { printf "%.0f", b / 16384 * 257 }')
    bm1=$(grep -o 'Benchmark: .*' "$LOGDIR/cpuminer-1t-r$r.log" | tail -1 || true)
    bmN=$(grep -o 'Benchmark: .*' "$LOGDIR/cpuminer-${THREADS}t-r$r.log" | tail -1 || true)

    echo
    printf '%-34s %12s %12s\n' "" "1 thread" "$THREADS threads"
    printf '%-34s %12s %12s\n' "cpuminer-opt sha256d  MH/s" "$(mhs "$cm1")" "$(mhs "$cmN")"
    printf '%-34s %12s %12s\n' "hashrig bench pow     MH/s" "$(mhs "$hr1")" "$(mhs "$hrN")"
    printf '%-34s %12s %12s\n' "ratio hashrig/cpuminer" "$(ratio "$hr1" "$cm1")" "$(ratio "$hrN" "$cmN")"
    printf '%-34s %12s\n' "openssl 64 B   Mcompr/s (x2/msg)" "$(mhs "$c64")"
    printf '%-34s %12s\n' "openssl 16 KiB Mcompr/s (x257/msg)" "$(mhs "$c16k")"
    printf '%-34s %12s\n' "hashrig nonces / openssl-64B compr" "$(ratio "$hr1" "$c64")"
    printf '%-34s %12s\n' "hashrig nonces / openssl-16K compr" "$(ratio "$hr1" "$c16k")"
    echo "(cpuminer's own final line: 1t '${bm1:-none}', ${THREADS}t '${bmN:-none}')"
    echo "load now: $(uptime)"
done
