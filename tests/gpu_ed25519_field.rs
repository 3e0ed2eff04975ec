//! The WGSL field arithmetic mod 2^255 - 19 (kernels/ed25519_field.wgsl) and
//! point decoding (ed25519_point.wgsl), run on lavapipe through a probe
//! kernel, against Python's big integers (an independent implementation):
//! products, squares, sums, differences, the (p-5)/8 power, sqrt_ratio_i and
//! decompression, on random values and edge values (0, 1, p-1, p, 2^255-1),
//! on both fields with that API: ed25519_field.wgsl (20 limbs of 13 bits,
//! u32) and ed25519_field64.wgsl (10 limbs of 26 bits, u64 products).
#![cfg(feature = "gpu")]

use std::path::Path;

mod gpu_probe;

const PROBE: &str = r#"
@group(0) @binding(0) var<storage, read> inp: array<u32>;
@group(0) @binding(1) var<storage, read_write> outp: array<u32>;

fn words(at: u32) -> array<u32, 8> {
    return array<u32, 8>(inp[at], inp[at + 1u], inp[at + 2u], inp[at + 3u], inp[at + 4u], inp[at + 5u], inp[at + 6u],
                         inp[at + 7u]);
}

fn put(at: u32, a: Fe) {
    let f = fe_freeze(a);
    PUT_LIMBS
}

@compute @workgroup_size(1)
fn probe(@builtin(global_invocation_id) gid: vec3<u32>) {
    fe_loop_zero = inp[arrayLength(&inp) - 1u];
    let i = gid.x;
    let wa = words(16u * i);
    let a = fe_from_words(wa);
    let b = fe_from_words(words(16u * i + 8u));
    let o = OUTu * i;
    put(o, fe_mul(a, b));
    put(o + Nu, fe_sq(a));
    put(o + 2u * Nu, fe_add(a, b));
    put(o + 3u * Nu, fe_sub(a, b));
    put(o + 4u * Nu, fe_pow22523(a));
    let s = fe_sqrt_ratio_i(a, b);
    put(o + 5u * Nu, s.r);
    let d = pt_decode(wa);
    put(o + 6u * Nu, d.p.x);
    put(o + 7u * Nu, d.p.y);
    // Loose inputs: a sum and a difference as they come out.
    put(o + 8u * Nu, fe_mul(fe_add(a, b), fe_sub(a, fe_neg(b))));
    outp[o + 9u * Nu] = u32(s.was_square);
    outp[o + 9u * Nu + 1u] = u32(d.ok) | (u32(pt_affine_small_order(d.p.y)) << 1u);
}
"#;

