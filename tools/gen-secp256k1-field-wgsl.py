#!/usr/bin/env python3
"""Generates kernels/secp256k1_field.wgsl: arithmetic modulo
p = 2^256 - 2^32 - 977 in WGSL with u32 only.

Run from the repository root:
    python3 tools/gen-secp256k1-field-wgsl.py > kernels/secp256k1_field.wgsl
Edit this generator, not the output (tests/gpu_kernels_naga.rs checks they agree).

The layout is the one the Ed25519 kernel settled on (tools/gen-ed25519-field-wgsl.py,
docs/gpu-signatures.md): 20 limbs of 13 bits, every limb operation written out
with constant indices so the limbs stay in registers (lavapipe miscompiled
dynamically indexed versions). The reduction is the special-prime one:
2^260 = 16 (2^32 + 977) = 2^36 + 2^13 + 7440 (mod p), so a limb of weight
2^(260 + 13 j) folds into limbs j, j + 1 and j + 2 with the small factors
7440, 1 and 1024, with no multiplication by a big constant.

Every bound the code relies on is computed here from the limb bounds of the
inputs (an interval for each limb, carried through each step exactly as the
generated code computes it) and asserted below 2^32: a change that could
overflow a u32 fails at generation time, not on a GPU.
"""

import sys

P = 2**256 - 2**32 - 977
N = 20  # limbs
B = 13  # bits per limb
MASK = (1 << B) - 1
U32 = 2**32
# 2^260 mod p, as three small limb factors.
F0, F1, F2 = 7440, 1, 1024
assert (F0 + (F1 << 13) + (F2 << 26)) % P == pow(2, 260, P)
BETA = 0x7AE96A2B657C07106E64479EAC3434E99CF0497512F58995C1396C28719501EE


def limbs(x):
    return [(x >> (B * i)) & MASK for i in range(N)]


def fe_lit(x):
    return "Fe(" + ", ".join(f"{v}u" for v in x) + ")"


def ok(v):
    assert 0 <= v < U32, v
    return v


out = []
w = out.append


# ----- bounds --------------------------------------------------------------
# A "loose" element: what every arithmetic function returns and accepts.
# LOOSE[i] is the largest value limb i can hold; it is computed below as a
# fixed point of the functions' output bounds.

def fold_carry_bounds(src):
    """Bounds after carry_fold(src): the generated code's steps on maxima."""
    src = [ok(v) for v in src]
    r = [0] * N
    cc = src[0]
    r[0] = min(cc, MASK)
    for i in range(1, N):
        cc = ok(src[i] + (cc >> B))
        r[i] = min(cc, MASK)
    c = cc >> B
    r[0] = ok(r[0] + F0 * c)
    r[1] = ok(r[1] + F1 * c)
    r[2] = ok(r[2] + F2 * c)
    # short carry over limbs 0..3
    v = r[0]
    r[0] = min(v, MASK)
    r[1] = ok(r[1] + (v >> B))
    v = r[1]
    r[1] = min(v, MASK)
    r[2] = ok(r[2] + (v >> B))
    v = r[2]
    r[2] = min(v, MASK)
    r[3] = ok(r[3] + (v >> B))
    return r


def carry_fold(src, dst="r"):
    """Carry chain over 20 limb expressions; the carry out of limb 19 (weight
    2^260) folds back into limbs 0..2, then a short carry over limbs 0..3."""
    s = [f"    var cc = {src[0]};", f"    var {dst}: Fe;", f"    {dst}[0] = cc & FE_MASK;"]
    for i in range(1, N):
        s.append(f"    cc = {src[i]} + (cc >> 13u);")
        s.append(f"    {dst}[{i}] = cc & FE_MASK;")
    s.append("    let top = cc >> 13u;")
    s.append(f"    var v = {dst}[0] + top * {F0}u;")
    s.append(f"    {dst}[0] = v & FE_MASK;")
    s.append(f"    v = {dst}[1] + top + (v >> 13u);")
    s.append(f"    {dst}[1] = v & FE_MASK;")
    s.append(f"    v = {dst}[2] + top * {F2}u + (v >> 13u);")
    s.append(f"    {dst}[2] = v & FE_MASK;")
    s.append(f"    {dst}[3] += v >> 13u;")
    return s


