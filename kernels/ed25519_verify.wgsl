// requires: ed25519_field.wgsl, ed25519_point.wgsl
//
// Ed25519 verification, one signature per invocation, with exactly the
// verdicts and reason codes of the CPU path (src/sig/ed25519.rs,
// docs/sig-semantics.md). The host has already checked the lengths and
// S < l, computed k = SHA-512(R || A || M) mod l, recoded S and k into
// signed radix-16 digits, and said whether A and R are canonical encodings
// (a byte comparison). Here: decode A and R, the strict policy's checks,
// and the cofactored equation [8]([S]B - [k]A - R) = identity.
//
// Item layout (ITEM_WORDS u32 each, little-endian):
//   0..8   A as sent          8..16  R as sent
//   16..24 S digits           24..32 k digits  (64 nibbles each, digit + 8,
//                                               least significant first)
//   32     flags: bit 0 strict policy, bit 1 A canonical, bit 2 R canonical
// Verdicts: one byte per item, packed four to a word (the buffer is
// cleared before each dispatch): 0 valid, else the sig::Reason code.

const ITEM_WORDS: u32 = 33u;

const REASON_BAD_SIGNATURE: u32 = 1u;
const REASON_PUBKEY_ENCODING: u32 = 5u;
const REASON_NON_CANONICAL_PUBKEY: u32 = 6u;
const REASON_SMALL_ORDER_PUBKEY: u32 = 7u;
const REASON_R_ENCODING: u32 = 8u;
const REASON_NON_CANONICAL_R: u32 = 9u;
const REASON_SMALL_ORDER_R: u32 = 10u;

struct Params {
    // Items in this dispatch, then padding.
    count: u32,
    // 0 (see fe_loop_zero).
    zero: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> items: array<u32>;
// [1..8]B as affine Niels points, built once by ed25519_table.wgsl.
// [1..8]B as Cached points (Z = 1), built once by ed25519_table.wgsl.
@group(0) @binding(2) var<storage, read> base_table: array<Cached, 8>;
@group(0) @binding(3) var<storage, read_write> verdicts: array<atomic<u32>>;

fn load8(at: u32) -> array<u32, 8> {
    return array<u32, 8>(items[at], items[at + 1u], items[at + 2u], items[at + 3u], items[at + 4u], items[at + 5u],
                         items[at + 6u], items[at + 7u]);
}

// Signed digit i (-8..7) of a recoded scalar starting at word `at`.
fn digit(at: u32, i: u32) -> i32 {
    let nib = (items[at + (i >> 3u)] >> ((i & 7u) * 4u)) & 15u;
    return i32(nib) - 8;
}

// The steps of the equation, run by one loop so that the shader holds a
// single doubling and a single addition (see fe_pow22523 for why):
//   steps 0..7     acc = acc + (-A), caching [2..8](-A)    (acc starts at -A)
//   steps 7..135   Straus over both scalars, most significant digit first:
//                  even step: 16 acc + k_i (-A), odd step: acc + s_i B
//   step 135       acc - R
//   step 136       [8] acc
const TABLE_STEPS: u32 = 7u;
const DIGIT_STEPS: u32 = 128u;
const STEP_R: u32 = 135u;
const STEPS: u32 = 137u;

// One of the eight cached multiples, picked by a switch rather than an
// index into a local array (see fe_pow22523).
struct Table {
    t0: Cached,
    t1: Cached,
    t2: Cached,
    t3: Cached,
    t4: Cached,
    t5: Cached,
    t6: Cached,
    t7: Cached,
}

fn table_get(t: Table, i: u32) -> Cached {
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

fn check(base: u32) -> u32 {
    let flags = items[base + 32u];
    let strict = (flags & 1u) != 0u;
    // Decode A, then R, in the CPU path's order of reasons.
    var a_pt: Pt;
    var r_pt: Pt;
    for (var which = 0u; which < 2u; which++) {
        let d = pt_decode(load8(base + 8u * which));
        if (!d.ok) {
            return select(REASON_R_ENCODING, REASON_PUBKEY_ENCODING, which == 0u);
        }
        if (strict) {
            if ((flags & (2u << which)) == 0u) {
                return select(REASON_NON_CANONICAL_R, REASON_NON_CANONICAL_PUBKEY, which == 0u);
            }
            if (pt_affine_small_order(d.p.y)) {
                return select(REASON_SMALL_ORDER_R, REASON_SMALL_ORDER_PUBKEY, which == 0u);
            }
        }
        if (which == 0u) {
            a_pt = d.p;
        } else {
            r_pt = d.p;
        }
    }
    let neg_a = pt_neg(a_pt);
    var table: Table;
    table.t0 = pt_cached(neg_a);
    let r_cached = pt_cached(r_pt);
    var acc = neg_a;
    for (var step = 0u; step < STEPS + fe_loop_zero; step++) {
        var doublings = 0u;
        var add = true;
        var neg = false;
        var q = table.t0;
        if (step < TABLE_STEPS) {
            q = table.t0;
        } else if (step < STEP_R) {
            let d = step - TABLE_STEPS;
            let i = 63u - (d >> 1u);
            if (d == 0u) {
                acc = pt_identity();
            }
            if ((d & 1u) == 0u) {
                if (i != 63u) {
                    doublings = 4u;
                }
                let dk = digit(base + 24u, i);
                add = dk != 0;
                neg = dk < 0;
                q = table_get(table, max(u32(abs(dk)), 1u) - 1u);
            } else {
                let ds = digit(base + 16u, i);
                add = ds != 0;
                neg = ds < 0;
                q = base_table[max(u32(abs(ds)), 1u) - 1u];
            }
        } else if (step == STEP_R) {
            q = r_cached;
            neg = true;
        } else {
            doublings = 3u;
            add = false;
        }
        for (var j = 0u; j < doublings + fe_loop_zero; j++) {
            acc = pt_dbl(acc);
        }
        if (add) {
            acc = pt_add_cached(acc, q, neg);
        }
        if (step < TABLE_STEPS) {
            let c = pt_cached(acc);
            switch step {
                case 0u: { table.t1 = c; }
                case 1u: { table.t2 = c; }
                case 2u: { table.t3 = c; }
                case 3u: { table.t4 = c; }
                case 4u: { table.t5 = c; }
                case 5u: { table.t6 = c; }
                default: { table.t7 = c; }
            }
        }
    }
    if (pt_is_identity(acc)) {
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
