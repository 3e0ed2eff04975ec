// requires: ed25519_field.wgsl, ed25519_point.wgsl
//
// Ed25519 batch verification as one multi-scalar multiplication: the
// cofactored batch equation
//   [8]( sum z_i R_i + sum (z_i k_i) A_i - (sum z_i s_i) B ) = identity
// over the 2n + 1 points of a batch (src/gpu/sig/msm.rs builds it), by
// Pippenger's bucket method. The host knows every scalar, so it does the
// scalar side: it draws the weights z_i, computes the three kinds of
// scalars, recodes them into signed windows of c bits and sorts the point
// indices into buckets (a counting sort, integer work). The GPU does every
// point operation, in four dispatches of the one entry point `msm` (one
// pipeline: on software drivers the compile is the dearest part):
//
//   phase 0  decode: one invocation per point. Decodes the compressed
//            point exactly as ed25519_verify.wgsl does (same function, same
//            reasons, same strict checks), writes it as a Cached point, and
//            its reason code (0 if fine) to `out`. A point that fails is
//            written as the identity; the host then knows the equation is
//            meaningless and does not use it.
//   phase 1  buckets: one invocation per (window, bucket): the sum of the
//            bucket's points, each added or subtracted (signed digits).
//   phase 2  reduce: one invocation per window: sum_b (b + 1) S_b by the
//            running-sum trick (2 additions per bucket).
//   phase 3  combine: one invocation: Horner over the windows (c doublings
//            and one addition each), [8], and the identity test; writes 1
//            (holds) or 2 (fails) to out[points].
//
// Phases 1 to 3 run one loop with a single doubling and a single addition
// site (as ed25519_verify.wgsl does, see fe_pow22523 for why): each step
// doubles its accumulator `dbl` times, then adds one Cached point to it.
//
// Input words (binding 1):
//   points * 9: per point the 32-byte encoding (8 words) and a flag word:
//               bit 0 strict policy, bit 1 canonical encoding (the host's
//               byte comparison), bit 2 the point is a public key (for the
//               reason code; else an R or the base point)
//   then at params.offsets_at: windows * buckets + 1 bucket start offsets
//   then at params.entries_at: the bucket entries, a point index with bit
//               31 set when the point is subtracted
//
// `pts` (binding 2), all Cached: points decoded points, then windows *
// buckets bucket sums, then windows window sums.

const REASON_PUBKEY_ENCODING: u32 = 5u;
const REASON_NON_CANONICAL_PUBKEY: u32 = 6u;
const REASON_SMALL_ORDER_PUBKEY: u32 = 7u;
const REASON_R_ENCODING: u32 = 8u;
const REASON_NON_CANONICAL_R: u32 = 9u;
const REASON_SMALL_ORDER_R: u32 = 10u;

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
@group(0) @binding(2) var<storage, read_write> pts: array<Cached>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const CACHED_IDENTITY: Cached = Cached(FE_ONE, FE_ONE, FE_ONE, FE_ZERO);

// Phase 0: the reason code of point i (0: decoded, and written to pts[i]).
fn decode_point(i: u32) -> u32 {
    let at = i * POINT_WORDS;
    let w = array<u32, 8>(input[at], input[at + 1u], input[at + 2u], input[at + 3u], input[at + 4u],
                          input[at + 5u], input[at + 6u], input[at + 7u]);
    let flags = input[at + 8u];
    let key = (flags & 4u) != 0u;
    pts[i] = CACHED_IDENTITY;
    let d = pt_decode(w);
    if (!d.ok) {
        return select(REASON_R_ENCODING, REASON_PUBKEY_ENCODING, key);
    }
    if ((flags & 1u) != 0u) {
        if ((flags & 2u) == 0u) {
            return select(REASON_NON_CANONICAL_R, REASON_NON_CANONICAL_PUBKEY, key);
        }
        if (pt_affine_small_order(d.p.y)) {
            return select(REASON_SMALL_ORDER_R, REASON_SMALL_ORDER_PUBKEY, key);
        }
    }
    pts[i] = pt_cached(d.p);
    return 0u;
}

// Phases 1 to 3 for invocation t: the steps, what each adds, where the
// result goes.
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
        // The windows, most significant first, then [8].
        steps = params.windows + 1u;
    }
    // acc: the result; run: the running sum of phase 2.
    var acc = pt_identity();
    var run = pt_identity();
    for (var s = 0u; s < steps + fe_loop_zero; s++) {
        var q = CACHED_IDENTITY;
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
                q = pt_cached(run);
            }
        } else if (s < params.windows) {
            q = pts[window_base + params.windows - 1u - s];
            dbl = select(params.window_bits, 0u, s == 0u);
        } else {
            dbl = 3u;
            add = false;
        }
        var x = acc;
        if (into_run) {
            x = run;
        }
        for (var j = 0u; j < dbl + fe_loop_zero; j++) {
            x = pt_dbl(x);
        }
        if (add) {
            x = pt_add_cached(x, q, neg);
        }
        if (into_run) {
            run = x;
        } else {
            acc = x;
        }
    }
    if (phase == PHASE_BUCKETS) {
        pts[bucket_base + t] = pt_cached(acc);
    } else if (phase == PHASE_REDUCE) {
        pts[window_base + t] = pt_cached(acc);
    } else {
        out[params.points] = select(2u, 1u, pt_is_identity(acc));
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
