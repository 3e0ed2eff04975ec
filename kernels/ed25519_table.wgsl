// requires: ed25519_field.wgsl, ed25519_point.wgsl
//
// Builds the base point table ed25519_verify.wgsl reads: [1..8]B as Cached
// points (y + x, y - x, 1, 2d x y). The host passes the eight points
// compressed (curve25519-dalek's encodings) and the GPU decodes them with
// the same code that decodes keys, so no table of limbs is written by hand.
// Run once per device at start-up.

// 64 words of encodings, then a 0 (see fe_loop_zero).
@group(0) @binding(0) var<storage, read> encoded: array<u32, 65>;
@group(0) @binding(1) var<storage, read_write> table: array<Cached, 8>;

@compute @workgroup_size(8)
fn build_table(@builtin(global_invocation_id) gid: vec3<u32>) {
    fe_loop_zero = encoded[64];
    let i = gid.x;
    if (i >= 8u) {
        return;
    }
    let at = 8u * i;
    let w = array<u32, 8>(encoded[at], encoded[at + 1u], encoded[at + 2u], encoded[at + 3u], encoded[at + 4u],
                          encoded[at + 5u], encoded[at + 6u], encoded[at + 7u]);
    // A decoding failure cannot happen for multiples of B; if the host sent
    // garbage the entry is the identity's and the start-up self-test fails.
    let d = pt_decode(w);
    if (!d.ok) {
        table[i] = Cached(FE_ONE, FE_ONE, FE_ONE, FE_ZERO);
        return;
    }
    table[i] = pt_cached(d.p);
}
