//! `hashrig verify`: JSON lines in, one verdict line per item out, in
//! order; locally on the pinned workers, or through a sigserve server
//! (`--connect`).

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::node::sigserve::{ServeAddr, SigClient};
use crate::sched::sig::EngineChoice;
use crate::sched::sig::{GpuSelection, StartMode};
use crate::sched::{SigEngine, SigEngineConfig};
use crate::sig::{jsonl, SigItem, Verdict};
use crate::topo::{PinPlan, PlanOptions, Topology};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// JSON-lines file of items, or `-` for standard input.
    #[arg(long)]
    pub input: PathBuf,
    /// Send the items to a sigserve server (HOST:PORT or unix:PATH) instead of verifying here.
    #[arg(long)]
    pub connect: Option<ServeAddr>,
    #[command(flatten)]
    pub tls: super::SigTlsArgs,
    /// Items per batch.
    #[arg(long, default_value_t = 4096)]
    pub batch: usize,
    /// Worker threads for local verification (default: one per physical core).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Do not bind worker threads to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Where local items are verified: cpu, gpu (every batch on the
    /// GPU; an error when no usable adapter exists) or auto (per batch,
    /// wherever it is predicted to finish first; the CPU answers until the
    /// GPU's kernels are built).
    #[arg(long, default_value = "auto")]
    pub engine: EngineChoice,
    /// Also use software Vulkan adapters (lavapipe) for signatures: slow, for tests.
    #[arg(long)]
    pub gpu_allow_software: bool,
}

enum Backend {
    Local(SigEngine),
    Remote(Box<SigClient>),
}

impl Backend {
    fn verify(&mut self, items: &[SigItem]) -> anyhow::Result<Vec<Verdict>> {
        match self {
            Backend::Local(e) => Ok(e.verify(items, None).verdicts),
            Backend::Remote(c) => Ok(c.verify(items, None)?),
        }
    }
}

/// Verify `pending` (line results in input order) and print one line each.
fn flush(
    b: &mut Backend,
    pending: &mut Vec<Result<SigItem, crate::sig::Reason>>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let items: Vec<SigItem> = pending.iter().filter_map(|p| p.as_ref().ok().cloned()).collect();
    let mut verdicts = b.verify(&items)?.into_iter();
    for p in pending.drain(..) {
        let v = match p {
            Ok(_) => verdicts.next().context("the verifier returned fewer verdicts than items")?,
            Err(r) => Verdict::Invalid(r),
        };
        writeln!(out, "{}", jsonl::format_verdict(v))?;
    }
    Ok(())
}

pub fn main(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    // The sigserve limit on items per batch; also bounds the allocation.
    super::args::count("--batch", a.batch, 1 << 20)?;
    let input: Box<dyn BufRead> = if a.input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(&a.input).with_context(|| format!("cannot open {}", a.input.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut backend = match &a.connect {
        Some(addr) => {
            let mut c = SigClient::connect_with(addr, a.tls.client().as_ref())
                .with_context(|| format!("cannot connect to {addr}"))?;
            c.set_read_timeout(Some(Duration::from_secs(300)))?;
            Backend::Remote(Box::new(c))
        }
        None => {
            let topo = Topology::discover_or_fallback();
            let plan = PinPlan::build(&topo, &PlanOptions { threads: a.threads, ..PlanOptions::default() })?;
            let mut cfg = SigEngineConfig::new(plan);
            cfg.pin = !a.no_pin;
            cfg.engines = a.engine;
            let engine = SigEngine::start(cfg, None)?;
            start_gpus(&engine, &a)?;
            Backend::Local(engine)
        }
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut pending = Vec::with_capacity(a.batch);
    for line in input.lines() {
        let line = line.context("reading the input")?;
        if line.trim().is_empty() {
            continue;
        }
        pending.push(jsonl::parse_item(&line));
        if pending.len() >= a.batch {
            flush(&mut backend, &mut pending, &mut out)?;
        }
    }
    flush(&mut backend, &mut pending, &mut out)?;
    out.flush()?;
    if let Backend::Local(e) = &backend {
        summary(e);
    }
    Ok(ExitCode::SUCCESS)
}

fn start_gpus(engine: &SigEngine, a: &VerifyArgs) -> anyhow::Result<()> {
    if a.engine == EngineChoice::Cpu {
        return Ok(());
    }
    let sel = GpuSelection { allow_software: a.gpu_allow_software, ..Default::default() };
    // --engine gpu waits for the kernels and fails without an adapter;
    // auto builds them in the background.
    let mode = if a.engine == EngineChoice::Auto { StartMode::Background } else { StartMode::Wait };
    engine.start_gpus(&sel, mode).with_context(|| format!("--engine {}", a.engine))?;
    Ok(())
}

/// One line per engine used, on stderr.
fn summary(e: &SigEngine) {
    let cpu = e.cpu_items_total();
    if cpu > 0 {
        eprintln!("engine cpu: {cpu} items verified");
    }
    for g in e.gpus() {
        let t = g.totals();
        if t.items > 0 || !g.is_active() {
            eprintln!(
                "engine {} ({}): {} items verified, {} CPU re-checks, {} mismatches{}",
                g.label,
                g.name,
                t.items,
                t.rechecked,
                t.mismatches,
                if g.is_active() { "" } else { " (taken off signature work)" }
            );
        }
    }
}
