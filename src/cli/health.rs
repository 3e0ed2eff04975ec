//! `run`'s GPU health options: NVML readings as metrics, and the thermal
//! guard (src/health/, started by the runtime).

use clap::Args;

use crate::health::guard::DEFAULT_HYSTERESIS;
use crate::health::monitor::GuardConfig;
use crate::runtime::file::GpuSection;

#[derive(Args, Debug, Clone)]
pub struct HealthArgs {
    /// Thermal guard: above this GPU temperature (°C) lower that GPU's duty
    /// cycle step by step; restore it once the GPU is below the limit minus
    /// --gpu-temp-hysteresis [default: off, or [gpu] temp_limit in the
    /// config file, live]. Needs NVML (NVIDIA driver).
    #[arg(long, value_name = "CELSIUS")]
    pub gpu_temp_limit: Option<f64>,
    /// Degrees below --gpu-temp-limit at which the duty cycle is raised again
    /// [default: 5, or [gpu] temp_hysteresis in the config file].
    #[arg(long, value_name = "CELSIUS", requires = "gpu_temp_limit")]
    pub gpu_temp_hysteresis: Option<f64>,
}

impl HealthArgs {
    /// The guard's settings: flags win over the file (checked by the runtime).
    pub fn guard(&self, file: &GpuSection) -> GuardConfig {
        GuardConfig {
            temp_limit: self.gpu_temp_limit.or(file.temp_limit),
            hysteresis: self.gpu_temp_hysteresis.or(file.temp_hysteresis).unwrap_or(DEFAULT_HYSTERESIS),
        }
    }
}
