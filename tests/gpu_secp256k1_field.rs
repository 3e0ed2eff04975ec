//! The WGSL field arithmetic mod p = 2^256 - 2^32 - 977, both fields with
//! the same API (kernels/secp256k1_field.wgsl: 20 limbs of 13 bits in u32;
//! secp256k1_field64.wgsl: 10 limbs of 26 bits with u64 products), and the
//! point helpers of secp256k1_point.wgsl on each, run on lavapipe through a
//! probe kernel, against Python's big integers (an independent
//! implementation): product, square, sum, difference, negation, times 21,
//! the square-root and inverse chains, lift_x, the curve check and
//! fe_from_words, on edge values (0, 1, p - 1, p, p + 1, 2^256 - 1, the
//! largest loose value the generator proves, each limb at its loose
//! maximum) and random loose values.
#![cfg(feature = "gpu")]

use std::path::Path;

mod gpu_probe;

const OPS: usize = 10;

const PROBE: &str = r#"
@group(0) @binding(0) var<storage, read> inp: array<u32>;
@group(0) @binding(1) var<storage, read_write> outp: array<u32>;

fn load(at: u32) -> Fe {
    var r: Fe;
    LOAD
    return r;
}

fn put(at: u32, a: Fe) {
    let f = fe_freeze(a);
    PUT
}

@compute @workgroup_size(1)
fn probe(@builtin(global_invocation_id) gid: vec3<u32>) {
    fe_loop_zero = inp[arrayLength(&inp) - 1u];
    let i = gid.x;
    let at = INu * i;
    let a = load(at);
    let b = load(at + Nu);
    var w: array<u32, 8>;
    for (var k = 0u; k < 8u; k++) {
        w[k] = inp[at + 2u * Nu + k];
    }
    let o = OUTu * i;
    put(o, fe_mul(a, b));
    put(o + Nu, fe_sq(a));
    put(o + 2u * Nu, fe_add(a, b));
    put(o + 3u * Nu, fe_sub(a, b));
    put(o + 4u * Nu, fe_neg(a));
    put(o + 5u * Nu, fe_mul_small(a, 21u));
    put(o + 6u * Nu, fe_sqrt(a));
    put(o + 7u * Nu, fe_inv(a));
    let d = pt_lift_x(a, (b[0] & 1u) == 1u);
    put(o + 8u * Nu, d.y);
    put(o + 9u * Nu, fe_from_words(w));
    outp[o + 10u * Nu] = u32(d.ok) | (u32(fe_is_odd(a)) << 1u) | (u32(pt_is_on_curve(a, b)) << 2u);
}
"#;

