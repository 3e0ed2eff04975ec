// requires: secp256k1_field.wgsl, secp256k1_point.wgsl
//
// BIP340 batch verification as one multi-scalar multiplication: BIP340's
// batch equation
//   sum z_i R_i + sum (z_i e_i) P_i - (sum z_i s_i) G = identity
// with R_i = lift_x(r_i), P_i = lift_x(pk_i) (even y), over the 2n + 1
// points of a batch (src/gpu/sig/msm/ builds it), by Pippenger's bucket
// method. The layout, the phases and the host's share are those of
// ed25519_msm.wgsl (read it first); what differs: points are projective
// (X : Y : Z) with the complete formulas of secp256k1_point.wgsl (so a
// bucket may hold P and -P, or P twice, with no special case), decoding is
// lift_x of a big-endian x (8 words, least significant first), there is no
// cofactor, and the reasons are libsecp256k1's: a key that does not lift is
// a pubkey_encoding, an r that does not lift is a bad_signature, and so is
// a key that lifts when the host already knows the signature fails (r >= p
// or s >= n: flag bit 3).
//
// Input words (binding 1): per point 9 words, x then a flag word: bit 2 the
// point is a public key, bit 3 (keys) the signature fails once the key
// decodes; then the bucket offsets and entries as in ed25519_msm.wgsl.

const REASON_BAD_SIGNATURE: u32 = 1u;
const REASON_PUBKEY_ENCODING: u32 = 5u;

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
@group(0) @binding(2) var<storage, read_write> pts: array<Pj>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const PJ_IDENTITY: Pj = Pj(FE_ZERO, FE_ONE, FE_ZERO);

// Phase 0: the reason code of point i (0: decoded, and written to pts[i]).
fn decode_point(i: u32) -> u32 {
    let at = i * POINT_WORDS;
    let w = array<u32, 8>(input[at], input[at + 1u], input[at + 2u], input[at + 3u], input[at + 4u],
                          input[at + 5u], input[at + 6u], input[at + 7u]);
    let flags = input[at + 8u];
    let key = (flags & 4u) != 0u;
    pts[i] = PJ_IDENTITY;
    let x = fe_from_words(w);
    let d = pt_lift_x(x, false);
    if (!d.ok) {
        return select(REASON_BAD_SIGNATURE, REASON_PUBKEY_ENCODING, key);
    }
    if ((flags & 8u) != 0u) {
        return REASON_BAD_SIGNATURE;
    }
    pts[i] = Pj(x, d.y, FE_ONE);
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
        // The windows, most significant first.
        steps = params.windows;
    }
    // acc: the result; run: the running sum of phase 2.
    var acc = pj_identity();
    var run = pj_identity();
    for (var s = 0u; s < steps + fe_loop_zero; s++) {
        var q = PJ_IDENTITY;
        var neg = false;
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
                q = run;
            }
        } else {
            q = pts[window_base + params.windows - 1u - s];
            dbl = select(params.window_bits, 0u, s == 0u);
        }
        var x = acc;
        if (into_run) {
            x = run;
        }
        for (var j = 0u; j < dbl + fe_loop_zero; j++) {
            x = pj_dbl(x);
        }
        if (neg) {
            q.y = fe_neg(q.y);
        }
        x = pj_add(x, q);
        if (into_run) {
            run = x;
        } else {
            acc = x;
        }
    }
    if (phase == PHASE_BUCKETS) {
        pts[bucket_base + t] = acc;
    } else if (phase == PHASE_REDUCE) {
        pts[window_base + t] = acc;
    } else {
        out[params.points] = select(2u, 1u, fe_is_zero(acc.z));
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
