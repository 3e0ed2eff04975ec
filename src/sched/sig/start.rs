//! Starting GPU signature engines beside the CPU: on the adapters a
//! selection allows (each fed from the NUMA node nearest its PCIe slot),
//! and simulated devices (`--simulate-gpu`). Owned by the library so a
//! program embedding the crate gets the same start-up as `hashrig run`;
//! background start-up threads belong to the engine and are joined when it
//! stops.

use super::gpu::{GpuSigEngine, SimSpec, TrustPolicy};
use super::SigEngine;

/// Which devices verify signatures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuSelection {
    /// Also software Vulkan adapters (lavapipe): slow, for testing.
    pub allow_software: bool,
    /// Only these adapters (enumeration indices); all when `None`.
    pub devices: Option<Vec<usize>>,
    /// Simulated devices instead of adapters (each L0 and rate).
    pub simulate: Vec<SimSpec>,
    pub policy: TrustPolicy,
}

/// Wait for the kernels, or build them in the background while the CPU
/// answers (`run`, `verify --engine auto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMode {
    Wait,
    Background,
}

#[derive(Debug, thiserror::Error)]
pub enum GpuStartError {
    #[error("no usable GPU adapter for signatures ({0}); software adapters need --gpu-allow-software")]
    NoAdapter(String),
    #[error("no GPU adapter could verify signatures (see the warnings above)")]
    NoneStarted,
    #[error("a simulated GPU did not start: {0}")]
    Simulated(String),
    #[error("this hashrig was built without the gpu feature")]
    NoGpuFeature,
    #[error("could not start a thread: {0}")]
    Thread(String),
}

impl SigEngine {
    /// Starts the signature engines `sel` asks for and adds each once it is
    /// calibrated. With simulated devices only those start. Returns how many
    /// started (0 in the background: they join as they become ready).
    pub fn start_gpus(&self, sel: &GpuSelection, mode: StartMode) -> Result<usize, GpuStartError> {
        if !sel.simulate.is_empty() {
            for (i, spec) in sel.simulate.iter().enumerate() {
                let g = GpuSigEngine::simulated(spec.clone(), i, sel.policy.clone(), self.inner.metrics.clone())
                    .map_err(|e| GpuStartError::Simulated(e.to_string()))?;
                tracing::info!("{}: {spec}, verifying signatures (results are simulated)", g.label);
                self.add_gpu(g);
            }
            return Ok(sel.simulate.len());
        }
        self.start_adapters(sel, mode)
    }

    #[cfg(not(feature = "gpu"))]
    fn start_adapters(&self, _: &GpuSelection, mode: StartMode) -> Result<usize, GpuStartError> {
        match mode {
            StartMode::Wait => Err(GpuStartError::NoGpuFeature),
            StartMode::Background => Ok(0),
        }
    }

    #[cfg(feature = "gpu")]
    fn start_adapters(&self, sel: &GpuSelection, mode: StartMode) -> Result<usize, GpuStartError> {
        use crate::gpu;
        let all = gpu::adapters();
        let described = gpu::describe_all(&all);
        let chosen: Vec<gpu::GpuAdapter> = all
            .into_iter()
            .filter(|ad| sel.devices.as_ref().is_none_or(|d| d.contains(&ad.summary.index)))
            .filter(|ad| sel.allow_software || !ad.summary.software)
            .collect();
        if chosen.is_empty() {
            let e = GpuStartError::NoAdapter(described);
            if mode == StartMode::Background {
                tracing::info!("{e}; signatures on the CPU");
                return Ok(0);
            }
            return Err(e);
        }
        let topo = crate::topo::Topology::discover_or_fallback();
        let mut started = 0;
        for ad in chosen {
            // Hashing, packing and re-checks on the NUMA node nearest the GPU.
            let feeder = ad.summary.feeder_affinity(&topo);
            let (engine, policy) = (std::sync::Arc::downgrade(&self.inner), sel.policy.clone());
            let metrics = self.inner.metrics.clone();
            let share = self.inner.cfg.adapters.of(ad.summary.index);
            // /readyz waits for a background start, built or given up.
            let pending = metrics.as_ref().filter(|_| mode == StartMode::Background).map(|m| m.probes.start_pending());
            let start = move || {
                let s = &ad.summary;
                match GpuSigEngine::start(&ad, share, policy, metrics, feeder) {
                    Ok(g) => {
                        tracing::info!("{} ({}): verifying signatures (Ed25519, ECDSA, BIP340)", g.label, s.name);
                        match engine.upgrade() {
                            Some(e) if !e.queue.lock().closing => {
                                e.gpus.write().push(g);
                                true
                            }
                            // Stopped meanwhile: `g` shuts down as it drops.
                            _ => false,
                        }
                    }
                    Err(e) => {
                        tracing::warn!("{} ({}): not used for signatures: {e}", s.label(), s.name);
                        false
                    }
                }
            };
            match mode {
                StartMode::Background => {
                    let t = std::thread::Builder::new()
                        .name("sig-gpu-start".into())
                        .spawn(move || {
                            start();
                            drop(pending);
                        })
                        .map_err(|e| GpuStartError::Thread(e.to_string()))?;
                    self.inner.threads.lock().push(t);
                }
                StartMode::Wait => started += usize::from(start()),
            }
        }
        if mode == StartMode::Wait && started == 0 {
            return Err(GpuStartError::NoneStarted);
        }
        Ok(started)
    }
}
