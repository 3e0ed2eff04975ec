//! `hashrig bench sig`: every scheme at batch sizes 1…65536 through the
//! same engine `run` and sigserve use: latency per batch (p50, p99, p99.9)
//! and throughput, one thread and all threads: one batch at a time (one
//! stream's rate) and with batches queued on every thread (the machine's). With `--sigserve ADDR` it
//! measures a running server instead, end to end as a validator sees it
//! (frame, socket, queue, verify, answer), e.g. while that server mines.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use crate::node::sigserve::{ClientTls, ServeAddr, SigClient};
use crate::sched::sig::{EngineChoice, GpuSelection, StartMode};
use crate::sched::{SigEngine, SigEngineConfig};
use crate::sig::demo::valid_item;
use crate::sig::{Scheme, SigItem};
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
    /// Each point's seconds are split into this many rounds, the engines
    /// measured in turn in each (order reversed every other round), so a
    /// shared machine's drift falls on every engine alike.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Largest batch size (sizes run 1, 4, 16, … up to it).
    #[arg(long, default_value_t = 65536)]
    pub max_batch: usize,
    /// Only these schemes (comma-separated: ed25519, ed25519-strict, ecdsa, schnorr).
    #[arg(long, value_delimiter = ',')]
    pub schemes: Option<Vec<String>>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Measure a running sigserve (HOST:PORT or unix:PATH) over one connection
    /// instead of an engine in this process.
    #[arg(long, value_name = "ADDR", conflicts_with = "profile_out")]
    pub sigserve: Option<ServeAddr>,
    /// With --sigserve: also measure this many connections at once, each one
    /// batch at a time (the "saturated" column), as many validator streams.
    #[arg(long, default_value_t = 16, requires = "sigserve")]
    pub connections: usize,
    #[command(flatten)]
    pub tls: super::SigTlsArgs,
    /// Write (or update the [sig] section of) a hardware profile TOML.
    #[arg(long)]
    pub profile_out: Option<std::path::PathBuf>,
    /// cpu: the CPU engine alone. gpu / auto: also an engine that sends every
    /// batch to the GPU (gpu) or splits by prediction (auto), measured
    /// beside CPU-only in the same run; prints each GPU's L0 and rate.
    #[arg(long, default_value = "cpu", conflicts_with = "sigserve")]
    pub engine: crate::sched::sig::EngineChoice,
    /// Also use software Vulkan adapters (lavapipe) with --engine gpu|auto.
    #[arg(long)]
    pub gpu_allow_software: bool,
    /// With --engine gpu|auto: a simulated GPU with this fixed latency (ms)
    /// and rate (items/s) instead of the adapters, e.g. 6:600000: what a
    /// device like that would add to this machine. Its rows are marked
    /// "sim" and never enter a profile as a GPU.
    #[arg(long, value_name = "L0_MS:RATE", conflicts_with_all = ["sigserve", "profile_out"])]
    pub simulate_gpu: Option<crate::sched::SimSpec>,
    /// Draw batch latency against batch size, a line per scheme and engine,
    /// as an SVG picture.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
    /// With --plot: draw the [sig] section of this hardware profile instead
    /// of measuring.
    #[arg(long, value_name = "FILE", requires = "plot", conflicts_with_all = ["sigserve", "profile_out"])]
    pub from_profile: Option<std::path::PathBuf>,
}

/// A (scheme, engine, threads, batch, p50, p99) row, from a run or a profile.
type LatencyRow = (String, String, usize, usize, f64, f64);

/// `--plot`: one line per scheme × engine × threads, in batch order.
fn plot(path: &std::path::Path, title: &str, rows: &[LatencyRow]) -> anyhow::Result<()> {
    let mut lines: Vec<crate::plot::LatencyLine> = Vec::new();
    for (scheme, engine, threads, batch, p50, p99) in rows {
        let who = if *threads == 0 { engine.clone() } else { format!("{engine} ×{threads}") };
        let label = format!("{scheme} {who}");
        match lines.iter_mut().find(|l| l.label == label) {
            Some(l) => l.points.push((*batch, *p50, *p99)),
            None => lines.push(crate::plot::LatencyLine { label, points: vec![(*batch, *p50, *p99)] }),
        }
    }
    for l in &mut lines {
        l.points.sort_by_key(|p| p.0);
    }
    crate::plot::sig_latency(path, title, &lines)?;
    eprintln!("plot written to {}", path.display());
    Ok(())
}

