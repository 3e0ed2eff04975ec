// requires: secp256k1_field.wgsl
//
// Points of secp256k1 (y^2 = x^3 + 7) in homogeneous projective
// coordinates (X : Y : Z), x = X/Z, y = Y/Z, the identity (0 : 1 : 0),
// with the complete formulas of Renes, Costello and Batina ("Complete
// addition formulas for prime order elliptic curves", 2016, algorithms 7
// and 9 for a = 0, b3 = 3b = 21). Complete means no special case: P + P,
// P + (-P) and the identity as either input come out right with the same
// code, so a crafted signature cannot steer the kernel into a branch the
// CPU path handles differently, and the shader holds one addition.

struct Pj {
    x: Fe,
    y: Fe,
    z: Fe,
}

fn pj_identity() -> Pj {
    return Pj(FE_ZERO, FE_ONE, FE_ZERO);
}

// P + Q (12 multiplications, 2 by 21).
fn pj_add(p: Pj, q: Pj) -> Pj {
    var t0 = fe_mul(p.x, q.x);
    var t1 = fe_mul(p.y, q.y);
    var t2 = fe_mul(p.z, q.z);
    var t3 = fe_mul(fe_add(p.x, p.y), fe_add(q.x, q.y));
    var t4 = fe_add(t0, t1);
    t3 = fe_sub(t3, t4);
    t4 = fe_mul(fe_add(p.y, p.z), fe_add(q.y, q.z));
    var x3 = fe_add(t1, t2);
    t4 = fe_sub(t4, x3);
    x3 = fe_mul(fe_add(p.x, p.z), fe_add(q.x, q.z));
    var y3 = fe_add(t0, t2);
    y3 = fe_sub(x3, y3);
    x3 = fe_add(t0, t0);
    t0 = fe_add(x3, t0);
    t2 = fe_mul_small(t2, 21u);
    var z3 = fe_add(t1, t2);
    t1 = fe_sub(t1, t2);
    y3 = fe_mul_small(y3, 21u);
    x3 = fe_mul(t4, y3);
    t2 = fe_mul(t3, t1);
    x3 = fe_sub(t2, x3);
    y3 = fe_mul(y3, t0);
    t1 = fe_mul(t1, z3);
    y3 = fe_add(t1, y3);
    t0 = fe_mul(t0, t3);
    z3 = fe_mul(z3, t4);
    z3 = fe_add(z3, t0);
    return Pj(x3, y3, z3);
}

// 2P (6 multiplications, 2 squarings, 1 by 21).
fn pj_dbl(p: Pj) -> Pj {
    var t0 = fe_sq(p.y);
    var z3 = fe_mul_small(t0, 8u);
    var t1 = fe_mul(p.y, p.z);
    var t2 = fe_sq(p.z);
    t2 = fe_mul_small(t2, 21u);
    var x3 = fe_mul(t2, z3);
    var y3 = fe_add(t0, t2);
    z3 = fe_mul(t1, z3);
    t1 = fe_add(t2, t2);
    t2 = fe_add(t1, t2);
    t0 = fe_sub(t0, t2);
    y3 = fe_mul(t0, y3);
    y3 = fe_add(x3, y3);
    t1 = fe_mul(p.x, p.y);
    x3 = fe_mul(t0, t1);
    x3 = fe_add(x3, x3);
    return Pj(x3, y3, z3);
}

struct Decoded {
    ok: bool,
    y: Fe,
}

// The y of a point with this x, of the given parity, as libsecp256k1's
// secp256k1_ge_set_xo_var: fails when x^3 + 7 is not a square (x < p is the
// host's check).
fn pt_lift_x(x: Fe, odd: bool) -> Decoded {
    let c = fe_add(fe_mul(fe_sq(x), x), FE_SEVEN);
    var y = fe_sqrt(c);
    if (!fe_eq(fe_sq(y), c)) {
        return Decoded(false, FE_ZERO);
    }
    if (fe_is_odd(y) != odd) {
        y = fe_neg(y);
    }
    return Decoded(true, y);
}

// On the curve (x, y < p is the host's check).
fn pt_is_on_curve(x: Fe, y: Fe) -> bool {
    return fe_eq(fe_sq(y), fe_add(fe_mul(fe_sq(x), x), FE_SEVEN));
}
