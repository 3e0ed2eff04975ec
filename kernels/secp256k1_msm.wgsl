// requires: secp256k1_field.wgsl, secp256k1_point.wgsl, msm_common.wgsl
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

// Phases 1 to 3 (msm_common.wgsl): projective points throughout, no cofactor.
alias MsmPoint = Pj;
alias MsmAcc = Pj;
const MSM_IDENTITY: Pj = Pj(FE_ZERO, FE_ONE, FE_ZERO);
const MSM_COFACTOR_DOUBLINGS: u32 = 0u;

fn msm_acc_identity() -> Pj {
    return pj_identity();
}

fn msm_dbl(x: Pj) -> Pj {
    return pj_dbl(x);
}

fn msm_add(x: Pj, q: Pj, negate: bool) -> Pj {
    var p = q;
    if (negate) {
        p.y = fe_neg(p.y);
    }
    return pj_add(x, p);
}

fn msm_stored(x: Pj) -> Pj {
    return x;
}

fn msm_is_identity(x: Pj) -> bool {
    return fe_is_zero(x.z);
}

// Phase 0: the reason code of point i (0: decoded, and written to pts[i]).
fn decode_point(i: u32) -> u32 {
    let at = i * POINT_WORDS;
    let w = array<u32, 8>(input[at], input[at + 1u], input[at + 2u], input[at + 3u], input[at + 4u],
                          input[at + 5u], input[at + 6u], input[at + 7u]);
    let flags = input[at + 8u];
    let key = (flags & 4u) != 0u;
    pts[i] = MSM_IDENTITY;
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

