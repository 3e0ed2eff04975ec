//! Every kernels/*.wgsl parses and validates with naga (no GPU needed), each
//! composed with the shared pieces it names in `// requires:` lines, the way
//! src/gpu/kernel.rs loads it, and the signature kernels also with the 64-bit
//! fields in place of the u32 ones (which must need naga's SHADER_INT64
//! capability and validate with it). Fails when it finds no kernel at all.

use std::path::Path;

fn requires(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("// requires:"))
        .flat_map(|r| r.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()).map(String::from))
        .collect()
}

/// Parses and validates `src`; a source with 64-bit integers must fail
/// without SHADER_INT64 and pass with it. Returns the entry point count.
fn validate(what: &str, src: &str) -> usize {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{what} does not parse:\n{}", e.emit_to_string(src)));
    let caps = if src.contains("u64") {
        let mut v =
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty());
        assert!(v.validate(&module).is_err(), "{what} uses u64 but validates without SHADER_INT64");
        naga::valid::Capabilities::SHADER_INT64
    } else {
        naga::valid::Capabilities::empty()
    };
    let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
    v.validate(&module).unwrap_or_else(|e| panic!("{what} does not validate ({caps:?}): {e:?}"));
    module.entry_points.len()
}

#[test]
fn every_kernel_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no kernels/*.wgsl found in {}", dir.display());
    let mut entry_points = 0;
    let mut swapped = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read kernel");
        let reqs = requires(&text);
        // As written, then (for kernels on a u32 field) on the 64-bit one,
        // as src/gpu/kernel.rs composes them for SHADER_INT64.
        let field64 = reqs.iter().any(|r| r == "secp256k1_field.wgsl" || r == "ed25519_field.wgsl");
        for swap in [false, true].into_iter().take(1 + field64 as usize) {
            let mut src = String::new();
            for r in &reqs {
                let r = match r.as_str() {
                    "secp256k1_field.wgsl" if swap => "secp256k1_field64.wgsl",
                    "ed25519_field.wgsl" if swap => "ed25519_field64.wgsl",
                    r => r,
                };
                let piece = dir.join(r);
                src.push_str(
                    &std::fs::read_to_string(&piece).unwrap_or_else(|e| panic!("{} requires {r}: {e}", f.display())),
                );
                src.push('\n');
            }
            src.push_str(&text);
            let what = format!("{}{}", f.display(), if swap { " (64-bit field)" } else { "" });
            entry_points += validate(&what, &src);
            swapped += swap as usize;
        }
    }
    assert!(entry_points >= 1, "no kernel entry point in {files:?}");
    assert!(swapped >= 5, "the signature kernels were not all checked on the 64-bit fields");
}

/// Each checked-in generated kernel is what its generator writes (edit the
/// generator). python3 is installed by `make deps`; its absence fails.
#[test]
fn generated_kernels_match_their_generators() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (gen, kernel) in [
        ("gen-sha256d-wgsl.py", "sha256d.wgsl"),
        ("gen-ed25519-field-wgsl.py", "ed25519_field.wgsl"),
        ("gen-ed25519-field64-wgsl.py", "ed25519_field64.wgsl"),
        ("gen-secp256k1-field-wgsl.py", "secp256k1_field.wgsl"),
        ("gen-secp256k1-field64-wgsl.py", "secp256k1_field64.wgsl"),
    ] {
        let out = std::process::Command::new("python3")
            .arg(root.join("tools").join(gen))
            .output()
            .expect("python3 runs the kernel generators (make deps installs it)");
        assert!(out.status.success(), "{gen} failed: {}", String::from_utf8_lossy(&out.stderr));
        let want = std::fs::read_to_string(root.join("kernels").join(kernel)).expect("kernel");
        assert!(
            String::from_utf8_lossy(&out.stdout) == want,
            "kernels/{kernel} differs from tools/{gen}'s output: regenerate it"
        );
    }
}
