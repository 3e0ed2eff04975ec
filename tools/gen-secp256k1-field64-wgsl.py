#!/usr/bin/env python3
"""Generates kernels/secp256k1_field64.wgsl: arithmetic modulo
p = 2^256 - 2^32 - 977 in WGSL with 64-bit products (the `shader-int64`
capability, wgpu's Features::SHADER_INT64).

Run from the repository root:
    python3 tools/gen-secp256k1-field64-wgsl.py > kernels/secp256k1_field64.wgsl
Edit this generator, not the output (tests/gpu_kernels_naga.rs checks they agree).

The layout is libsecp256k1's 10x26 (field_10x26_impl.h): 10 limbs of 26 bits
in u32 storage, so a limb product is a u32 x u32 -> u64 multiplication and a
column of 10 products accumulates in a u64: 100 limb products per field
multiplication (55 per squaring) where the 20 x 13-bit field of
gen-secp256k1-field-wgsl.py needs 400 (210). Reduction is by the special form
of p: 2^260 = 16 (2^32 + 977) = 2^36 + 0x3D10 (mod p), so a limb of weight
2^(260 + 26 j) folds into limbs j and j + 1 with the factors 0x3D10 and 2^10.

The API is the one of the u32 field (same names, same semantics, `Fe` an
array of u32 limbs, loose values below 2^261 until fe_freeze), so
secp256k1_point.wgsl and secp256k1_verify.wgsl compile against either.

Every bound is computed here, one step of the generated code at a time, from
the limb bounds of the inputs, and asserted: each accumulator below 2^64,
each value kept in a u32 below 2^32 (the generator picks u32 arithmetic for a
step when its bound allows, u64 otherwise). The loose limb bounds are the
fixed point of every function's output bounds. A change that could overflow
fails here, not on a GPU.
"""

import importlib.util
import os

# The u32 field's generator: fe_from_words and the functions that only call
# the arithmetic (comparisons, the exponentiation chains) are shared.
spec = importlib.util.spec_from_file_location(
    "gen32", os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen-secp256k1-field-wgsl.py"))
gen32 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen32)

P = 2**256 - 2**32 - 977
N = 10  # limbs
B = 26  # bits per limb
MASK = (1 << B) - 1
U32 = 2**32
U64 = 2**64
# 2^260 mod p as two limb factors: F0 into limb j, F1 into limb j + 1.
F0, F1 = 0x3D10, 1 << 10
assert (F0 + (F1 << B)) % P == pow(2, 260, P)
BETA = 0x7AE96A2B657C07106E64479EAC3434E99CF0497512F58995C1396C28719501EE


def limbs(x):
    return [(x >> (B * i)) & MASK for i in range(N)]


def fe_lit(x):
    return "Fe(" + ", ".join(f"{v}u" for v in x) + ")"


class Term:
    """coef * v1 (* v2): u32 variables with upper bounds."""

    def __init__(self, coef, names, bounds):
        self.coef, self.names, self.bounds = coef, names, bounds
        for b in bounds:
            assert 0 <= b < U32, b

    def bound(self):
        v = self.coef
        for b in self.bounds:
            v *= b
        return v

    def code(self, ty):
        if ty == "u64":
            vs = [f"u64({n})" for n in self.names]
            if self.coef != 1:
                vs.append(f"{self.coef}lu")
        else:
            vs = list(self.names)
            if self.coef != 1:
                vs.append(f"{self.coef}u")
        return " * ".join(vs)


def chain(lines, terms, prefix):
    """A carry chain: for each position, the sum of its terms plus the carry
    from below, kept to 26 bits. Emits `let {prefix}{i}` (u32 digits) and
    returns their bounds and the final carry (name, bound) as a u32."""
    prev = None  # (name, type, bound)
    names, bounds = [], []
    for i, ts in enumerate(terms):
        ts = [t for t in ts if t.coef != 0]
        bound = sum(t.bound() for t in ts) + (prev[2] >> B if prev else 0)
        assert bound < U64, (prefix, i, bound)
        ty = "u64" if bound >= U32 else "u32"
        parts = [t.code(ty) for t in ts]
        if prev:
            pn, pty, pb = prev
            sh = f"({pn} >> {B}u)"
            if pty != ty:
                assert pb >> B < U32
                sh = f"{ty}{sh}"
            parts.append(sh)
        acc = f"{prefix}_{i}"
        lines.append(f"    let {acc} = {' + '.join(parts)};")
        digit = f"{prefix}{i}"
        lines.append(f"    let {digit} = {f'u32({acc})' if ty == 'u64' else acc} & FE_MASK;")
        names.append(digit)
        bounds.append(min(bound, MASK))
        prev = (acc, ty, bound)
    acc, ty, bound = prev
    top = bound >> B
    assert top < U32
    lines.append(f"    let {prefix}h = {f'u32({acc} >> {B}u)' if ty == 'u64' else f'{acc} >> {B}u'};")
    return names, bounds, (f"{prefix}h", top)