/// `--from-profile`: the profile's points, drawn.
fn plot_profile(profile: &std::path::Path, path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let p = crate::profile::HwProfile::load(profile)?
        .ok_or_else(|| anyhow::anyhow!("{}: no such file", profile.display()))?;
    let sig =
        p.sig.ok_or_else(|| anyhow::anyhow!("{} has no [sig] section (bench sig --profile-out)", profile.display()))?;
    let rows: Vec<LatencyRow> = sig
        .points
        .iter()
        .map(|x| (x.scheme.clone(), x.engine.clone(), x.threads, x.batch, x.p50_seconds, x.p99_seconds))
        .collect();
    let name = profile.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    plot(path, &format!("Signature batch latency, {name} ({})", p.machine.cpu_model), &rows)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(serde::Serialize)]
struct Point {
    scheme: &'static str,
    /// "cpu", "gpu" or "auto" (sigserve: "sigserve").
    engine: &'static str,
    batch: usize,
    threads: usize,
    batches: usize,
    p50_seconds: f64,
    p99_seconds: f64,
    p999_seconds: f64,
    /// One batch at a time, back to back (one stream).
    items_per_sec: f64,
    /// Two batches per engine thread in flight: what the machine serves
    /// when many validator streams (or a pipelining one) keep it busy.
    saturated_items_per_sec: Option<f64>,
    /// Share of this point's items (both columns) verified on a GPU, for an
    /// engine that has one: where it is 0 the row ran the CPU-only path, and
    /// a difference from the CPU row is the machine's noise.
    #[serde(skip_serializing_if = "Option::is_none")]
    gpu_share: Option<f64>,
}

/// Where batches go: an engine in this process, or a sigserve connection.
enum Target {
    Engine(SigEngine, &'static str),
    Remote(Box<SigClient>, ServeAddr, Option<ClientTls>),
}

impl Target {
    /// Verifies one batch; every item is valid, so anything else is an error.
    fn verify(&mut self, items: &[SigItem]) -> anyhow::Result<()> {
        let all_valid = match self {
            Target::Engine(e, _) => e.verify(items, None).verdicts.iter().all(|v| v.is_valid()),
            Target::Remote(c, addr, _) => {
                c.verify(items, None).with_context(|| format!("sigserve {addr}"))?.iter().all(|v| v.is_valid())
            }
        };
        anyhow::ensure!(all_valid, "a valid signature was judged invalid");
        Ok(())
    }

    /// Threads of the engine; 0 for a remote server (not known here).
    fn threads(&self) -> usize {
        match self {
            Target::Engine(e, _) => e.threads(),
            Target::Remote(..) => 0,
        }
    }

    fn engine(&self) -> &'static str {
        match self {
            Target::Engine(_, k) => k,
            Target::Remote(..) => "sigserve",
        }
    }