def mul_bounds(a, b):
    """Output bounds of fe_mul for inputs bounded by a and b."""
    cols = [ok(sum(a[i] * b[k - i] for i in range(N) if 0 <= k - i < N)) for k in range(2 * N - 1)]
    t = [0] * (2 * N)
    c = cols[0]
    t[0] = min(c, MASK)
    for k in range(1, 2 * N - 1):
        c = ok(cols[k] + (c >> B))
        t[k] = min(c, MASK)
    t[2 * N - 1] = c >> B
    u = [t[i] for i in range(N)] + [0, 0]
    for j in range(N):
        h = t[N + j]
        u[j] += F0 * h
        u[j + 1] += F1 * h
        u[j + 2] += F2 * h
    u = [ok(x) for x in u]
    # carry over 22 limbs; limbs 20, 21 and the carry above them fold again
    r = [0] * 22
    c = u[0]
    r[0] = min(c, MASK)
    for i in range(1, 22):
        c = ok(u[i] + (c >> B))
        r[i] = min(c, MASK)
    h20, h21, h22 = r[20], r[21], c >> B
    src = r[:N]
    src[0] += F0 * h20
    src[1] += F1 * h20 + F0 * h21
    src[2] += F2 * h20 + F1 * h21 + F0 * h22
    src[3] += F2 * h21 + F1 * h22
    src[4] += F2 * h22
    return fold_carry_bounds(src)


def reduce_columns(cols):
    """Columns 0..38 (expressions, each < 2^32) to a loose Fe."""
    s = [f"    var c = {cols[0]};", "    var t: array<u32, 40>;", "    t[0] = c & FE_MASK;"]
    for k in range(1, 2 * N - 1):
        s.append(f"    c = {cols[k]} + (c >> 13u);")
        s.append(f"    t[{k}] = c & FE_MASK;")
    s.append("    t[39] = c >> 13u;")
    s.append("    // Limbs 20..39 weigh 2^260 more: each folds into three limbs.")
    u = []
    for i in range(N + 2):
        terms = [f"t[{i}]"] if i < N else []
        if i < N:
            terms.append(f"t[{N + i}] * {F0}u")
        if 0 <= i - 1 < N:
            terms.append(f"t[{N + i - 1}]")
        if 0 <= i - 2 < N:
            terms.append(f"t[{N + i - 2}] * {F2}u")
        u.append(" + ".join(terms))
    s.append(f"    var d = {u[0]};")
    s.append("    var q: array<u32, 22>;")
    s.append("    q[0] = d & FE_MASK;")
    for i in range(1, N + 2):
        s.append(f"    d = {u[i]} + (d >> 13u);")
        s.append(f"    q[{i}] = d & FE_MASK;")
    s.append("    let h22 = d >> 13u;")
    s.append("    // What is left at 2^260 and up (limbs 20, 21, 22) folds once more.")
    src = [f"q[{i}]" for i in range(N)]
    src[0] += f" + q[20] * {F0}u"
    src[1] += f" + q[20] + q[21] * {F0}u"
    src[2] += f" + q[20] * {F2}u + q[21] + h22 * {F0}u"
    src[3] += f" + q[21] * {F2}u + h22"
    src[4] += f" + h22 * {F2}u"
    s += carry_fold(src)
    s.append("    return r;")
    return s


def bias_limbs(mult, floor):
    """mult * p as 20 limbs, each at least `floor` (borrowing from above)."""
    r = mult * P
    b = []
    for i in range(N - 1):
        v = r & MASK
        while v < floor:
            v += 1 << B
        b.append(v)
        r = (r - v) >> B
    b.append(r)
    assert sum(v << (B * i) for i, v in enumerate(b)) == mult * P
    return b


def bias_for(loose):
    """The smallest 2^k p whose limbs are all >= every loose limb: added
    before subtracting, so no limb of a - b goes below zero."""
    for k in range(1, 12):
        b = bias_limbs(2**k, max(loose))
        if min(b) >= max(loose):
            return k, b
    raise AssertionError("no bias")


