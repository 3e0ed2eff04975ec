//! GPU health for the run: the sensor's readings as metrics and the thermal
//! guard, on a thread the runtime owns. The guard's limit and gap are live:
//! a reload hands them to the running monitor.

use std::sync::Arc;

use super::worker::Worker;
use super::RuntimeError;
use crate::health::monitor::{GuardConfig, GuardHandle, Monitor, DEFAULT_INTERVAL};
use crate::health::SensorSource;
use crate::metrics::Metrics;

pub(super) struct HealthRun {
    worker: Worker,
    guard: GuardHandle,
}

fn announce(guard: &GuardConfig) {
    if let Some(t) = guard.temp_limit {
        tracing::info!(
            "thermal guard: GPUs at or above {t} °C slow down, back to full speed below {} °C",
            t - guard.hysteresis
        );
    }
}

/// Reads GPU health once a second, when the sensor is there; else says so
/// in one line (a warning when the guard was asked for).
pub(super) fn start(
    source: &SensorSource,
    guard: &GuardConfig,
    metrics: &Arc<Metrics>,
    shares: &crate::gpu::AdapterShares,
) -> Result<Option<HealthRun>, RuntimeError> {
    let sensor = match source.open() {
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
    let monitor = Monitor::new(sensor, &crate::health::wgpu_adapters(), shares, guard, metrics.health.clone());
    announce(guard);
    let handle = monitor.guard_handle();
    let thread = Worker::spawn("gpu-health", move |stop| monitor.run(DEFAULT_INTERVAL, &stop))
        .map_err(|e| RuntimeError::start("gpu health", e))?;
    Ok(Some(HealthRun { worker: thread, guard: handle }))
}

impl HealthRun {
    /// A new limit or gap, applied at the monitor's next reading.
    pub(super) fn set_guard(&self, guard: &GuardConfig) {
        self.guard.set(guard.clone());
    }

    /// Stops reading; the GPUs it slowed get full speed back.
    pub(super) fn stop(self) {
        if self.worker.stop().is_err() {
            tracing::error!("the GPU health monitor panicked");
        }
    }
}
