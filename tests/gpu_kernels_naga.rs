//! Every kernels/*.wgsl parses and validates with naga (no GPU needed), each
//! composed with the shared pieces it names in `// requires:` lines, the way
//! src/gpu/kernel.rs loads it. Fails when it finds no kernel at all.

use std::path::Path;

fn requires(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("// requires:"))
        .flat_map(|r| r.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()).map(String::from))
        .collect()
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
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read kernel");
        let mut src = String::new();
        for r in requires(&text) {
            let piece = dir.join(&r);
            src.push_str(
                &std::fs::read_to_string(&piece).unwrap_or_else(|e| panic!("{} requires {r}: {e}", f.display())),
            );
            src.push('\n');
        }
        src.push_str(&text);
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{} does not parse:\n{}", f.display(), e.emit_to_string(&src)));
        let mut v =
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty());
        v.validate(&module).unwrap_or_else(|e| panic!("{} does not validate: {e:?}", f.display()));
        entry_points += module.entry_points.len();
    }
    assert!(entry_points >= 1, "no kernel entry point in {files:?}");
}

/// Each checked-in generated kernel is what its generator writes (edit the
/// generator). python3 is installed by `make deps`; its absence fails.
#[test]
fn generated_kernels_match_their_generators() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (gen, kernel) in [
        ("gen-sha256d-wgsl.py", "sha256d.wgsl"),
        ("gen-ed25519-field-wgsl.py", "ed25519_field.wgsl"),
        ("gen-secp256k1-field-wgsl.py", "secp256k1_field.wgsl"),
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