    /// Items verified so far on its GPUs and on its CPU; None without a GPU.
    fn split_totals(&self) -> Option<(u64, u64)> {
        match self {
            Target::Engine(e, _) => {
                let gpus = e.gpus();
                (!gpus.is_empty()).then(|| (gpus.iter().map(|g| g.totals().items).sum(), e.cpu_items_total()))
            }
            Target::Remote(..) => None,
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One round of one point on one target: latencies of one stream, the
/// saturated rate, and the GPU/CPU item totals before and after.
struct Round {
    lat: Vec<f64>,
    saturated: Option<f64>,
    split: Option<((u64, u64), (u64, u64))>,
}

fn measure_round(target: &mut Target, items: &[SigItem], secs: f64, connections: usize) -> anyhow::Result<Round> {
    let before = target.split_totals();
    let mut lat = Vec::new();
    let t0 = Instant::now();
    let budget = Duration::from_secs_f64(secs);
    while lat.len() < 3 || t0.elapsed() < budget {
        let t = Instant::now();
        target.verify(items)?;
        lat.push(t.elapsed().as_secs_f64());
    }
    let saturated = match target {
        Target::Engine(e, _) => Some(saturate(e, items, secs)),
        Target::Remote(_, addr, tls) if connections > 1 => {
            Some(saturate_remote(addr, tls.as_ref(), connections, items, secs)?)
        }
        Target::Remote(..) => None,
    };
    Ok(Round { lat, saturated, split: before.zip(target.split_totals()) })
}

/// Every target at one point: `rounds` rounds of `secs / rounds` each, the
/// targets in turn (reversed every other round), merged per target.
fn measure(
    targets: &mut [Target],
    scheme: Scheme,
    pool: &[SigItem],
    n: usize,
    secs: f64,
    rounds: usize,
    connections: usize,
) -> anyhow::Result<Vec<Point>> {
    let items: Vec<SigItem> = pool.iter().cycle().take(n).cloned().collect();
    for t in targets.iter_mut() {
        t.verify(&items)?; // warm-up
    }
    let rounds = rounds.max(1);
    let mut got: Vec<Vec<Round>> = targets.iter().map(|_| Vec::new()).collect();
    for r in 0..rounds {
        let order: Vec<usize> =
            if r % 2 == 0 { (0..targets.len()).collect() } else { (0..targets.len()).rev().collect() };
        for i in order {
            got[i].push(measure_round(&mut targets[i], &items, secs / rounds as f64, connections)?);
        }
    }
    Ok(targets.iter().zip(got).map(|(t, rs)| merge(t, scheme, n, rs)).collect())
}

fn merge(target: &Target, scheme: Scheme, n: usize, rounds: Vec<Round>) -> Point {
    let mut lat: Vec<f64> = rounds.iter().flat_map(|r| r.lat.iter().copied()).collect();
    let total: f64 = lat.iter().sum();
    let batches = lat.len();
    lat.sort_by(f64::total_cmp);
    let sat: Vec<f64> = rounds.iter().filter_map(|r| r.saturated).collect();
    let (mut g, mut c, mut any) = (0u64, 0u64, false);
    for ((g0, c0), (g1, c1)) in rounds.iter().filter_map(|r| r.split) {
        (g, c, any) = (g + g1.saturating_sub(g0), c + c1.saturating_sub(c0), true);
    }
    Point {
        scheme: scheme.name(),
        engine: target.engine(),
        batch: n,
        threads: target.threads(),
        batches,
        p50_seconds: percentile(&lat, 0.5),
        p99_seconds: percentile(&lat, 0.99),
        p999_seconds: percentile(&lat, 0.999),
        items_per_sec: (n * batches) as f64 / total,
        saturated_items_per_sec: (!sat.is_empty()).then(|| sat.iter().sum::<f64>() / sat.len() as f64),
        gpu_share: any.then(|| g as f64 / (g + c).max(1) as f64),
    }
}

/// Items per second over `connections` sigserve connections at once, each
/// sending one batch at a time for `secs`.
fn saturate_remote(
    addr: &ServeAddr,
    tls: Option<&ClientTls>,
    connections: usize,
    items: &[SigItem],
    secs: f64,
) -> anyhow::Result<f64> {
    let budget = Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let counts = std::thread::scope(|s| {
        let workers: Vec<_> = (0..connections)
            .map(|_| {
                s.spawn(move || -> anyhow::Result<usize> {
                    let mut c = SigClient::connect_with(addr, tls).with_context(|| format!("sigserve {addr}"))?;
                    let mut done = 0;
                    while t0.elapsed() < budget {
                        let v = c.verify(items, None).with_context(|| format!("sigserve {addr}"))?;
                        anyhow::ensure!(v.iter().all(|v| v.is_valid()), "a valid signature was judged invalid");
                        done += v.len();
                    }
                    Ok(done)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(anyhow::anyhow!("client thread panicked"))))
            .collect::<Vec<_>>()
    });
    let elapsed = t0.elapsed().as_secs_f64();
    let mut total = 0;
    for c in counts {
        total += c?;
    }
    Ok(total as f64 / elapsed)
}

/// Items per second with `2 × threads` batches always queued (fewer for
/// large batches: at most 2^18 items in flight, at least two batches), for
/// `secs` and at least as many completions as batches in flight, so a
/// point at batch 65536 takes seconds, not minutes.
fn saturate(engine: &SigEngine, items: &[SigItem], secs: f64) -> f64 {
    let (tx, rx) = crossbeam_channel::unbounded::<usize>();
    let submit = |tx: &crossbeam_channel::Sender<usize>| {
        let tx = tx.clone();
        engine.submit(items.to_vec(), None, move |r| {
            let _ = tx.send(r.verdicts.len());
        });
    };
    let inflight = (engine.threads() * 2).min((1 << 18) / items.len().max(1)).max(2);
    let t0 = Instant::now();
    for _ in 0..inflight {
        submit(&tx);
    }
    let budget = Duration::from_secs_f64(secs);
    let (mut done, mut batches, mut last) = (0usize, 0usize, t0);
    while batches < inflight || t0.elapsed() < budget {
        let Ok(n) = rx.recv() else { break };
        (done, batches, last) = (done + n, batches + 1, Instant::now());
        submit(&tx);
    }
    // The rate counts completions up to the last one seen; the batches still
    // queued finish before the engine is dropped.
    let rate = done as f64 / last.duration_since(t0).as_secs_f64().max(1e-9);
    for _ in 0..inflight {
        let _ = rx.recv();
    }
    rate
}

fn start_gpus(e: &SigEngine, a: &SigBenchArgs) -> anyhow::Result<()> {
    let sel = GpuSelection {
        allow_software: a.gpu_allow_software,
        simulate: a.simulate_gpu.iter().cloned().collect(),
        ..Default::default()
    };
    e.start_gpus(&sel, StartMode::Wait).with_context(|| format!("--engine {}", a.engine))?;
    Ok(())
}

pub fn main(a: SigBenchArgs) -> anyhow::Result<ExitCode> {
    if let (Some(profile), Some(path)) = (&a.from_profile, &a.plot) {
        return plot_profile(profile, path);
    }
    super::args::duration("--seconds", a.seconds, false)?;
    anyhow::ensure!(
        a.simulate_gpu.is_none() || a.engine != EngineChoice::Cpu,
        "--simulate-gpu needs --engine auto or --engine gpu"
    );
    super::args::count("--max-batch", a.max_batch, 1 << 20)?;
    super::args::count("--rounds", a.rounds, 100)?;
    super::args::count("--connections", a.connections, 4096)?;
    let schemes: Vec<Scheme> = match &a.schemes {
        None => Scheme::ALL.to_vec(),
        Some(v) => v
            .iter()
            .map(|s| s.parse::<Scheme>().map_err(|_| anyhow::anyhow!("unknown scheme {s:?}")))
            .collect::<anyhow::Result<_>>()?,
    };
    let topo = Topology::discover_or_fallback();
    let mut targets = match &a.sigserve {
        Some(addr) => {
            let c = SigClient::connect_with(addr, a.tls.client().as_ref())
                .with_context(|| format!("cannot connect to sigserve {addr}"))?;
            vec![Target::Remote(Box::new(c), addr.clone(), a.tls.client())]
        }
        None => {
            let start = |threads: Option<usize>, engines: EngineChoice| -> anyhow::Result<SigEngine> {
                let plan = PinPlan::build(&topo, &PlanOptions { threads, ..PlanOptions::default() })?;
                let mut cfg = SigEngineConfig::new(plan);
                cfg.pin = !a.no_pin;
                cfg.engines = engines;
                Ok(SigEngine::start(cfg, None)?)
            };
            let one = start(Some(1), EngineChoice::Cpu)?;
            let all = start(a.threads, EngineChoice::Cpu)?;
            let mut t = vec![Target::Engine(one, "cpu")];
            if all.threads() > 1 {
                t.push(Target::Engine(all, "cpu"));
            }
            if a.engine != EngineChoice::Cpu {
                let e = start(a.threads, a.engine)?;
                start_gpus(&e, &a)?;
                let label = match (a.engine, a.simulate_gpu.is_some()) {
                    (EngineChoice::Gpu, false) => "gpu",
                    (EngineChoice::Gpu, true) => "gpu-sim",
                    (_, false) => "auto",
                    (_, true) => "auto-sim",
                };
                t.push(Target::Engine(e, label));
            }
            t
        }
    };
    let where_ = match &a.sigserve {
        Some(addr) => {
            format!("sigserve {addr} (end to end: one connection; saturated: {} connections at once)", a.connections)
        }
        None => format!("{} threads", targets.iter().map(Target::threads).max().unwrap_or(1)),
    };
    // The transport's own floor (PING → PONG through the server's I/O loop,
    // no engine), so a reader can tell the socket from the verify time.
    let ping = match targets.first_mut() {
        Some(Target::Remote(c, addr, _)) => {
            let mut rtt = Vec::with_capacity(2000);
            for _ in 0..2000 {
                rtt.push(c.ping().with_context(|| format!("sigserve {addr}"))?.as_secs_f64());
            }
            rtt.sort_by(f64::total_cmp);
            Some((percentile(&rtt, 0.5), percentile(&rtt, 0.99)))
        }
        _ => None,
    };
    let mut sizes = vec![1usize];
    while sizes.last().copied().unwrap_or(1) * 4 <= a.max_batch.max(1) {
        sizes.push(sizes.last().copied().unwrap_or(1) * 4);
    }
    if !a.json {
        println!("cpu: {} | {where_}", super::devices::cpu_model());
        for t in &targets {
            if let Target::Engine(e, _) = t {
                for g in e.gpus() {
                    let rate = |s| 1.0 / g.model_for(s).1;
                    println!(
                        "{} ({}): L0 {:.3} ms; verifies/s (kernel alone, measured at start): Ed25519 {:.0}, ECDSA {:.0}, BIP340 {:.0}",
                        g.label,
                        g.name,
                        g.model().0 * 1e3,
                        rate(Scheme::Ed25519),
                        rate(Scheme::Ecdsa),
                        rate(Scheme::Schnorr)
                    );
                }
            }
        }
        if let Some((p50, p99)) = ping {
            println!("ping round trip (no verification): p50 {:.1}µs p99 {:.1}µs", p50 * 1e6, p99 * 1e6);
        }
        println!(
            "{:<15} {:>8} {:>6} {:>7} {:>12} {:>12} {:>12} {:>14} {:>14} {:>7}",
            "scheme", "engine", "batch", "threads", "p50", "p99", "p99.9", "verifies/s", "saturated/s", "on gpu"
        );
    }
    let mut points = Vec::new();
    for &s in &schemes {
        let pool: Vec<SigItem> = (0..256).map(|i| valid_item(s, i)).collect();
        for &n in &sizes {
            for p in measure(&mut targets, s, &pool, n, a.seconds, a.rounds, a.connections)? {
                if !a.json {
                    let threads = if p.threads == 0 { "-".to_string() } else { p.threads.to_string() };
                    let saturated = p.saturated_items_per_sec.map_or("-".to_string(), |v| format!("{v:.0}"));
                    let share = p.gpu_share.map_or("-".to_string(), |v| format!("{:.0}%", v * 100.0));
                    println!(
                        "{:<15} {:>8} {:>6} {:>7} {:>10.1}µs {:>10.1}µs {:>10.1}µs {:>14.0} {:>14} {:>7}",
                        p.scheme,
                        p.engine,
                        p.batch,
                        threads,
                        p.p50_seconds * 1e6,
                        p.p99_seconds * 1e6,
                        p.p999_seconds * 1e6,
                        p.items_per_sec,
                        saturated,
                        share
                    );
                }
                points.push(p);
            }
        }
    }
    if let Some(path) = &a.plot {
        let rows: Vec<LatencyRow> = points
            .iter()
            .map(|x| (x.scheme.to_string(), x.engine.to_string(), x.threads, x.batch, x.p50_seconds, x.p99_seconds))
            .collect();
        plot(path, &format!("Signature batch latency, {where_}, {}", super::devices::cpu_model()), &rows)?;
    }
    if let Some(path) = &a.profile_out {
        let mut p = crate::profile::HwProfile::load_for_update(path, &topo, super::devices::cpu_model())?;
        p.sig = Some(crate::profile::SigBench {
            hashrig_version: env!("CARGO_PKG_VERSION").to_string(),
            date: crate::date::utc_date(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            seconds_per_point: a.seconds,
            points: points
                .iter()
                .map(|x| crate::profile::SigPoint {
                    scheme: x.scheme.to_string(),
                    engine: x.engine.to_string(),
                    batch: x.batch,
                    threads: x.threads,
                    p50_seconds: x.p50_seconds,
                    p99_seconds: x.p99_seconds,
                    items_per_sec: x.items_per_sec,
                    saturated_items_per_sec: x.saturated_items_per_sec.unwrap_or(x.items_per_sec),
                })
                .collect(),
        });
        p.save(path)?;
        if !a.json {
            println!("profile written to {}", path.display());
        }
    }
    if a.json {
        let v = serde_json::json!({
            "engine": if a.sigserve.is_some() { "sigserve" } else { targets.last().map_or("cpu", Target::engine) },
            "sigserve": a.sigserve.as_ref().map(|s| s.to_string()),
            "ping_p50_seconds": ping.map(|p| p.0),
            "ping_p99_seconds": ping.map(|p| p.1),
            "cpu_model": super::devices::cpu_model(),
            "threads": targets.iter().map(Target::threads).max().unwrap_or(0),
            "seconds_per_point": a.seconds,
            "simulated_gpu": a.simulate_gpu.as_ref().map(|s| s.to_string()),
            "results": points,
        });
        println!("{v}");
    }
    Ok(ExitCode::SUCCESS)
}
