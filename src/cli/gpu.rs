//! GPU options shared by `run`, `bench pow`, `scan` and `devices`, and the
//! start-up of GPU contexts from them.

use clap::Args;

#[derive(Args, Debug, Clone, Default)]
pub struct GpuArgs {
    /// Also use software Vulkan adapters (llvmpipe/lavapipe): slow, for testing.
    #[arg(long)]
    pub gpu_allow_software: bool,
    /// Only these GPU adapters (indices as `hashrig devices` lists them).
    #[arg(long, value_delimiter = ',')]
    pub gpu_devices: Option<Vec<usize>>,
    /// Measure workgroup size and nonces per thread again instead of using the cache.
    #[arg(long)]
    pub gpu_retune: bool,
    /// Fixed tune instead of autotune: WORKGROUP,NONCES_PER_THREAD (e.g. 256,64).
    #[arg(long, value_delimiter = ',')]
    pub gpu_tune: Option<Vec<u32>>,
}

#[cfg(feature = "gpu")]
pub use imp::*;

#[cfg(feature = "gpu")]
mod imp {
    use super::GpuArgs;
    use crate::gpu::{self, tune, ContextOptions, GpuContext, TuneChoice, TuneMode};

    /// A context per usable adapter, tuned, with its metrics label ("gpu0" by
    /// its enumeration index). Adapters that fail to start are logged and
    /// skipped. With none, the reason why (for the caller's one warning).
    pub fn start_contexts(a: &GpuArgs, autotune: bool) -> (Vec<(String, GpuContext)>, Option<String>) {
        let all = gpu::adapters();
        let mode = match &a.gpu_tune {
            Some(v) if v.len() == 2 => TuneMode::Fixed(TuneChoice { wg: v[0], npt: v[1] }),
            _ if autotune => TuneMode::Auto { cache: tune::default_cache_path(), retune: a.gpu_retune },
            _ => TuneMode::Fixed(TuneChoice::DEFAULT),
        };
        let mut out = Vec::new();
        for ad in &all {
            let s = &ad.summary;
            if a.gpu_devices.as_ref().is_some_and(|d| !d.contains(&s.index)) {
                continue;
            }
            if s.software && !a.gpu_allow_software {
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
            } else if all.iter().all(|x| x.summary.software) && !a.gpu_allow_software {
                format!("only software adapters ({}); they need --gpu-allow-software", gpu::describe_all(&all))
            } else {
                format!("none of the adapters started ({})", gpu::describe_all(&all))
            }
        });
        (out, why)
    }
}

/// Without the `gpu` feature there is never a GPU.
#[cfg(not(feature = "gpu"))]
pub fn gpu_unavailable_reason() -> &'static str {
    "this hashrig was built without the gpu feature"
}