def outputs(loose):
    _, bias = bias_for(loose)
    return [
        mul_bounds(loose, loose),
        fold_carry_bounds([a + b for a, b in zip(loose, loose)]),
        fold_carry_bounds([a + b for a, b in zip(loose, bias)]),
        fold_carry_bounds(bias),
        fold_carry_bounds([21 * v for v in loose]),
    ]


# The fixed point: start from canonical limbs, widen until every function's
# output fits what every function accepts.
LOOSE = [MASK] * N
for _ in range(20):
    nxt = list(LOOSE)
    for o in outputs(LOOSE):
        nxt = [max(x, y) for x, y in zip(nxt, o)]
    if nxt == LOOSE:
        break
    LOOSE = nxt
else:
    raise AssertionError("limb bounds do not settle")
for o in outputs(LOOSE):
    assert all(x <= y for x, y in zip(o, LOOSE))
assert sum(v << (B * i) for i, v in enumerate(LOOSE)) < 2**261
BIAS_K, BIAS = bias_for(LOOSE)
SUB_MAX = max(LOOSE)


# The functions that only call the arithmetic (comparisons, the
# exponentiation chains): tools/gen-secp256k1-field64-wgsl.py shares them.
TAIL = """
fn fe_is_zero(a: Fe) -> bool {
    return fe_same(fe_freeze(a), FE_ZERO);
}

fn fe_eq(a: Fe, b: Fe) -> bool {
    return fe_is_zero(fe_sub(a, b));
}

fn fe_is_odd(a: Fe) -> bool {
    return (fe_freeze(a)[0] & 1u) == 1u;
}

// z^(2^k - 1) chains of libsecp256k1 (field_impl.h) as 15 steps
// "x = x^(2^n) * m", so the shader holds one squaring and one
// multiplication instead of one per step (drivers inline every call site).
// Steps 0..11 are shared: they reach x223 = z^(2^223 - 1) and then
// x223^(2^23) * x22. The square root, z^((p + 1)/4), ends with
// ^(2^6) * x2 and ^(2^2); the inverse, z^(p - 2), with ^(2^5) * z,
// ^(2^3) * x2 and ^(2^2) * z.
fn chain_squarings(step: u32, inverse: bool) -> u32 {
    switch step {
        case 0u, 1u: { return 1u; }
        case 2u, 3u, 10u: { return 3u; }
        case 4u: { return 2u; }
        case 5u: { return 11u; }
        case 6u: { return 22u; }
        case 7u, 9u: { return 44u; }
        case 8u: { return 88u; }
        case 11u: { return 23u; }
        case 12u: { return select(6u, 5u, inverse); }
        case 13u: { return select(2u, 3u, inverse); }
        default: { return 2u; }
    }
}

fn fe_chain(z: Fe, inverse: bool) -> Fe {
    var x = z;
    var x2 = FE_ONE;
    var x3 = FE_ONE;
    var x11 = FE_ONE;
    var x22 = FE_ONE;
    var x44 = FE_ONE;
    var x88 = FE_ONE;
    let steps = select(14u, 15u, inverse) + fe_loop_zero;
    for (var i = 0u; i < steps; i++) {
        let n = chain_squarings(i, inverse) + fe_loop_zero;
        for (var j = 0u; j < n; j++) {
            x = fe_sq(x);
        }
        var m = z;
        switch i {
            case 0u, 1u: { m = z; }
            case 2u, 3u, 10u: { m = x3; }
            case 4u: { m = x2; }
            case 5u: { m = x11; }
            case 6u, 11u: { m = x22; }
            case 7u, 9u: { m = x44; }
            case 8u: { m = x88; }
            case 12u: { if (inverse) { m = z; } else { m = x2; } }
            case 13u: { if (inverse) { m = x2; } else { m = FE_ONE; } }
            default: { m = z; }
        }
        x = fe_mul(x, m);
        switch i {
            case 0u: { x2 = x; }
            case 1u: { x3 = x; }
            case 4u: { x11 = x; }
            case 5u: { x22 = x; }
            case 6u: { x44 = x; }
            case 7u: { x88 = x; }
            default: {}
        }
    }
    return x;
}

// z^((p + 1)/4): a square root of z when z is a square (check by squaring).
fn fe_sqrt(z: Fe) -> Fe {
    return fe_chain(z, false);
}

// z^(p - 2) = 1/z (0 for 0).
fn fe_inv(z: Fe) -> Fe {
    return fe_chain(z, true);
}"""