const REFERENCE: &str = r#"
import sys, json
p = 2**256 - 2**32 - 977
out = []
for a, b, w in json.load(sys.stdin):
    a = int(a); b = int(b); w = int(w)
    c = (a * a * a + 7) % p
    y = pow(c, (p + 1) // 4, p)
    ok = y * y % p == c
    if ok and (y & 1) != (b & 1):
        y = p - y
    if not ok:
        y = 0
    flags = int(ok) | (int(a % p & 1) << 1) | (int((b * b - a * a * a - 7) % p == 0) << 2)
    res = [a * b, a * a, a + b, a - b, -a, 21 * a, pow(a, (p + 1) // 4, p), pow(a, p - 2, p), y, w]
    out.append([str(v % p) for v in res] + [str(flags)])
json.dump(out, sys.stdout)
"#;

/// One field's layout: its file, limb count and bits per limb.
struct Field {
    file: &'static str,
    n: usize,
    bits: usize,
}

const U32_FIELD: Field = Field { file: "secp256k1_field.wgsl", n: 20, bits: 13 };
const U64_FIELD: Field = Field { file: "secp256k1_field64.wgsl", n: 10, bits: 26 };

/// Limbs of a 256-bit big-endian hex number.
fn limbs(f: &Field, hex_be: &str) -> Vec<u32> {
    let b = hex::decode(hex_be).unwrap();
    let mut l = vec![0u32; f.n];
    for bit in 0..256 {
        if b[31 - bit / 8] >> (bit % 8) & 1 == 1 {
            l[bit / f.bits] |= 1 << (bit % f.bits);
        }
    }
    l
}

/// 8 little-endian words of a 256-bit big-endian hex number.
fn words(hex_be: &str) -> Vec<u32> {
    let b = hex::decode(hex_be).unwrap();
    b.rchunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect()
}

/// The loose limb maxima the generator proved, from the file's header
/// ("accept and return limbs up to" then the list).
fn loose_max(text: &str, n: usize) -> Vec<u32> {
    let mut lines = text.lines().skip_while(|l| !l.contains("accept and return limbs up to"));
    lines.next().expect("the header states the loose limb bounds");
    let list = lines.next().unwrap().trim_start_matches('/').trim().trim_matches(['[', ']']);
    let v: Vec<u32> = list.split(',').map(|x| x.trim().parse().unwrap()).collect();
    assert_eq!(v.len(), n);
    v
}

fn field_arithmetic_matches_python(f: &Field) {
    let (n, bits) = (f.n, f.bits);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let field_text = std::fs::read_to_string(root.join(f.file)).unwrap();
    let mut src = field_text.clone();
    src.push('\n');
    src.push_str(&std::fs::read_to_string(root.join("secp256k1_point.wgsl")).unwrap());
    src.push('\n');
    let out_words = n * OPS + 1;
    let load: String = (0..n).map(|i| format!("r[{i}] = inp[at + {i}u];\n    ")).collect();
    let put: String = (0..n).map(|i| format!("outp[at + {i}u] = f[{i}];\n    ")).collect();
    src.push_str(
        &PROBE
            .replace("LOAD", &load)
            .replace("PUT", &put)
            .replace("OUTu", &format!("{out_words}u"))
            .replace("INu", &format!("{}u", 2 * n + 8))
            .replace("Nu", &format!("{n}u")),
    );

    let p = "fffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2f";
    let p_plus_1 = "fffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc30";
    let p_minus_1 = "fffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2e";
    let gx = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    let gy = "483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8";
    let loose = loose_max(&field_text, n);
    let mask = (1u32 << bits) - 1;
    let mut vals: Vec<Vec<u32>> = vec![
        vec![0; n],
        limbs(f, &format!("{:064x}", 1)),
        limbs(f, p_minus_1),
        limbs(f, p),
        limbs(f, p_plus_1),
        limbs(f, &"f".repeat(64)),
        vec![mask; n], // 2^260 - 1
        loose.clone(), // every limb at its proved maximum
        limbs(f, gx),
        limbs(f, gy),
        limbs(f, &format!("{:064x}", 5)), // 5^3 + 7 is not a square
    ];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    while vals.len() < 96 {
        let k = vals.len();
        // Some canonical (< 2^256), some at loose maxima in places, most
        // random loose.
        let mut l: Vec<u32> = loose
            .iter()
            .map(|&m| if k % 5 == 1 && next() & 1 == 0 { m } else { (next() % (m as u64 + 1)) as u32 })
            .collect();
        if k.is_multiple_of(3) {
            l[n - 1] &= (1 << (256 - bits * (n - 1) - 1)) - 1;
        }
        vals.push(l);
    }
    let word_vals = ["0".repeat(64), "f".repeat(64), p.to_string(), p_minus_1.to_string(), gx.to_string()];
    // (G.x, G.y) is on the curve: pair them.
    let mut cases: Vec<(Vec<u32>, Vec<u32>, Vec<u32>)> = (0..vals.len())
        .map(|i| {
            let w = if i < word_vals.len() { words(&word_vals[i]) } else { (0..8).map(|_| next() as u32).collect() };
            (vals[i].clone(), vals[(i * 7 + 3) % vals.len()].clone(), w)
        })
        .collect();
    cases.push((limbs(f, gx), limbs(f, gy), words(gy)));
    let count = cases.len();
    let mut input: Vec<u32> =
        cases.iter().flat_map(|(a, b, w)| a.iter().chain(b.iter()).chain(w.iter()).copied()).collect();
    input.push(0); // fe_loop_zero
    let out = gpu_probe::run(&src, &input, count as u32, count * out_words);

    let json_in = format!(
        "[{}]",
        cases
            .iter()
            .map(|(a, b, w)| format!(
                "[\"{}\",\"{}\",\"{}\"]",
                gpu_probe::bits_to_decimal(a, bits),
                gpu_probe::bits_to_decimal(b, bits),
                gpu_probe::bits_to_decimal(w, 32)
            ))
            .collect::<Vec<_>>()
            .join(",")
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
    let names = ["mul", "sq", "add", "sub", "neg", "times 21", "sqrt chain", "inverse", "lift_x y", "from_words"];
    let mut bad = Vec::new();
    for (i, w) in want.iter().enumerate() {
        let o = &out[out_words * i..out_words * (i + 1)];
        for (k, name) in names.iter().enumerate() {
            let limbs = &o[n * k..n * k + n];
            // fe_freeze's output is canonical: every limb in range.
            if limbs.iter().any(|&v| v > mask) {
                bad.push(format!("{} case {i} {name}: limbs out of range {limbs:?}", f.file));
            }
            let got = gpu_probe::bits_to_decimal(limbs, bits);
            if got != w[k] {
                bad.push(format!("{} case {i} {name}: gpu {got} python {}", f.file, w[k]));
            }
        }
        if o[out_words - 1].to_string() != w[OPS] {
            bad.push(format!("{} case {i} flags: gpu {} python {}", f.file, o[out_words - 1], w[OPS]));
        }
    }
    assert!(bad.is_empty(), "{} differences:\n{}", bad.len(), bad[..bad.len().min(30)].join("\n"));
    // The flags take both values over the inputs (lift_x fails for x = 5,
    // (G.x, G.y) is on the curve).
    let flags: Vec<u32> = (0..count).map(|i| out[out_words * i + out_words - 1]).collect();
    assert!(flags.iter().any(|f| f & 1 == 1) && flags.iter().any(|f| f & 1 == 0));
    assert!(flags[count - 1] & 4 == 4);
}

#[test]
fn u32_field_matches_python() {
    field_arithmetic_matches_python(&U32_FIELD);
}

#[test]
fn u64_field_matches_python() {
    field_arithmetic_matches_python(&U64_FIELD);
}
