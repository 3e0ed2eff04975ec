//! GPU start-up for mining: which adapters, how they are tuned, and the PoW
//! engines on them. The runtime starts them from its config; `bench pow`
//! and `scan` use [`start_contexts`] for contexts of their own.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::RuntimeError;
use crate::metrics::Metrics;
use crate::sched::{PowScheduler, Stats};
use crate::topo::Topology;

/// The adapters GPU engines may use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuDevices {
    /// Also software Vulkan adapters (llvmpipe/lavapipe): slow, for testing.
    pub allow_software: bool,
    /// Only these adapters (enumeration indices, as `hashrig devices` lists
    /// them); all when `None`.
    pub devices: Option<Vec<usize>>,
}

/// How a PoW GPU context picks its workgroup size and nonces per thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuTune {
    /// The cached choice for the adapter, else measured and cached;
    /// `retune`: measured again.
    Auto { retune: bool },
    /// The built-in choice, nothing measured.
    Builtin,
    /// This choice (`--gpu-tune WG,NPT`).
    Fixed { workgroup: u32, nonces_per_thread: u32 },
}

impl Default for GpuTune {
    fn default() -> Self {
        GpuTune::Auto { retune: false }
    }
}

#[cfg(feature = "gpu")]
pub type GpuEngines = Vec<crate::sched::GpuEngine>;
#[cfg(not(feature = "gpu"))]
pub type GpuEngines = Vec<()>;

#[cfg(feature = "gpu")]
pub use imp::start_contexts;

#[cfg(feature = "gpu")]
mod imp {
    use super::{GpuDevices, GpuTune};
    use crate::gpu::{self, tune, ContextOptions, GpuContext, TuneChoice, TuneMode};

    fn mode(t: GpuTune) -> TuneMode {
        match t {
            GpuTune::Auto { retune } => TuneMode::Auto { cache: tune::default_cache_path(), retune },
            GpuTune::Builtin => TuneMode::Fixed(TuneChoice::DEFAULT),
            GpuTune::Fixed { workgroup, nonces_per_thread } => {
                TuneMode::Fixed(TuneChoice { wg: workgroup, npt: nonces_per_thread })
            }
        }
    }

    /// A context per usable adapter, tuned, with its metrics label ("gpu0"
    /// by its enumeration index). Adapters that fail to start are logged
    /// and skipped. With none, the reason why (for the caller's one warning).
    pub fn start_contexts(d: &GpuDevices, t: GpuTune) -> (Vec<(String, GpuContext)>, Option<String>) {
        let all = gpu::adapters();
        let mode = mode(t);
        let mut out = Vec::new();
        for ad in &all {
            let s = &ad.summary;
            if d.devices.as_ref().is_some_and(|d| !d.contains(&s.index)) {
                continue;
            }
            if s.software && !d.allow_software {
                tracing::debug!("skipping software adapter {} (use --gpu-allow-software)", s.name);
                continue;
            }
            let label = s.label();
            let ctx = GpuContext::new(ad, &ContextOptions::default()).and_then(|mut c| {
                tune::apply(&mut c, &mode)?;
                Ok(c)
            });
            match ctx {
                Ok(c) => {
                    tracing::debug!("{label}: {} | {}", s.name, c.tune);
                    out.push((label, c));
                }
                Err(e) => tracing::warn!("{label} ({}): not used: {e}", s.name),
            }
        }
        let why = out.is_empty().then(|| {
            if all.is_empty() {
                "no Vulkan adapter found".to_string()
            } else if all.iter().all(|x| x.summary.software) && !d.allow_software {
                format!("only software adapters ({}); they need --gpu-allow-software", gpu::describe_all(&all))
            } else {
                format!("none of the adapters started ({})", gpu::describe_all(&all))
            }
        });
        (out, why)
    }
}

/// What the PoW GPU engines start from (the runtime's scheduler and counters;
/// read only by the `gpu` feature's engines).
#[cfg_attr(not(feature = "gpu"), allow(dead_code))]
pub(super) struct PowEnv<'a> {
    pub topo: &'a Topology,
    pub sched: &'a Arc<PowScheduler>,
    pub stats: &'a Arc<Stats>,
    pub metrics: &'a Arc<Metrics>,
    pub stop: &'a Arc<AtomicBool>,
    /// Each engine gets its adapter's share (`gpu::share`).
    pub shares: &'a crate::gpu::AdapterShares,
}

/// One PoW engine per usable adapter; with none, one warning and the CPU
/// mines alone.
#[cfg(feature = "gpu")]
pub(super) fn start_pow(d: &GpuDevices, t: GpuTune, env: &PowEnv) -> Result<GpuEngines, RuntimeError> {
    let (gpus, why) = start_contexts(d, t);
    if let Some(why) = why {
        tracing::warn!("no usable GPU: {why}; mining on the CPU");
    }
    for (device, ctx) in &gpus {
        let s = &ctx.summary;
        tracing::info!("{device}: {} | {} | driver {} {}", s.name, ctx.tune, s.driver, s.driver_info);
    }
    crate::sched::gpu::start_engines(gpus, env.topo, env.shares, env.sched, env.stats, env.metrics, env.stop)
        .map_err(|e| RuntimeError::start("gpu", e))
}

#[cfg(not(feature = "gpu"))]
pub(super) fn start_pow(_: &GpuDevices, _: GpuTune, _: &PowEnv) -> Result<GpuEngines, RuntimeError> {
    Ok(GpuEngines::new())
}

#[cfg(feature = "gpu")]
pub(super) fn join(engines: GpuEngines) {
    for e in engines {
        e.join();
    }
}

#[cfg(not(feature = "gpu"))]
pub(super) fn join(_: GpuEngines) {}