def fold_top(lines, names, bounds, top, prefix):
    """The carry out of limb 9 (weight 2^260) folds into limbs 0 and 1
    (times F0 and F1), then a short carry into the next limb; returns the
    limbs' names and bounds."""
    tn, tb = top
    b0 = bounds[0] + tb * F0
    assert b0 < U32
    lines.append(f"    let {prefix}f0 = {names[0]} + {tn} * {F0}u;")
    if F1 == 0:
        b1 = bounds[1] + (b0 >> B)
        assert b1 < U32
        out = [f"{prefix}f0 & FE_MASK", f"{names[1]} + ({prefix}f0 >> {B}u)"] + names[2:]
        return out, [min(b0, MASK), b1] + bounds[2:]
    b1 = bounds[1] + tb * F1 + (b0 >> B)
    assert b1 < U32 and F1 & (F1 - 1) == 0
    lines.append(f"    let {prefix}f1 = {names[1]} + ({tn} << {F1.bit_length() - 1}u) + ({prefix}f0 >> {B}u);")
    b2 = bounds[2] + (b1 >> B)
    assert b2 < U32
    out = [f"{prefix}f0 & FE_MASK", f"{prefix}f1 & FE_MASK", f"{names[2]} + ({prefix}f1 >> {B}u)"] + names[3:]
    return out, [min(b0, MASK), min(b1, MASK), b2] + bounds[3:]


def carry_fold(lines, exprs):
    """Limb expressions (Terms per limb, all u32) to a loose Fe; appends the
    code with its return, returns the output bounds."""
    names, bounds, top = chain(lines, exprs, "c")
    out, ob = fold_top(lines, names, bounds, top, "c")
    lines.append("    return Fe(" + ", ".join(out) + ");")
    return ob


def raw(expr, bound):
    """A u32 expression as a Term (add/sub/neg's per-limb sums)."""
    assert bound < U32
    return Term(1, [f"({expr})"], [bound])


def reduce_columns(lines, cols):
    """19 columns (lists of Terms) of a product to a loose Fe."""
    assert len(cols) == 2 * N - 1
    t, tb, th = chain(lines, cols, "t")
    t, tb = t + [th[0]], tb + [th[1]]  # t0..t19, t19 the carry out of column 18
    lines.append("    // Limbs 10..19 weigh 2^260 more: each folds into two limbs.")
    second = []
    for j in range(N + 1):
        ts = []
        if j < N:
            ts.append(Term(1, [t[j]], [tb[j]]))
            ts.append(Term(F0, [t[N + j]], [tb[N + j]]))
        if 1 <= j:
            ts.append(Term(F1, [t[N + j - 1]], [tb[N + j - 1]]))
        second.append(ts)
    q, qb, qh = chain(lines, second, "q")
    lines.append("    // What is left at 2^260 and up (q10 and the carry above it) folds once more.")
    third = [[Term(1, [q[j]], [qb[j]])] for j in range(N)]
    third[0].append(Term(F0, [q[N]], [qb[N]]))
    third[1].append(Term(F1, [q[N]], [qb[N]]))
    third[1].append(Term(F0, [qh[0]], [qh[1]]))
    third[2].append(Term(F1, [qh[0]], [qh[1]]))
    r, rb, rh = chain(lines, third, "r")
    out, ob = fold_top(lines, r, rb, rh, "r")
    lines.append("    return Fe(" + ", ".join(out) + ");")
    return ob


def gen_mul(lines, la, lb):
    cols = []
    for k in range(2 * N - 1):
        cols.append([Term(1, [f"a[{i}]", f"b[{k - i}]"], [la[i], lb[k - i]]) for i in range(N) if 0 <= k - i < N])
    return reduce_columns(lines, cols)


