// requires: secp256k1_field.wgsl, secp256k1_point.wgsl
//
// secp256k1 ECDSA and BIP340 Schnorr verification, one signature per
// invocation, with exactly libsecp256k1's verdicts and the CPU path's reason
// codes (src/sig/secp.rs, docs/sig-semantics.md). The host has parsed the
// signature with libsecp256k1's own parsers, checked every length and range
// it can judge from bytes (x, y, r < p; the low-S rule), and for ECDSA
// computed u1 = z/s and u2 = r/s mod n (BIP340: s and -e), split each by
// the GLV endomorphism into two halves below 2^128 and recoded the four
// halves into signed radix-16 digits. Here: decode the key, then
//   R = a1 G + b1 (lambda G) + a2 Q + b2 (lambda Q)
// by one Straus loop (four digits per window, one doubling and one addition
// site), and the scheme's check on R.
//
// Item layout (ITEM_WORDS u32 each; a field element or scalar as 8
// little-endian u32 words, word 0 the least significant, which fe_from_words
// turns into the limbs of whichever field the kernel is built with):
//   0       flags: bit 0 the key is x only (decompress, y parity in bit 1),
//           bit 2 ECDSA may also match r + n (r + n < p), bit 3 BIP340,
//           bits 8..15 the host's verdict if the key decodes (0: verify)
//   1..9    key x            9..17   key y (when given)
//   17..25  r                25..33  r + n (when bit 2)
//   33..66  33 windows, least significant first: byte k of word w is
//           digit w of half k (G, lambda G, Q, lambda Q) plus 8, in 0..16
// Verdicts: one byte per item, four to a word (cleared before each
// dispatch): 0 valid, else the sig::Reason code.

const ITEM_WORDS: u32 = 66u;
const WINDOWS: u32 = 33u;

const REASON_BAD_SIGNATURE: u32 = 1u;
const REASON_PUBKEY_ENCODING: u32 = 5u;

struct Params {
    count: u32,
    // 0 (see fe_loop_zero).
    zero: u32,
    _pad1: u32,
    _pad2: u32,
}

// An affine point as two 8-word numbers (see the item layout).
struct Affine {
    x: array<u32, 8>,
    y: array<u32, 8>,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> items: array<u32>;
// [1..8]G, then [1..8](lambda G), affine; written by the host from
// libsecp256k1's serialisations of those points.
@group(0) @binding(2) var<storage, read> g_table: array<Affine, 16>;
@group(0) @binding(3) var<storage, read_write> verdicts: array<atomic<u32>>;

fn load_fe(at: u32) -> Fe {
    return fe_from_words(array<u32, 8>(
        items[at], items[at + 1u], items[at + 2u], items[at + 3u],
        items[at + 4u], items[at + 5u], items[at + 6u], items[at + 7u]));
}

// [1..8]Q, picked by a switch rather than an index into a local array (see
// fe_chain).
struct Table {
    t0: Pj,
    t1: Pj,
    t2: Pj,
    t3: Pj,
    t4: Pj,
    t5: Pj,
    t6: Pj,
    t7: Pj,
}

fn table_get(t: Table, i: u32) -> Pj {
    switch i {
        case 0u: { return t.t0; }
        case 1u: { return t.t1; }
        case 2u: { return t.t2; }
        case 3u: { return t.t3; }
        case 4u: { return t.t4; }
        case 5u: { return t.t5; }
        case 6u: { return t.t6; }
        default: { return t.t7; }
    }
}

// Steps of the loop: 0..7 build [2..8]Q by adding Q, then four per window,
// most significant window first; the first of each four doubles four times.
const TABLE_STEPS: u32 = 7u;
const STEPS: u32 = 139u;

fn check(base: u32) -> u32 {
    let flags = items[base];
    let x = load_fe(base + 1u);
    var y: Fe;
    if ((flags & 1u) != 0u) {
        let d = pt_lift_x(x, (flags & 2u) != 0u);
        if (!d.ok) {
            return REASON_PUBKEY_ENCODING;
        }
        y = d.y;
    } else {
        y = load_fe(base + 9u);
        if (!pt_is_on_curve(x, y)) {
            return REASON_PUBKEY_ENCODING;
        }
    }
    let pre = (flags >> 8u) & 0xffu;
    if (pre != 0u) {
        return pre;
    }
    let q = Pj(x, y, FE_ONE);
    var table: Table;
    table.t0 = q;
    var acc = q;
    for (var step = 0u; step < STEPS + fe_loop_zero; step++) {
        var doublings = 0u;
        var add = true;
        var p = q;
        if (step >= TABLE_STEPS) {
            let d = step - TABLE_STEPS;
            let half = d & 3u;
            let win = WINDOWS - 1u - (d >> 2u);
            if (d == 0u) {
                acc = pj_identity();
            } else if (half == 0u) {
                doublings = 4u;
            }
            let dg = i32((items[base + 33u + win] >> (half * 8u)) & 0xffu) - 8;
            add = dg != 0;
            let idx = max(u32(abs(dg)), 1u) - 1u;
            if (half < 2u) {
                let g = g_table[idx + 8u * half];
                p = Pj(fe_from_words(g.x), fe_from_words(g.y), FE_ONE);
            } else {
                p = table_get(table, idx);
                // lambda (X : Y : Z) = (beta X : Y : Z)
                var f = FE_ONE;
                if (half == 3u) {
                    f = FE_BETA;
                }
                p.x = fe_mul(p.x, f);
            }
            if (dg < 0) {
                p.y = fe_neg(p.y);
            }
        }
        for (var j = 0u; j < doublings + fe_loop_zero; j++) {
            acc = pj_dbl(acc);
        }
        if (add) {
            acc = pj_add(acc, p);
        }
        if (step < TABLE_STEPS) {
            switch step {
                case 0u: { table.t1 = acc; }
                case 1u: { table.t2 = acc; }
                case 2u: { table.t3 = acc; }
                case 3u: { table.t4 = acc; }
                case 4u: { table.t5 = acc; }
                case 5u: { table.t6 = acc; }
                default: { table.t7 = acc; }
            }
        }
    }
    if (fe_is_zero(acc.z)) {
        return REASON_BAD_SIGNATURE;
    }
    let r = load_fe(base + 17u);
    if ((flags & 8u) != 0u) {
        // BIP340: R has an even y and x(R) = r; affine needs 1/Z.
        let zi = fe_inv(acc.z);
        if (fe_is_odd(fe_mul(acc.y, zi))) {
            return REASON_BAD_SIGNATURE;
        }
        if (!fe_eq(fe_mul(acc.x, zi), r)) {
            return REASON_BAD_SIGNATURE;
        }
        return 0u;
    }
    // ECDSA: x(R) mod n = r without an inversion, X = r Z, or X = (r + n) Z
    // when r + n < p (libsecp256k1's secp256k1_gej_eq_x_var, projective).
    if (fe_eq(acc.x, fe_mul(r, acc.z))) {
        return 0u;
    }
    if ((flags & 4u) != 0u && fe_eq(acc.x, fe_mul(load_fe(base + 25u), acc.z))) {
        return 0u;
    }
    return REASON_BAD_SIGNATURE;
}

@compute @workgroup_size(64)
fn verify(@builtin(global_invocation_id) gid: vec3<u32>) {
    fe_loop_zero = params.zero;
    let i = gid.x;
    if (i >= params.count) {
        return;
    }
    let code = check(i * ITEM_WORDS);
    if (code != 0u) {
        atomicOr(&verdicts[i >> 2u], code << ((i & 3u) * 8u));
    }
}
