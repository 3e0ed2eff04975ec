#!/usr/bin/env bash
# Records the GPU proof-of-work figures of this machine in hw-profiles/ (issue 3):
# the adapter line, the GPU hashrate, the kernel time per dispatch and the
# CPU+GPU total, then signatures on the GPU (Ed25519, ECDSA, BIP340: L0, rate
# per batch size) and the signature figures of CPU-only and the CPU/GPU split
# (issues 9 and 11), power and hashes per joule from NVML and a run with the
# thermal guard engaged (issue 13), with the exact
# commands, in hw-profiles/<name>.toml, and the raw outputs beside it in
# hw-profiles/<name>.gpu-run.txt.
#
#   tools/gpu-profile.sh [NAME] [SECONDS]     (default NAME: derived from the GPU, SECONDS 10)
#   SOFTWARE=1 tools/gpu-profile.sh lavapipe 2   dry run on a software adapter (lavapipe)
#
# On the project's device machine (H100/H200, see /work/.library/device/README.md,
# "headless rendering"): once, on the development machine, in the repo root:
#   echo /.gl/ >>.git/info/exclude; mkdir -p .gl /tmp/amd64/partial
#   o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#   apt-get $o update; (cd .gl && apt-get $o download libvulkan1)
#   CARGO_PROFILE_RELEASE_DEBUG=0 cargo build --release   (keeps the binary well under the 64 MiB carry limit)
# then one `run` call with carry [".gl", "target/release/hashrig"] and command:
#   for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig;
#   export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json;
#   HASHRIG=target/release/hashrig tools/gpu-profile.sh h100-sxm 10 && cp -r hw-profiles $OUT/
# (VK_DRIVER_FILES only where `hashrig devices` finds no NVIDIA adapter without it.)
# Then copy the files back from files_at into hw-profiles/ and the README's table.
set -euo pipefail
cd "$(dirname "$0")/.."
HASHRIG=${HASHRIG:-target/release/hashrig}
SECONDS_PER_PHASE=${2:-10}
if [ ! -x "$HASHRIG" ]; then
    cargo build --release
fi
export HASHRIG_CACHE_DIR=${HASHRIG_CACHE_DIR:-$PWD/target/hashrig-cache}
SW=()
if [ "${SOFTWARE:-0}" = 1 ]; then SW=(--gpu-allow-software); fi

# GET /metrics with bash alone: the device machine may have no curl.
scrape() {
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 0
    printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    cat <&3
    exec 3<&-
}

if [ "${SOFTWARE:-0}" = 1 ]; then
    adapter=$("$HASHRIG" devices | grep -E '^gpu[0-9]+:' | head -1 || true)
else
    adapter=$("$HASHRIG" devices | grep -E '^gpu[0-9]+:' | grep -v software | head -1 || true)
fi
if [ -z "$adapter" ]; then
    echo "no hardware GPU adapter found:" >&2
    "$HASHRIG" devices >&2
    exit 1
fi
name=${1:-$(echo "$adapter" | sed -E 's/^gpu[0-9]+: ([^(|]*).*/\1/' | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9-' | sed -E 's/-+$//')}
mkdir -p hw-profiles
profile=hw-profiles/$name.toml
log=hw-profiles/$name.gpu-run.txt
{
    echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo unknown-commit)"
    echo "\$ $HASHRIG devices"
    "$HASHRIG" devices
    echo
    echo "\$ $HASHRIG bench pow --engine gpu --gpu-retune --seconds $SECONDS_PER_PHASE --json --profile-out $profile"
    "$HASHRIG" bench pow --engine gpu --gpu-retune "${SW[@]}" --seconds "$SECONDS_PER_PHASE" --json --profile-out "$profile"
    echo
    echo "\$ $HASHRIG bench pow --engine all --seconds $SECONDS_PER_PHASE --json --profile-out $profile"
    "$HASHRIG" bench pow --engine all "${SW[@]}" --seconds "$SECONDS_PER_PHASE" --json --profile-out "$profile"
    echo
    echo "\$ $HASHRIG bench sig --engine gpu --schemes ed25519,ecdsa,schnorr --max-batch 65536 --seconds 0.5   (forced onto the GPU: L0, rate per batch size and scheme)"
    "$HASHRIG" bench sig --engine gpu "${SW[@]}" --schemes ed25519,ecdsa,schnorr --max-batch 65536 --seconds 0.5
    echo
    # The secp256k1 field product, special prime vs Montgomery (benches/gpu_field.rs),
    # when its binary was carried: GPU_FIELD_BENCH=target/release/deps/gpu_field-HASH.
    if [ -n "${GPU_FIELD_BENCH:-}" ] && [ -x "$GPU_FIELD_BENCH" ]; then
        echo "\$ $GPU_FIELD_BENCH --bench --warm-up-time 1 --measurement-time 3 --noplot"
        HASHRIG_BENCH_GPU=${HASHRIG_BENCH_GPU:-0} "$GPU_FIELD_BENCH" --bench --warm-up-time 1 --measurement-time 3 --noplot || true
    fi
    echo
    echo "\$ $HASHRIG bench sig --engine auto --max-batch 65536 --seconds 0.5 --profile-out $profile   (CPU-only and the CPU/GPU split, for sizing)"
    "$HASHRIG" bench sig --engine auto "${SW[@]}" --max-batch 65536 --seconds 0.5 --profile-out "$profile"
    echo
    echo "\$ $HASHRIG run --duration 20 --metrics 127.0.0.1:19787 --status-interval 5   (job switch latency, from /metrics)"
    "$HASHRIG" run --duration 20 --metrics 127.0.0.1:19787 --status-interval 5 "${SW[@]}" &
    pid=$!
    sleep 18
    scrape 19787 | grep -E '^hashrig_(job_switch_seconds|gpu_|hashes_total|hardware_errors_total)' || true
    wait $pid || true
    echo
    # NVML health and the thermal guard (issue 13): a limit below any working
    # GPU's temperature engages the guard, which must lower the duty cycle
    # (hashrig_gpu_thermal_guard_total{action="lowered"}) and slow the GPU.
    echo "\$ $HASHRIG run --duration 25 --metrics 127.0.0.1:19788 --gpu-temp-limit 30 --status-interval 5   (thermal guard engaged)"
    "$HASHRIG" run --duration 25 --metrics 127.0.0.1:19788 --gpu-temp-limit 30 --status-interval 5 "${SW[@]}" &
    pid=$!
    sleep 22
    scrape 19788 | grep -E '^hashrig_(gpu_(health_info|temperature|power|energy|sm_clock|memory_clock|fan|throttled|duty_cycle|thermal_guard|temp_limit)|hashes_total)' || true
    echo "\$ $HASHRIG status 127.0.0.1:19788"
    "$HASHRIG" status 127.0.0.1:19788 || true
    wait $pid || true
} 2>&1 | tee "$log"
echo "wrote $profile and $log"
