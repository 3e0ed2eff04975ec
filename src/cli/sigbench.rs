//! `hashrig bench sig`: every scheme at batch sizes 1…65536 through the
//! same engine `run` and sigserve use: latency per batch (p50, p99) and
//! throughput, one thread and all threads.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use crate::sig::demo::valid_item;
use crate::sig::{Scheme, SigEngine, SigEngineConfig, SigItem};
use crate::topo::{PinPlan, PlanOptions, Topology};

#[derive(Args, Debug)]
pub struct SigBenchArgs {
    /// Worker threads (default: one per physical core).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Do not bind worker threads to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Seconds measured per scheme and batch size (at least 3 batches each).
    #[arg(long, default_value_t = 0.5)]
    pub seconds: f64,
    /// Largest batch size (sizes run 1, 4, 16, … up to it).
    #[arg(long, default_value_t = 65536)]
    pub max_batch: usize,
    /// Only these schemes (comma-separated: ed25519, ed25519-strict, ecdsa, schnorr).
    #[arg(long, value_delimiter = ',')]
    pub schemes: Option<Vec<String>>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Point {
    scheme: &'static str,
    batch: usize,
    threads: usize,
    batches: usize,
    p50_seconds: f64,
    p99_seconds: f64,
    items_per_sec: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn measure(engine: &SigEngine, scheme: Scheme, pool: &[SigItem], n: usize, secs: f64) -> Point {
    let items: Vec<SigItem> = pool.iter().cycle().take(n).cloned().collect();
    let _ = engine.verify(&items, None); // warm-up
    let mut lat = Vec::new();
    let t0 = Instant::now();
    let budget = Duration::from_secs_f64(secs);
    while lat.len() < 3 || t0.elapsed() < budget {
        let t = Instant::now();
        let rep = engine.verify(&items, None);
        lat.push(t.elapsed().as_secs_f64());
        debug_assert!(rep.verdicts.iter().all(|v| v.is_valid()));
    }
    let total: f64 = lat.iter().sum();
    let batches = lat.len();
    lat.sort_by(f64::total_cmp);
    Point {
        scheme: scheme.name(),
        batch: n,
        threads: engine.threads(),
        batches,
        p50_seconds: percentile(&lat, 0.5),
        p99_seconds: percentile(&lat, 0.99),
        items_per_sec: (n * batches) as f64 / total,
    }
}

pub fn main(a: SigBenchArgs) -> anyhow::Result<ExitCode> {
    if !(a.seconds > 0.0 && a.seconds.is_finite()) {
        anyhow::bail!("--seconds must be positive");
    }
    let schemes: Vec<Scheme> = match &a.schemes {
        None => Scheme::ALL.to_vec(),
        Some(v) => v
            .iter()
            .map(|s| s.parse::<Scheme>().map_err(|_| anyhow::anyhow!("unknown scheme {s:?}")))
            .collect::<anyhow::Result<_>>()?,
    };
    let topo = Topology::discover_or_fallback();
    let start = |threads: Option<usize>| -> anyhow::Result<SigEngine> {
        let plan = PinPlan::build(&topo, &PlanOptions { threads, ..PlanOptions::default() })?;
        let mut cfg = SigEngineConfig::new(plan);
        cfg.pin = !a.no_pin;
        Ok(SigEngine::start(cfg, None)?)
    };
    let one = start(Some(1))?;
    let all = start(a.threads)?;
    let mut sizes = vec![1usize];
    while sizes.last().copied().unwrap_or(1) * 4 <= a.max_batch.max(1) {
        sizes.push(sizes.last().copied().unwrap_or(1) * 4);
    }
    if !a.json {
        println!("cpu: {} | {} threads", super::devices::cpu_model(), all.threads());
        println!("{:<15} {:>6} {:>7} {:>12} {:>12} {:>14}", "scheme", "batch", "threads", "p50", "p99", "verifies/s");
    }
    let mut points = Vec::new();
    for &s in &schemes {
        let pool: Vec<SigItem> = (0..256).map(|i| valid_item(s, i)).collect();
        for &n in &sizes {
            let mut engines = vec![&one];
            if all.threads() > 1 {
                engines.push(&all);
            }
            for e in engines {
                let p = measure(e, s, &pool, n, a.seconds);
                if !a.json {
                    println!(
                        "{:<15} {:>6} {:>7} {:>10.1}µs {:>10.1}µs {:>14.0}",
                        p.scheme,
                        p.batch,
                        p.threads,
                        p.p50_seconds * 1e6,
                        p.p99_seconds * 1e6,
                        p.items_per_sec
                    );
                }
                points.push(p);
            }
        }
    }
    if a.json {
        let v = serde_json::json!({
            "engine": "cpu",
            "cpu_model": super::devices::cpu_model(),
            "threads": all.threads(),
            "seconds_per_point": a.seconds,
            "results": points,
        });
        println!("{v}");
    }
    Ok(ExitCode::SUCCESS)
}