const REFERENCE: &str = r#"
import sys, json
p = 2**255 - 19
d = (-121665 * pow(121666, p - 2, p)) % p
i_ = pow(2, (p - 1) // 4, p)
def sqrt_ratio(u, v):
    u %= p; v %= p
    v3 = v * v * v % p; v7 = v3 * v3 * v % p
    r = u * v3 * pow(u * v7 % p, 2**252 - 3, p) % p
    check = v * r * r % p
    correct, flipped, flipped_i = check == u, check == (-u) % p, check == (-u * i_) % p
    if flipped or flipped_i: r = r * i_ % p
    if r & 1: r = (-r) % p
    return correct or flipped, r
small = set()
out = []
for a, b in json.load(sys.stdin):
    sign = a >> 255
    a &= 2**255 - 1
    b &= 2**255 - 1
    ok, r = sqrt_ratio(a, b)
    y = a % p
    dok, x = sqrt_ratio(y * y - 1, d * y * y + 1)
    if sign: x = (-x) % p
    so = dok and y in (0, 1, p - 1, 0x5fc536d880238b13933c6d305acdfd5f098eff289f4c345b027b2c28f95e826, p - 0x5fc536d880238b13933c6d305acdfd5f098eff289f4c345b027b2c28f95e826)
    out.append([str(v) for v in [a * b % p, a * a % p, (a + b) % p, (a - b) % p, pow(a, 2**252 - 3, p), r, x, y, (a + b) * (a + b) % p, int(ok), int(dok) | (int(so) << 1)]])
json.dump(out, sys.stdout)
"#;

#[test]
fn u32_field_matches_python() {
    field_arithmetic_matches_python("ed25519_field.wgsl", 20, 13);
}

#[test]
fn u64_field_matches_python() {
    field_arithmetic_matches_python("ed25519_field64.wgsl", 10, 26);
}

/// The field in `file` (n limbs of `bits` bits) against Python.
fn field_arithmetic_matches_python(file: &str, n_limbs: usize, bits: usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut src = String::new();
    for f in [file, "ed25519_point.wgsl"] {
        src.push_str(&std::fs::read_to_string(root.join(f)).unwrap());
        src.push('\n');
    }
    let out_words = 9 * n_limbs + 2;
    // Limbs written with constant indices (as the kernels do).
    let put: String = (0..n_limbs).map(|i| format!("outp[at + {i}u] = f[{i}];\n    ")).collect();
    src.push_str(
        &PROBE
            .replace("PUT_LIMBS", &put)
            .replace("OUTu", &format!("{out_words}u"))
            .replace("Nu", &format!("{n_limbs}u")),
    );
    // Inputs: edge values and random 256-bit words (bit 255 is the sign
    // for decoding and ignored by the arithmetic, as in point encodings).
    let p_minus = |k: u32| -> [u32; 8] {
        let mut w = [0xffff_ffffu32; 8];
        w[7] = 0x7fff_ffff;
        w[0] = 0xffff_ffed - k;
        w
    };
    let mut vals: Vec<[u32; 8]> = vec![[0; 8], [1, 0, 0, 0, 0, 0, 0, 0], p_minus(1), p_minus(0), [u32::MAX; 8], {
        let mut w = [u32::MAX; 8];
        w[7] = 0x7fff_ffff;
        w
    }];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while vals.len() < 64 {
        let mut w = [0u32; 8];
        for v in w.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *v = x as u32;
        }
        vals.push(w);
    }
    let pairs: Vec<([u32; 8], [u32; 8])> = (0..vals.len()).map(|i| (vals[i], vals[(i * 7 + 3) % vals.len()])).collect();
    let n = pairs.len();
    let mut input: Vec<u32> = pairs.iter().flat_map(|(a, b)| a.iter().chain(b.iter()).copied()).collect();
    input.push(0); // fe_loop_zero
    let out = gpu_probe::run(&src, &input, n as u32, n * out_words);

    let to_int = |w: &[u32; 8]| gpu_probe::limbs_to_decimal(&words_to_limbs(w));
    let json_in = format!(
        "[{}]",
        pairs.iter().map(|(a, b)| format!("[{},{}]", to_int(a), to_int(b))).collect::<Vec<_>>().join(",")
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", REFERENCE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is the reference implementation here (make deps installs it)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(json_in.as_bytes()).unwrap();
    let res = child.wait_with_output().unwrap();
    assert!(res.status.success(), "python3 reference failed");
    let want: Vec<Vec<String>> = serde_json::from_slice(&res.stdout).unwrap();
    let names = ["mul", "sq", "add", "sub", "pow22523", "sqrt_ratio", "decode x", "decode y", "loose mul"];
    let mut bad = Vec::new();
    for (i, w) in want.iter().enumerate() {
        let o = &out[out_words * i..out_words * (i + 1)];
        for (k, name) in names.iter().enumerate() {
            let got = gpu_probe::bits_to_decimal(&o[n_limbs * k..n_limbs * (k + 1)], bits);
            // x is only defined when the decoding succeeded.
            if k == 6 && w[10] == "0" {
                continue;
            }
            if got != w[k] {
                bad.push(format!("{file} pair {i} {name}: gpu {got} python {}", w[k]));
            }
        }
        let (sq, dec) = (o[out_words - 2], o[out_words - 1]);
        if sq.to_string() != w[9] || dec.to_string() != w[10] {
            bad.push(format!("{file} pair {i} flags: gpu {sq} {dec} python {} {}", w[9], w[10]));
        }
    }
    assert!(bad.is_empty(), "{} differences:\n{}", bad.len(), bad[..bad.len().min(30)].join("\n"));
}

/// Low 255 bits of a 256-bit word array as 13-bit limbs (the reference gets
/// the integer the kernel sees, bit 255 included, as below).
fn words_to_limbs(w: &[u32; 8]) -> Vec<u32> {
    let mut l = vec![0u32; 20];
    for bit in 0..256usize {
        if w[bit / 32] >> (bit % 32) & 1 == 1 {
            let i = (bit / 13).min(19);
            l[i] |= 1 << (bit - 13 * i);
        }
    }
    l
}
