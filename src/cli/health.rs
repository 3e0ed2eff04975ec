//! `run`'s GPU health options: NVML readings as metrics, and the thermal
//! guard (src/health/).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Args;

use crate::health::guard::DEFAULT_HYSTERESIS;
use crate::health::monitor::{GuardConfig, Monitor, DEFAULT_INTERVAL};
use crate::metrics::Metrics;

#[derive(Args, Debug, Clone)]
pub struct HealthArgs {
    /// Thermal guard: above this GPU temperature (°C) lower that GPU's duty
    /// cycle step by step; restore it once the GPU is below the limit minus
    /// --gpu-temp-hysteresis (default: off). Needs NVML (NVIDIA driver).
    #[arg(long, value_name = "CELSIUS")]
    pub gpu_temp_limit: Option<f64>,
    /// Degrees below --gpu-temp-limit at which the duty cycle is raised again.
    #[arg(long, value_name = "CELSIUS", default_value_t = DEFAULT_HYSTERESIS, requires = "gpu_temp_limit")]
    pub gpu_temp_hysteresis: f64,
}

impl HealthArgs {
    fn guard(&self) -> anyhow::Result<GuardConfig> {
        if let Some(t) = self.gpu_temp_limit {
            anyhow::ensure!(
                t.is_finite() && (30.0..=120.0).contains(&t),
                "--gpu-temp-limit must be between 30 and 120 °C, got {t}"
            );
        }
        let h = self.gpu_temp_hysteresis;
        anyhow::ensure!(h.is_finite() && (0.0..=30.0).contains(&h), "--gpu-temp-hysteresis must be 0..30 °C, got {h}");
        Ok(GuardConfig { temp_limit: self.gpu_temp_limit, hysteresis: h })
    }
}

/// Reads GPU health once a second until `stop`, when NVML is there; else
/// says so in one line (a warning when the guard was asked for).
pub fn start(
    a: &HealthArgs,
    metrics: &Arc<Metrics>,
    shares: &crate::gpu::AdapterShares,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
    let guard = a.guard()?;
    let sensor = match crate::health::open_nvml() {
        Ok(s) => s,
        Err(e) if guard.temp_limit.is_some() => {
            tracing::warn!("{e}; --gpu-temp-limit has no effect");
            return Ok(None);
        }
        Err(e) => {
            tracing::info!("{e}; no GPU health metrics");
            return Ok(None);
        }
    };
    let monitor = Monitor::new(sensor, &crate::health::wgpu_adapters(), shares, &guard, metrics.health.clone());
    if let Some(t) = guard.temp_limit {
        tracing::info!(
            "thermal guard: GPUs at or above {t} °C slow down, back to full speed below {} °C",
            t - guard.hysteresis
        );
    }
    Ok(Some(monitor.spawn(DEFAULT_INTERVAL, stop.clone())?))
}
