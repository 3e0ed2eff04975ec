// requires: ed25519_field.wgsl
//
// Points of edwards25519 (-x^2 + y^2 = 1 + d x^2 y^2) in extended
// coordinates (X : Y : Z : T), x = X/Z, y = Y/Z, xy = T/Z, with the
// formulas curve25519-dalek uses (Hisil-Wong-Carter-Dawson 2008), and
// point decoding exactly as dalek's CompressedEdwardsY::decompress.

struct Pt {
    x: Fe,
    y: Fe,
    z: Fe,
    t: Fe,
}

// A point ready to be added: (Y + X, Y - X, Z, 2d T).
struct Cached {
    ypx: Fe,
    ymx: Fe,
    z: Fe,
    t2d: Fe,
}

fn pt_identity() -> Pt {
    return Pt(FE_ZERO, FE_ONE, FE_ONE, FE_ZERO);
}

fn pt_neg(p: Pt) -> Pt {
    return Pt(fe_neg(p.x), p.y, p.z, fe_neg(p.t));
}

fn pt_cached(p: Pt) -> Cached {
    return Cached(fe_add(p.y, p.x), fe_sub(p.y, p.x), p.z, fe_mul(p.t, FE_D2));
}

// From the "completed" point ((X : Z), (Y : T)) of an addition or doubling.
fn pt_from_completed(x: Fe, y: Fe, z: Fe, t: Fe) -> Pt {
    return Pt(fe_mul(x, t), fe_mul(y, z), fe_mul(z, t), fe_mul(x, y));
}

// 2P (4 squarings, 4 multiplications).
fn pt_dbl(p: Pt) -> Pt {
    let xx = fe_sq(p.x);
    let yy = fe_sq(p.y);
    let zz = fe_sq(p.z);
    let zz2 = fe_add(zz, zz);
    let xy_sq = fe_sq(fe_add(p.x, p.y));
    let yy_plus_xx = fe_add(yy, xx);
    let yy_minus_xx = fe_sub(yy, xx);
    return pt_from_completed(fe_sub(xy_sq, yy_plus_xx), yy_plus_xx, yy_minus_xx, fe_sub(zz2, yy_minus_xx));
}

// P + Q, or P - Q when `negate`.
fn pt_add_cached(p: Pt, q: Cached, negate: bool) -> Pt {
    var qp = q.ypx;
    var qm = q.ymx;
    if (negate) {
        qp = q.ymx;
        qm = q.ypx;
    }
    let pp = fe_mul(fe_add(p.y, p.x), qp);
    let mm = fe_mul(fe_sub(p.y, p.x), qm);
    let tt2d = fe_mul(p.t, q.t2d);
    let zz = fe_mul(p.z, q.z);
    let zz2 = fe_add(zz, zz);
    if (negate) {
        return pt_from_completed(fe_sub(pp, mm), fe_add(pp, mm), fe_sub(zz2, tt2d), fe_add(zz2, tt2d));
    }
    return pt_from_completed(fe_sub(pp, mm), fe_add(pp, mm), fe_add(zz2, tt2d), fe_sub(zz2, tt2d));
}

fn pt_is_identity(p: Pt) -> bool {
    return fe_is_zero(p.x) && fe_eq(p.y, p.z);
}

// The y coordinates of the eight points of small order, canonical: 0 (order
// 4), 1 (the identity), -1 (order 2) and +-y8 (order 8, y8 the y of
// 26e8958f...fc05). Each y is shared by a point and its negation, both of
// small order, so for a point that decoded this is exactly [8]P = 0, at
// the cost of one fe_freeze instead of three doublings. The constants are
// the field file's (its limb layout).
// For an affine point (Z = 1) that decoded: is it of small order?
fn pt_affine_small_order(y: Fe) -> bool {
    let c = fe_freeze(y);
    return fe_same(c, FE_ZERO) || fe_same(c, FE_ONE) || fe_same(c, FE_MINUS_ONE) || fe_same(c, FE_Y8)
        || fe_same(c, FE_MINUS_Y8);
}

struct Decoded {
    ok: bool,
    p: Pt,
}

// dalek's decompress: y from the low 255 bits (y >= p allowed), x the
// root of (y^2 - 1) / (d y^2 + 1) made odd when the sign bit is set (so
// x = 0 with the sign bit decodes, as ZIP-215 wants).
fn pt_decode(w: array<u32, 8>) -> Decoded {
    let y = fe_from_words(w);
    let yy = fe_sq(y);
    let u = fe_sub(yy, FE_ONE);
    let v = fe_add(fe_mul(yy, FE_D), FE_ONE);
    let s = fe_sqrt_ratio_i(u, v);
    var x = s.r;
    if ((w[7] >> 31u) == 1u) {
        x = fe_neg(x);
    }
    return Decoded(s.was_square, Pt(x, y, FE_ONE, fe_mul(x, y)));
}
