// requires: secp256k1_field.wgsl, secp256k1_point.wgsl, secp256k1_msm.wgsl
//
// The Pippenger driver both batch-equation kernels share
// (ed25519_msm.wgsl describes the phases, the input layout and `pts`;
// secp256k1_msm.wgsl what differs for BIP340). A curve's file defines the
// point types and hooks it calls:
//
//   alias MsmPoint               a stored point (pts, binding 2)
//   alias MsmAcc                 an accumulator
//   const MSM_IDENTITY: MsmPoint
//   const MSM_COFACTOR_DOUBLINGS  doublings after the last window (0: none)
//   fn msm_acc_identity() -> MsmAcc
//   fn msm_dbl(x: MsmAcc) -> MsmAcc
//   fn msm_add(x: MsmAcc, q: MsmPoint, negate: bool) -> MsmAcc
//   fn msm_stored(x: MsmAcc) -> MsmPoint
//   fn msm_is_identity(x: MsmAcc) -> bool
//   fn decode_point(i: u32) -> u32   phase 0: reason code of point i
//                                    (0: decoded and written to pts[i])
//
// The curve files require this one; the line above (requirements are one
// level deep, not followed further) only lets this file be checked on its
// own, with BIP340's hooks, as every kernels/*.wgsl is in
// tests/gpu_kernels_naga.rs.

const POINT_WORDS: u32 = 9u;
const NEG: u32 = 0x80000000u;

const PHASE_DECODE: u32 = 0u;
const PHASE_BUCKETS: u32 = 1u;
const PHASE_REDUCE: u32 = 2u;

struct Params {
    // Which phase this dispatch runs, and its invocation count.
    phase: u32,
    count: u32,
    // 0 (see fe_loop_zero).
    zero: u32,
    // Points in the sum, window bits c, windows, buckets per window (2^(c-1)).
    points: u32,
    window_bits: u32,
    windows: u32,
    buckets: u32,
    // Where the bucket offsets and entries start in `input`.
    offsets_at: u32,
    entries_at: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
    _pad4: u32,
    _pad5: u32,
    _pad6: u32,
}

// In a storage buffer, not a uniform one: lavapipe specialises a shader on
// the uniform values its loops depend on and recompiles it for every new
// set (about 20 ms per dispatch for the Ed25519 kernel, measured); each
// phase and each batch has new values.
@group(0) @binding(0) var<storage, read> params: Params;
@group(0) @binding(1) var<storage, read> input: array<u32>;
@group(0) @binding(2) var<storage, read_write> pts: array<MsmPoint>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

// Phases 1 to 3 for invocation t: the steps, what each adds, where the
// result goes. One doubling and one addition site (see fe_pow22523 in
// ed25519_verify.wgsl for why): each step doubles its accumulator `dbl`
// times, then adds one stored point to it.
fn accumulate(t: u32) {
    let phase = params.phase;
    let nb = params.buckets;
    let bucket_base = params.points;
    let window_base = bucket_base + params.windows * nb;
    var first = 0u;
    var steps = 0u;
    if (phase == PHASE_BUCKETS) {
        first = input[params.offsets_at + t];
        steps = input[params.offsets_at + t + 1u] - first;
    } else if (phase == PHASE_REDUCE) {
        steps = 2u * nb;
    } else {
        // The windows, most significant first, then the cofactor if any.
        steps = params.windows + select(0u, 1u, MSM_COFACTOR_DOUBLINGS > 0u);
    }
    // acc: the result; run: the running sum of phase 2.
    var acc = msm_acc_identity();
    var run = msm_acc_identity();
    for (var s = 0u; s < steps + fe_loop_zero; s++) {
        var q = MSM_IDENTITY;
        var neg = false;
        var add = true;
        var dbl = 0u;
        var into_run = false;
        if (phase == PHASE_BUCKETS) {
            let e = input[params.entries_at + first + s];
            q = pts[e & ~NEG];
            neg = (e & NEG) != 0u;
        } else if (phase == PHASE_REDUCE) {
            // Even step: run += S_b (b from the top); odd step: acc += run.
            if ((s & 1u) == 0u) {
                q = pts[bucket_base + t * nb + (nb - 1u - (s >> 1u))];
                into_run = true;
            } else {
                q = msm_stored(run);
            }
        } else if (s < params.windows) {
            q = pts[window_base + params.windows - 1u - s];
            dbl = select(params.window_bits, 0u, s == 0u);
        } else {
            dbl = MSM_COFACTOR_DOUBLINGS;
            add = false;
        }
        var x = acc;
        if (into_run) {
            x = run;
        }
        for (var j = 0u; j < dbl + fe_loop_zero; j++) {
            x = msm_dbl(x);
        }
        if (add) {
            x = msm_add(x, q, neg);
        }
        if (into_run) {
            run = x;
        } else {
            acc = x;
        }
    }
    if (phase == PHASE_BUCKETS) {
        pts[bucket_base + t] = msm_stored(acc);
    } else if (phase == PHASE_REDUCE) {
        pts[window_base + t] = msm_stored(acc);
    } else {
        out[params.points] = select(2u, 1u, msm_is_identity(acc));
    }
}

@compute @workgroup_size(64)
fn msm(@builtin(global_invocation_id) gid: vec3<u32>) {
    fe_loop_zero = params.zero;
    let t = gid.x;
    if (t >= params.count) {
        return;
    }
    if (params.phase == PHASE_DECODE) {
        out[t] = decode_point(t);
    } else {
        accumulate(t);
    }
}