# ----- code ----------------------------------------------------------------

w(f"""// GENERATED by tools/gen-secp256k1-field-wgsl.py: edit the generator.
//
// Arithmetic modulo p = 2^256 - 2^32 - 977 (secp256k1's field) with u32 only.
//
// A field element is 20 limbs of 13 bits, little-endian (the layout of the
// Ed25519 kernel, docs/gpu-signatures.md): values stay "loose" (any
// representative below 2^261, not necessarily < p) until fe_freeze. A limb
// product is < 2^27 and a column of 20 stays below 2^32, so schoolbook
// multiplication accumulates in plain u32. Reduction is by the special form
// of p: 2^260 = 2^36 + 2^13 + 7440 (mod p), so each limb above 2^260 folds
// into three limbs with the factors 7440, 1 and 1024.
//
// Bounds (proved by the generator, which fails if one could overflow): the
// arithmetic functions accept and return limbs up to
//   {LOOSE}
// and fe_sub adds 2^{BIAS_K} p first (limbs {BIAS}, every limb >= {SUB_MAX}).

alias Fe = array<u32, 20>;

const FE_MASK: u32 = 0x1fffu;

// Zero, but not known to be zero when the shader is compiled: every entry
// point sets it from a buffer the host fills with 0, and the long loops add
// it to their bounds so that no compiler unrolls them.
var<private> fe_loop_zero: u32;
""")
w(f"const FE_ZERO: Fe = {fe_lit([0] * N)};")
w(f"const FE_ONE: Fe = {fe_lit(limbs(1))};")
w("// 7 (the curve is y^2 = x^3 + 7) and beta, the cube root of unity with")
w("// lambda (x, y) = (beta x, y).")
w(f"const FE_SEVEN: Fe = {fe_lit(limbs(7))};")
w(f"const FE_BETA: Fe = {fe_lit(limbs(BETA))};")
w("")


def from_words(n, b):
    """fe_from_words for n limbs of b bits (shared with the 64-bit field)."""
    parts = []
    for i in range(n):
        bit = b * i
        k, off = bit // 32, bit % 32
        e = f"(w[{k}] >> {off}u)" if off else f"w[{k}]"
        if off + b > 32 and k + 1 < 8:
            e += f" | (w[{k + 1}] << {32 - off}u)"
        parts.append(f"({e}) & FE_MASK")
    return [
        "// A 256-bit number given as 8 little-endian u32 words (word 0 the least",
        "// significant), as the host encodes items: loose, not reduced.",
        "fn fe_from_words(w: array<u32, 8>) -> Fe {",
        "    return Fe(\n        " + ",\n        ".join(parts) + ");",
        "}",
        "",
    ]


out += from_words(N, B)
w("fn fe_carry(a: Fe) -> Fe {")
out += carry_fold([f"a[{i}]" for i in range(N)])
w("    return r;")
w("}")
w("")
w("fn fe_add(a: Fe, b: Fe) -> Fe {")
out += carry_fold([f"a[{i}] + b[{i}]" for i in range(N)])
w("    return r;")
w("}")
w("")
w(f"// a - b + 2^{BIAS_K} p (the bias above).")
w("fn fe_sub(a: Fe, b: Fe) -> Fe {")
out += carry_fold([f"a[{i}] + {BIAS[i]}u - b[{i}]" for i in range(N)])
w("    return r;")
w("}")
w("")
w("fn fe_neg(a: Fe) -> Fe {")
out += carry_fold([f"{BIAS[i]}u - a[{i}]" for i in range(N)])
w("    return r;")
w("}")
w("")
# Small constants: 2, 3, 4, 8, 21 (= 3b). Products of a loose limb stay small.
w("// a * k for a small constant k (at most 21).")
w("fn fe_mul_small(a: Fe, k: u32) -> Fe {")
out += carry_fold([f"a[{i}] * k" for i in range(N)])
w("    return r;")
w("}")
w("")
w("fn fe_mul(a: Fe, b: Fe) -> Fe {")
cols = []
for k in range(2 * N - 1):
    cols.append(" + ".join(f"a[{i}] * b[{k - i}]" for i in range(N) if 0 <= k - i < N))
