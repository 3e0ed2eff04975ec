//! GPU options shared by `run`, `bench pow`, `scan` and `devices`, turned
//! into the library's [`GpuDevices`] and [`GpuTune`] (the start-up of GPU
//! contexts from them is in `runtime::gpus`).

use clap::Args;

use crate::runtime::{GpuDevices, GpuTune};

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
    #[arg(long, value_name = "WG,NPT", value_parser = parse_tune)]
    pub gpu_tune: Option<(u32, u32)>,
}

#[derive(Debug, thiserror::Error)]
#[error("expected WORKGROUP,NONCES_PER_THREAD (two positive numbers, e.g. 256,64), got {0:?}")]
pub struct BadTune(String);

/// `WG,NPT`: two positive numbers, nothing else (one number is an error,
/// not a silent autotune).
fn parse_tune(s: &str) -> Result<(u32, u32), BadTune> {
    let num = |x: &str| x.trim().parse::<u32>().ok().filter(|&v| v > 0);
    match s.split_once(',').map(|(wg, npt)| (num(wg), num(npt))) {
        Some((Some(wg), Some(npt))) => Ok((wg, npt)),
        _ => Err(BadTune(s.to_owned())),
    }
}

impl GpuArgs {
    pub fn devices(&self) -> GpuDevices {
        GpuDevices { allow_software: self.gpu_allow_software, devices: self.gpu_devices.clone() }
    }

    /// `--gpu-tune` when given; else autotune (`autotune`) or the built-in choice.
    pub fn tune(&self, autotune: bool) -> GpuTune {
        match self.gpu_tune {
            Some((workgroup, nonces_per_thread)) => GpuTune::Fixed { workgroup, nonces_per_thread },
            None if autotune => GpuTune::Auto { retune: self.gpu_retune },
            None => GpuTune::Builtin,
        }
    }
}

/// A context per usable adapter (see `runtime::gpus::start_contexts`).
#[cfg(feature = "gpu")]
pub fn start_contexts(a: &GpuArgs, autotune: bool) -> (Vec<(String, crate::gpu::GpuContext)>, Option<String>) {
    crate::runtime::gpus::start_contexts(&a.devices(), a.tune(autotune))
}

/// Without the `gpu` feature there is never a GPU.
#[cfg(not(feature = "gpu"))]
pub fn gpu_unavailable_reason() -> &'static str {
    "this hashrig was built without the gpu feature"
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        gpu: GpuArgs,
    }

    #[test]
    fn gpu_tune_takes_a_pair_and_nothing_else() {
        let t = T::try_parse_from(["t", "--gpu-tune", "256,64"]).unwrap();
        assert_eq!(t.gpu.tune(true), GpuTune::Fixed { workgroup: 256, nonces_per_thread: 64 });
        for bad in ["256", "256,", ",64", "256,64,2", "0,64", "a,b"] {
            let e = T::try_parse_from(["t", "--gpu-tune", bad]).err().unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(e.to_string().contains("WORKGROUP,NONCES_PER_THREAD"), "{bad}: {e}");
        }
        let t = T::try_parse_from(["t", "--gpu-retune"]).unwrap();
        assert_eq!(t.gpu.tune(true), GpuTune::Auto { retune: true });
        assert_eq!(t.gpu.tune(false), GpuTune::Builtin);
    }
}
