//! `hashrig size`: machines of each measured profile (hw-profiles/*.toml)
//! that a workload needs: a hashrate, a signature rate, or both.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::profile::sizing::{self, Sized, Workload};
use crate::profile::HwProfile;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("workload").required(true).multiple(true).args(["hashrate", "sigs"])))]
pub struct SizeArgs {
    /// Hashrate to reach (e.g. 500G, 2.5TH/s).
    #[arg(long, value_parser = sizing::parse_rate)]
    pub hashrate: Option<f64>,
    /// Signatures per second to verify (e.g. 250k).
    #[arg(long, value_parser = sizing::parse_rate)]
    pub sigs: Option<f64>,
    /// Scheme of those signatures: ed25519, ed25519-strict, ecdsa, schnorr.
    #[arg(long, default_value = "ed25519")]
    pub scheme: String,
    /// Items per batch the validator sends (the largest measured size up to
    /// it is used).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Largest acceptable p99 latency per batch, in milliseconds.
    #[arg(long)]
    pub p99_ms: Option<f64>,
    /// Profiles: TOML files, or folders of them.
    #[arg(long = "profiles", value_name = "PATH", default_value = "hw-profiles")]
    pub profiles: Vec<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also draw machines needed against the workload (up to the one asked
    /// for), a line per profile, as an SVG picture.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

fn load_all(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, HwProfile)>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    let mut out = Vec::new();
    for f in files {
        let p = HwProfile::load(&f)?.ok_or_else(|| anyhow::anyhow!("{}: no such file", f.display()))?;
        let name = f.file_stem().map_or_else(|| f.display().to_string(), |s| s.to_string_lossy().into_owned());
        out.push((name, p));
    }
    anyhow::ensure!(!out.is_empty(), "no profile found in {:?}", paths);
    Ok(out)
}

fn rate(v: f64, unit: &str) -> String {
    let (div, prefix) = crate::sched::stats::si_prefix(v);
    format!("{:.2} {prefix}{unit}", v / div)
}

pub fn main(a: SizeArgs) -> anyhow::Result<ExitCode> {
    if a.scheme.parse::<crate::sig::Scheme>().is_err() {
        anyhow::bail!("unknown scheme {:?} (ed25519, ed25519-strict, ecdsa, schnorr)", a.scheme);
    }
    if let Some(ms) = a.p99_ms {
        anyhow::ensure!(ms > 0.0 && ms.is_finite(), "--p99-ms must be positive");
    }
    let w = Workload {
        hashrate: a.hashrate,
        sigs_per_sec: a.sigs,
        scheme: a.scheme.clone(),
        batch: a.batch.max(1),
        p99_max: a.p99_ms.map(|ms| ms / 1e3),
    };
    let profiles = load_all(&a.profiles)?;
    if let Some(path) = &a.plot {
        plot(path, &profiles, &w)?;
    }
    let rows: Vec<Sized> = profiles
        .into_iter()
        .map(|(name, p)| {
            let (capacity, machines) = sizing::machines(&p, &w);
            Sized { profile: name, capacity, machines }
        })
        .collect();
    if a.json {
        let rows: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "profile": r.profile,
                    "capacity": r.capacity,
                    "machines": r.machines.as_ref().ok(),
                    "why_not": r.machines.as_ref().err(),
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "results": rows }));
        return Ok(ExitCode::SUCCESS);
    }
    let mut want = Vec::new();
    if let Some(h) = a.hashrate {
        want.push(rate(h, "H/s"));
    }
    if let Some(s) = a.sigs {
        let p99 = a.p99_ms.map(|m| format!(", p99 ≤ {m} ms")).unwrap_or_default();
        want.push(format!("{} {} (batches of {}{p99})", rate(s, "sig/s"), a.scheme, w.batch));
    }
    println!("workload: {}", want.join(" + "));
    for r in &rows {
        let c = &r.capacity;
        let sigs = c.sigs.map_or("-".into(), |(v, b)| format!("{} at batch {b}", rate(v, "sig/s")));
        let machines = match &r.machines {
            Ok(n) => format!("{n} machine{}", if *n == 1 { "" } else { "s" }),
            Err(why) => format!("cannot tell: {why}"),
        };
        println!(
            "{}: {machines} | each: cpu {}, gpu {}, {} {sigs}",
            r.profile,
            rate(c.cpu_hashes_per_sec, "H/s"),
            rate(c.gpu_hashes_per_sec, "H/s"),
            a.scheme
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Points along the workload, from a 400th of it to all of it.
const PLOT_STEPS: usize = 400;

/// `--plot`: each profile's machine count as the workload grows to `w`
/// (hashrate and signatures scaled together); profiles that cannot size it
/// are left out, and said so.
fn plot(path: &std::path::Path, profiles: &[(String, HwProfile)], w: &Workload) -> anyhow::Result<()> {
    let (full, unit) = match (w.hashrate, w.sigs_per_sec) {
        (Some(h), _) => (h, "H/s"),
        (None, Some(s)) => (s, "sig/s"),
        (None, None) => anyhow::bail!("no workload to plot"),
    };
    let mut lines = Vec::new();
    for (name, p) in profiles {
        let mut points = Vec::with_capacity(PLOT_STEPS);
        for k in 1..=PLOT_STEPS {
            let t = k as f64 / PLOT_STEPS as f64;
            let wk = Workload {
                hashrate: w.hashrate.map(|h| h * t),
                sigs_per_sec: w.sigs_per_sec.map(|s| s * t),
                ..w.clone()
            };
            match sizing::machines(p, &wk).1 {
                Ok(n) => points.push((full * t, n)),
                Err(why) => {
                    eprintln!("plot: {name} left out: {why}");
                    points.clear();
                    break;
                }
            }
        }
        lines.push(crate::plot::SizingLine { profile: name.clone(), points });
    }
    let mut what = Vec::new();
    if let Some(h) = w.hashrate {
        what.push(rate(h, "H/s"));
    }
    if let Some(s) = w.sigs_per_sec {
        what.push(format!("{} {} (batch {})", rate(s, "sig/s"), w.scheme, w.batch));
    }
    let title = format!("Machines needed, up to {}", what.join(" + "));
    crate::plot::sizing(path, &title, unit, &lines)?;
    eprintln!("plot written to {}", path.display());
    Ok(())
}