out += reduce_columns(cols)
w("}")
w("")
w("// The 190 cross products once, doubled, plus the 20 squares.")
w("fn fe_sq(a: Fe) -> Fe {")
w("    var e: Fe;")
for i in range(N):
    w(f"    e[{i}] = a[{i}] << 1u;")
cols = []
for k in range(2 * N - 1):
    terms = [f"e[{i}] * a[{k - i}]" for i in range(N) if i < k - i < N]
    if k % 2 == 0:
        terms.append(f"a[{k // 2}] * a[{k // 2}]")
    cols.append(" + ".join(terms))
out += reduce_columns(cols)
w("}")
w("")


def chain(name):
    s = [f"    c = {name}[0];", f"    {name}[0] = c & FE_MASK;"]
    for i in range(1, N):
        s.append(f"    c = {name}[{i}] + (c >> 13u);")
        s.append(f"    {name}[{i}] = c & FE_MASK;")
    return s


# p's top: bit 256 is bit 9 of limb 19. 2^256 = 2^32 + 977 (mod p), and
# 2^32 is 64 in limb 2.
w("// The unique representative < p, every limb < 2^13 (limb 19 < 2^9).")
w("fn fe_freeze(a_in: Fe) -> Fe {")
w("    var a = a_in;")
w("    var c = 0u;")
w("    // Strict 13-bit limbs (a loose value is below 2^261: the top limb keeps")
w("    // what is above 2^260).")
out += chain("a")
w("    a[19] += (c >> 13u) << 13u;")
w("    // Below 2^256: fold bit 256 and up (limb 19 from bit 9) as 2^32 + 977, twice.")
for _ in range(2):
    w("    c = a[19] >> 9u;")
    w("    a[19] &= 0x1ffu;")
    w("    a[0] += c * 977u;")
    w("    a[2] += c * 64u;")
    out += chain("a")
w("    // a < 2^256 now; a >= p exactly when a + 2^32 + 977 >= 2^256.")
w("    var t = a;")
w("    t[0] += 977u;")
w("    t[2] += 64u;")
out += chain("t")
w("    if ((t[19] >> 9u) != 0u) {")
w("        t[19] &= 0x1ffu;")
w("        return t;")
w("    }")
w("    return a;")
w("}")
w("")
w("// Bitwise equal (for canonical values).")
w("fn fe_same(a: Fe, b: Fe) -> bool {")
w("    return (" + " | ".join(f"(a[{i}] ^ b[{i}])" for i in range(N)) + ") == 0u;")
w("}")
w(TAIL)
if "--montgomery" in sys.argv[1:]:
    # Measurement only (benches/gpu_field.rs; docs/gpu-signatures.md): the
    # Montgomery-form product on the same limbs, R = 2^260, to compare with
    # the special-prime reduction above. Not used by any kernel.
    NP = (-pow(P, -1, 1 << B)) % (1 << B)
    PL = limbs(P)
    R2 = pow(2, 520, P)
    w("")
    w(f"const FE_MONT_R2: Fe = {fe_lit(limbs(R2))};")
    w("// a b / 2^260 (mod p), loose.")
    w("fn fe_mont_mul(a: Fe, b: Fe) -> Fe {")
    w("    var t: array<u32, 40>;")
    for k in range(2 * N - 1):
        w(f"    t[{k}] = " + " + ".join(f"a[{i}] * b[{k - i}]" for i in range(N) if 0 <= k - i < N) + ";")
    w("    // After step i, t[i] is 0 mod 2^13 and carries into t[i + 1]; the")
    w("    // result is t[20..40] (t[39] gets nothing: the columns end at 38).")
    w("    t[39] = 0u;")
    w("    var m = 0u;")
    for i in range(N):
        w(f"    m = (t[{i}] * {NP}u) & FE_MASK;")
        for j in range(N):
            if PL[j]:
                w(f"    t[{i + j}] += m * {PL[j]}u;")
        w(f"    t[{i + 1}] += t[{i}] >> 13u;")
    out.extend(carry_fold([f"t[{N + j}]" for j in range(N)]))
    w("    return r;")
    w("}")
if __name__ == "__main__":
    print("\n".join(out))
