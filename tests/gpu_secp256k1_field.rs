//! The WGSL field arithmetic mod p = 2^256 - 2^32 - 977
//! (kernels/secp256k1_field.wgsl) and the point helpers of
//! secp256k1_point.wgsl, run on lavapipe through a probe kernel, against
//! Python's big integers (an independent implementation): product, square,
//! sum, difference, negation, times 21, the square-root and inverse chains,
//! lift_x and the curve check, on edge values (0, 1, p - 1, p, p + 1,
//! 2^256 - 1, the largest loose value 2^260 - 1) and random loose values.
#![cfg(feature = "gpu")]

use std::path::Path;

mod gpu_probe;

const OPS: usize = 9;
const OUT: usize = 20 * OPS + 1;

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
    let a = load(40u * i);
    let b = load(40u * i + 20u);
    let o = OUTu * i;
    put(o, fe_mul(a, b));
    put(o + 20u, fe_sq(a));
    put(o + 40u, fe_add(a, b));
    put(o + 60u, fe_sub(a, b));
    put(o + 80u, fe_neg(a));
    put(o + 100u, fe_mul_small(a, 21u));
    put(o + 120u, fe_sqrt(a));
    put(o + 140u, fe_inv(a));
    let d = pt_lift_x(a, (b[0] & 1u) == 1u);
    put(o + 160u, d.y);
    outp[o + 180u] = u32(d.ok) | (u32(fe_is_odd(a)) << 1u) | (u32(pt_is_on_curve(a, b)) << 2u);
}
"#;

const REFERENCE: &str = r#"
import sys, json
p = 2**256 - 2**32 - 977
out = []
for a, b in json.load(sys.stdin):
    a = int(a); b = int(b)
    c = (a * a * a + 7) % p
    y = pow(c, (p + 1) // 4, p)
    ok = y * y % p == c
    if ok and (y & 1) != (b & 1):
        y = p - y
    if not ok:
        y = 0
    flags = int(ok) | (int(a % p & 1) << 1) | (int((b * b - a * a * a - 7) % p == 0) << 2)
    res = [a * b, a * a, a + b, a - b, -a, 21 * a, pow(a, (p + 1) // 4, p), pow(a, p - 2, p), y]
    out.append([str(v % p) for v in res] + [str(flags)])
json.dump(out, sys.stdout)
"#;

/// 13-bit limbs of a 256-bit big-endian hex number.
fn limbs(hex_be: &str) -> [u32; 20] {
    let b = hex::decode(hex_be).unwrap();
    let mut l = [0u32; 20];
    for bit in 0..256 {
        if b[31 - bit / 8] >> (bit % 8) & 1 == 1 {
            l[bit / 13] |= 1 << (bit % 13);
        }
    }
    l
}

#[test]
fn field_arithmetic_matches_python() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut src = String::new();
    for f in ["secp256k1_field.wgsl", "secp256k1_point.wgsl"] {
        src.push_str(&std::fs::read_to_string(root.join(f)).unwrap());
        src.push('\n');
    }
    let load: String = (0..20).map(|i| format!("r[{i}] = inp[at + {i}u];\n    ")).collect();
    let put: String = (0..20).map(|i| format!("outp[at + {i}u] = f[{i}];\n    ")).collect();
    src.push_str(&PROBE.replace("LOAD", &load).replace("PUT", &put).replace("OUT", &OUT.to_string()));

    let p = "fffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2f";
    let p_plus_1 = "fffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc30";
    let p_minus_1 = "fffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2e";
    let gx = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    let gy = "483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8";
    let mut vals: Vec<[u32; 20]> = vec![
        [0; 20],
        limbs(&format!("{:064x}", 1)),
        limbs(p_minus_1),
        limbs(p),
        limbs(p_plus_1),
        limbs(&"f".repeat(64)),
        [0x1fff; 20], // 2^260 - 1: the largest loose value
        limbs(gx),
        limbs(gy),
        limbs(&format!("{:064x}", 5)), // 5^3 + 7 is not a square
    ];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while vals.len() < 96 {
        let mut l = [0u32; 20];
        for v in l.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *v = (x as u32) & 0x1fff;
        }
        // Some canonical (< 2^256), most loose.
        if vals.len().is_multiple_of(3) {
            l[19] &= 0xff;
        }
        vals.push(l);
    }
    // (G.x, G.y) is on the curve: pair them.
    let mut pairs: Vec<([u32; 20], [u32; 20])> =
        (0..vals.len()).map(|i| (vals[i], vals[(i * 7 + 3) % vals.len()])).collect();
    pairs.push((limbs(gx), limbs(gy)));
    let n = pairs.len();
    let mut input: Vec<u32> = pairs.iter().flat_map(|(a, b)| a.iter().chain(b.iter()).copied()).collect();
    input.push(0); // fe_loop_zero
    let out = gpu_probe::run(&src, &input, n as u32, n * OUT);

    let json_in = format!(
        "[{}]",
        pairs
            .iter()
            .map(|(a, b)| format!("[\"{}\",\"{}\"]", gpu_probe::limbs_to_decimal(a), gpu_probe::limbs_to_decimal(b)))
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
    let names = ["mul", "sq", "add", "sub", "neg", "times 21", "sqrt chain", "inverse", "lift_x y"];
    let mut bad = Vec::new();
    for (i, w) in want.iter().enumerate() {
        let o = &out[OUT * i..OUT * (i + 1)];
        for (k, name) in names.iter().enumerate() {
            let got = gpu_probe::limbs_to_decimal(&o[20 * k..20 * k + 20]);
            if got != w[k] {
                bad.push(format!("pair {i} {name}: gpu {got} python {}", w[k]));
            }
        }
        if o[OUT - 1].to_string() != w[OPS] {
            bad.push(format!("pair {i} flags: gpu {} python {}", o[OUT - 1], w[OPS]));
        }
    }
    assert!(bad.is_empty(), "{} differences:\n{}", bad.len(), bad[..bad.len().min(30)].join("\n"));
    // The flags take both values over the inputs (lift_x fails for x = 5,
    // (G.x, G.y) is on the curve).
    let flags: Vec<u32> = (0..n).map(|i| out[OUT * i + OUT - 1]).collect();
    assert!(flags.iter().any(|f| f & 1 == 1) && flags.iter().any(|f| f & 1 == 0));
    assert!(flags[n - 1] & 4 == 4);
}
