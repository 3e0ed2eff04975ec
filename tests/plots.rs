//! `hashrig size --plot` and `hashrig bench sig --plot`: SVG pictures drawn
//! from the committed profiles and from a (tiny) real measurement, with a
//! line per profile or per scheme × engine that goes the way the figures do.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hashrig");

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("hashrig-plot-{}-{name}", std::process::id()))
}

fn run(args: &[&str]) -> String {
    let o = Command::new(BIN).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{args:?}: {text}");
    text
}

/// The data lines of a plotters SVG: polylines of stroke width 2 with more
/// than the two points of a legend swatch, as (colour, [(x, y)]).
fn lines(svg: &str) -> Vec<(String, Vec<(f64, f64)>)> {
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "not an SVG document");
    svg.lines()
        .filter(|l| l.starts_with("<polyline") && l.contains("stroke-width=\"2\""))
        .filter_map(|l| {
            let colour = l.split("stroke=\"").nth(1)?.split('"').next()?.to_string();
            let pts: Vec<(f64, f64)> = l
                .split("points=\"")
                .nth(1)?
                .split('"')
                .next()?
                .split_whitespace()
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect();
            (pts.len() > 2).then_some((colour, pts))
        })
        .collect()
}

fn committed_profiles() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hw-profiles");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .map(|e| e.path().file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn size_plot_draws_machines_against_workload_per_profile() {
    let out = tmp("size.svg");
    let text = run(&["size", "--hashrate", "2G", "--sigs", "200k", "--plot", out.to_str().unwrap()]);
    assert!(text.contains("plot written to"), "{text}");
    let svg = std::fs::read_to_string(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    let profiles = committed_profiles();
    for p in &profiles {
        assert!(svg.contains(&format!("\n{p}\n")), "no legend entry for {p}");
    }
    let ls = lines(&svg);
    assert_eq!(ls.len(), profiles.len(), "one line per profile");
    for (colour, pts) in &ls {
        assert!(pts.len() >= 100, "{colour}: {} points", pts.len());
        // Left to right the workload grows, and so (upwards: smaller SVG y)
        // does the machine count, never down.
        for w in pts.windows(2) {
            assert!(w[1].0 >= w[0].0 && w[1].1 <= w[0].1, "{colour}: {w:?}");
        }
        assert!(pts.last().unwrap().1 < pts[0].1, "{colour}: more work needs more machines");
    }
}

#[test]
fn size_plot_without_a_sizable_profile_fails_cleanly() {
    // A p99 bound no measured point meets: no profile can size it.
    let out = tmp("none.svg");
    let o = Command::new(BIN)
        .args(["size", "--sigs", "1k", "--scheme", "ecdsa", "--batch", "1", "--p99-ms", "0.000001", "--plot"])
        .arg(&out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing to plot"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.exists());
}

#[test]
fn sig_latency_plot_from_a_profile_and_from_a_run() {
    // From the committed profile: a line per scheme × threads, latency
    // growing with the batch (upwards: smaller SVG y).
    let out = tmp("profile.svg");
    run(&["bench", "sig", "--from-profile", "hw-profiles/epyc-zen3-2c-kvm.toml", "--plot", out.to_str().unwrap()]);
    let svg = std::fs::read_to_string(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    for label in ["ed25519 cpu ×1", "ecdsa cpu ×2", "schnorr cpu ×1"] {
        assert!(svg.contains(&format!("\n{label}\n")), "no {label:?} in the legend");
    }
    let ls = lines(&svg);
    assert_eq!(ls.len(), 8, "4 schemes × (1 thread, 2 threads)");
    for (colour, pts) in &ls {
        assert!(pts.windows(2).all(|w| w[1].0 > w[0].0), "{colour}: batch sizes left to right");
        assert!(pts.last().unwrap().1 < pts[0].1, "{colour}: a big batch takes longer than one signature");
    }

    // From a real (tiny) measurement.
    let out = tmp("run.svg");
    run(&[
        "bench",
        "sig",
        "--schemes",
        "ed25519,ecdsa",
        "--max-batch",
        "16",
        "--seconds",
        "0.02",
        "--threads",
        "1",
        "--no-pin",
        "--plot",
        out.to_str().unwrap(),
    ]);
    let svg = std::fs::read_to_string(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    let ls = lines(&svg);
    assert_eq!(ls.len(), 2, "ed25519 and ecdsa on one thread");
    assert!(ls.iter().all(|(_, p)| p.len() == 3), "batches 1, 4, 16: {ls:?}");
}

#[test]
fn from_profile_needs_a_plot_and_a_sig_section() {
    let o = Command::new(BIN)
        .args(["bench", "sig", "--from-profile", "hw-profiles/epyc-zen3-2c-kvm.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "--from-profile without --plot");
    let p = tmp("nosig.toml");
    std::fs::write(
        &p,
        "[machine]\ncpu_model = \"x\"\npackages = 1\nnuma_nodes = 1\ncores = 1\npus = 1\nkernel = \"k\"\n",
    )
    .unwrap();
    let out = tmp("nosig.svg");
    let o =
        Command::new(BIN).args(["bench", "sig", "--from-profile"]).arg(&p).arg("--plot").arg(&out).output().unwrap();
    std::fs::remove_file(&p).unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no [sig] section"));
}
