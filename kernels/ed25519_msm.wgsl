// requires: ed25519_field.wgsl, ed25519_point.wgsl, msm_common.wgsl
//
// Ed25519 batch verification as one multi-scalar multiplication: the
// cofactored batch equation
//   [8]( sum z_i R_i + sum (z_i k_i) A_i - (sum z_i s_i) B ) = identity
// over the 2n + 1 points of a batch (src/gpu/sig/msm/ builds it), by
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

// Phases 1 to 3 (msm_common.wgsl) add Cached points to extended ones, and
// [8] comes after the last window.
alias MsmPoint = Cached;
alias MsmAcc = Pt;
const MSM_IDENTITY: Cached = Cached(FE_ONE, FE_ONE, FE_ONE, FE_ZERO);
const MSM_COFACTOR_DOUBLINGS: u32 = 3u;

fn msm_acc_identity() -> Pt {
    return pt_identity();
}

fn msm_dbl(x: Pt) -> Pt {
    return pt_dbl(x);
}

fn msm_add(x: Pt, q: Cached, negate: bool) -> Pt {
    return pt_add_cached(x, q, negate);
}

fn msm_stored(x: Pt) -> Cached {
    return pt_cached(x);
}

fn msm_is_identity(x: Pt) -> bool {
    return pt_is_identity(x);
}

// Phase 0: the reason code of point i (0: decoded, and written to pts[i]).
fn decode_point(i: u32) -> u32 {
    let at = i * POINT_WORDS;
    let w = array<u32, 8>(input[at], input[at + 1u], input[at + 2u], input[at + 3u], input[at + 4u],
                          input[at + 5u], input[at + 6u], input[at + 7u]);
    let flags = input[at + 8u];
    let key = (flags & 4u) != 0u;
    pts[i] = MSM_IDENTITY;
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