def gen_sq(lines, la):
    lines.append("    var e: Fe;")
    eb = []
    for i in range(N):
        assert la[i] << 1 < U32
        lines.append(f"    e[{i}] = a[{i}] << 1u;")
        eb.append(la[i] << 1)
    cols = []
    for k in range(2 * N - 1):
        ts = [Term(1, [f"e[{i}]", f"a[{k - i}]"], [eb[i], la[k - i]]) for i in range(N) if i < k - i < N]
        if k % 2 == 0:
            ts.append(Term(1, [f"a[{k // 2}]", f"a[{k // 2}]"], [la[k // 2]] * 2))
        cols.append(ts)
    return reduce_columns(lines, cols)


def bias_limbs(mult, floor):
    """mult * p as 10 limbs, each at least `floor` (borrowing from above)."""
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


def functions(loose):
    """Every arithmetic function's code and output bounds for loose inputs."""
    _, bias = bias_for(loose)
    fns = []

    def fn(head, body, comment=None):
        lines = []
        ob = body(lines)
        fns.append(((comment or []) + [head] + lines + ["}", ""], ob))

    fn("fn fe_carry(a: Fe) -> Fe {",
       lambda s: carry_fold(s, [[Term(1, [f"a[{i}]"], [loose[i]])] for i in range(N)]))
    fn("fn fe_add(a: Fe, b: Fe) -> Fe {",
       lambda s: carry_fold(s, [[Term(1, [f"a[{i}]"], [loose[i]]), Term(1, [f"b[{i}]"], [loose[i]])]
                                for i in range(N)]))
    fn("fn fe_sub(a: Fe, b: Fe) -> Fe {",
       lambda s: carry_fold(s, [[raw(f"a[{i}] + {bias[i]}u - b[{i}]", loose[i] + bias[i])] for i in range(N)]),
       [f"// a - b + 2^{bias_for(loose)[0]} p (the bias in the header)."])
    fn("fn fe_neg(a: Fe) -> Fe {",
       lambda s: carry_fold(s, [[raw(f"{bias[i]}u - a[{i}]", bias[i])] for i in range(N)]))
    fn("fn fe_mul_small(a: Fe, k: u32) -> Fe {",
       lambda s: carry_fold(s, [[Term(21, [f"a[{i}]"], [loose[i]])] for i in range(N)]),
       ["// a * k for a small constant k (at most 21)."])
    # fe_mul_small's code reads "a[i] * k": the bound above is for k = 21.
    code, ob = fns[-1]
    fns[-1] = ([ln.replace(" * 21u", " * k") for ln in code], ob)
    fn("fn fe_mul(a: Fe, b: Fe) -> Fe {", lambda s: gen_mul(s, loose, loose),
       ["// 100 limb products u32 x u32 -> u64, columns summed in u64."])
    fn("fn fe_sq(a: Fe) -> Fe {", lambda s: gen_sq(s, loose),
       ["// The 45 cross products once, doubled, plus the 10 squares."])
    return fns


def settle():
    """The fixed point: start from canonical limbs, widen until every
    function's output fits what every function accepts. Returns the loose
    bounds, the functions' code and the subtraction's bias."""
    loose = [MASK] * N
    for _ in range(20):
        nxt = list(loose)
        for _, o in functions(loose):
            nxt = [max(x, y) for x, y in zip(nxt, o)]
        if nxt == loose:
            break
        loose = nxt
    else:
        raise AssertionError("limb bounds do not settle")
    fns = functions(loose)
    for _, o in fns:
        assert all(x <= y for x, y in zip(o, loose))
    total = sum(v << (B * i) for i, v in enumerate(loose))
    assert total < 2**261
    # fe_freeze's strict chain keeps everything above 2^260 in limb 9.
    assert total >> (B * (N - 1)) < U32
    k, bias = bias_for(loose)
    return loose, fns, k, bias


def preamble(title, about, loose, bias_k, bias):
    """The file's header (title and about: comment lines), the Fe alias,
    FE_MASK and fe_loop_zero."""
    return title + ["//", "// Needs the shader-int64 capability (wgpu Features::SHADER_INT64)."] + about + [
        "//",
        "// Bounds (proved by the generator, which fails if one could overflow): the",
        "// arithmetic functions accept and return limbs up to",
        f"//   {loose}",
        f"// and fe_sub adds 2^{bias_k} p first (limbs {bias}, every limb >= {max(loose)}).",
        "",
        f"alias Fe = array<u32, {N}>;",
        "",
        f"const FE_MASK: u32 = {hex(MASK)}u;",
        "",
        "// Zero, but not known to be zero when the shader is compiled: every entry",
        "// point sets it from a buffer the host fills with 0, and the long loops add",
        "// it to their bounds so that no compiler unrolls them.",
        "var<private> fe_loop_zero: u32;",
        "",
    ]


def freeze(bits):
    """fe_freeze for p = 2^bits - c (c = 2^bits - P, a few limbs): the unique
    representative < p, strict limbs."""
    c = 2**bits - P
    cl = [v for v in limbs(c)]
    while cl and cl[-1] == 0:
        cl.pop()
    top = bits - B * (N - 1)  # bits of limb 9 below 2^bits
    tmask = hex((1 << top) - 1)
    assert 0 < top < B

    def strict(name):
        s = [f"    c = {name}[0];", f"    {name}[0] = c & FE_MASK;"]
        for i in range(1, N):
            s.append(f"    c = {name}[{i}] + (c >> {B}u);")
            s.append(f"    {name}[{i}] = c & FE_MASK;")
        return s

    s = [f"// The unique representative < p, every limb < 2^{B} (limb {N - 1} < 2^{top}).",
         "fn fe_freeze(a_in: Fe) -> Fe {",
         "    var a = a_in;",
         "    var c = 0u;",
         f"    // Strict {B}-bit limbs (a loose value is below 2^261: the top limb keeps",
         "    // what is above 2^260)."]
    s += strict("a")
    s.append(f"    a[{N - 1}] += (c >> {B}u) << {B}u;")
    s.append(f"    // Below 2^{bits}: fold bit {bits} and up (limb {N - 1} from bit {top}) as {c}, twice.")
    for _ in range(2):
        s.append(f"    c = a[{N - 1}] >> {top}u;")
        s.append(f"    a[{N - 1}] &= {tmask}u;")
        for i, v in enumerate(cl):
            s.append(f"    a[{i}] += c * {v}u;")
        s += strict("a")
    s.append(f"    // a < 2^{bits} now; a >= p exactly when a + {c} >= 2^{bits}.")
    s.append("    var t = a;")
    for i, v in enumerate(cl):
        s.append(f"    t[{i}] += {v}u;")
    s += strict("t")
    s += [f"    if ((t[{N - 1}] >> {top}u) != 0u) {{",
          f"        t[{N - 1}] &= {tmask}u;",
          "        return t;",
          "    }",
          "    return a;",
          "}",
          "",
          "// Bitwise equal (for canonical values).",
          "fn fe_same(a: Fe, b: Fe) -> bool {",
          "    return (" + " | ".join(f"(a[{i}] ^ b[{i}])" for i in range(N)) + ") == 0u;",
          "}"]
    return s


def main():
    loose, fns, bias_k, bias = settle()
    out = preamble(
        ["// GENERATED by tools/gen-secp256k1-field64-wgsl.py: edit the generator.",
         "//",
         "// Arithmetic modulo p = 2^256 - 2^32 - 977 (secp256k1's field) with 64-bit",
         "// products. The same API as secp256k1_field.wgsl (the u32 field), so the",
         "// point and verify kernels compile against either; src/gpu/kernel.rs picks one."],
        ["//",
         "// A field element is libsecp256k1's 10x26: 10 limbs of 26 bits in u32,",
         "// little-endian; values stay \"loose\" (any representative below 2^261, not",
         "// necessarily < p) until fe_freeze. A limb product is a u32 x u32 -> u64",
         "// multiplication and a column of 10 sums in a u64 (100 products per",
         "// multiplication, 55 per squaring). Reduction is by the special form of p:",
         "// 2^260 = 2^36 + 0x3D10 (mod p), so each limb above 2^260 folds into two",
         "// limbs with the factors 0x3D10 and 2^10."],
        loose, bias_k, bias)
    w = out.append
    w(f"const FE_ZERO: Fe = {fe_lit([0] * N)};")
    w(f"const FE_ONE: Fe = {fe_lit(limbs(1))};")
    w("// 7 (the curve is y^2 = x^3 + 7) and beta, the cube root of unity with")
    w("// lambda (x, y) = (beta x, y).")
    w(f"const FE_SEVEN: Fe = {fe_lit(limbs(7))};")
    w(f"const FE_BETA: Fe = {fe_lit(limbs(BETA))};")
    w("")
    out += gen32.from_words(N, B)
    for code, _ in fns:
        out += code
    out += freeze(256)
    # The rest (comparisons, the exponentiation chains) is the u32 field's
    # own text: it only calls the functions above.
    w(gen32.TAIL)
    print("\n".join(out))


if __name__ == "__main__":
    main()
