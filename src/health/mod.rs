//! GPU health: temperature, power, energy, clocks, fan and throttle reasons
//! per GPU, exported as metrics, and a thermal guard that lowers a hot GPU's
//! duty cycle.
//!
//! - [`GpuSensor`] is where readings come from: NVIDIA's NVML ([`nvml`],
//!   feature `nvml`, libnvidia-ml opened at run time) or, in tests, a
//!   [`fake::FakeSensor`] whose figures the test sets.
//! - [`monitor::Monitor`] reads every GPU once a tick, sets the metrics
//!   ([`metrics::HealthMetrics`]) and feeds the [`guard::ThermalGuard`] of
//!   each GPU, which sets the duty cycle in that adapter's share
//!   ([`crate::gpu::AdapterShare`]); the PoW engine on the adapter pauses
//!   between dispatches accordingly.
//! - A sensor's GPUs are matched to the wgpu adapters that mine on them by
//!   PCI bus id, else by a name both sides hold once ([`match_adapters`]).

pub mod energy;
pub mod fake;
pub mod guard;
pub mod metrics;
pub mod monitor;
#[cfg(feature = "nvml")]
pub mod nvml;

use serde::Serialize;

/// Clock throttle reasons, as NVML names them: a small fixed set, used as a
/// label value (`hashrig_gpu_throttled{reason=…}`).
pub const THROTTLE_REASONS: [&str; 8] = [
    "gpu_idle",
    "applications_clocks",
    "sw_power_cap",
    "hw_slowdown",
    "sync_boost",
    "sw_thermal",
    "hw_thermal",
    "hw_power_brake",
];

/// One GPU as its sensor knows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GpuIdentity {
    /// The sensor's index (NVML's), not necessarily wgpu's.
    pub index: u32,
    /// "GPU-8f6a…": stable across reboots and slot changes.
    pub uuid: String,
    pub name: String,
    /// "0000:17:00.0" form (see [`normalize_bus_id`]), empty when unknown.
    pub pci_bus_id: String,
}

/// One reading; `None` where the GPU does not report the figure (no fan on
/// a passively cooled datacenter board, no energy counter before Volta).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Reading {
    pub temperature_celsius: Option<f64>,
    pub power_watts: Option<f64>,
    /// Energy since the driver loaded.
    pub energy_joules: Option<f64>,
    pub sm_clock_hertz: Option<f64>,
    pub memory_clock_hertz: Option<f64>,
    /// 0..1 of the fan's maximum.
    pub fan_speed_ratio: Option<f64>,
    /// Active throttle reasons, from [`THROTTLE_REASONS`]; `None` when unknown.
    pub throttle_reasons: Option<Vec<&'static str>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error("GPU health is not available: {0}")]
    Unavailable(String),
    #[error("reading GPU {index}: {reason}")]
    Read { index: u32, reason: String },
}

/// A source of GPU health readings.
pub trait GpuSensor: Send {
    /// The GPUs it reads, in its own order.
    fn gpus(&self) -> &[GpuIdentity];
    /// A fresh reading of `gpus()[i]`.
    fn read(&mut self, i: usize) -> Result<Reading, SensorError>;
}

/// The NVML sensor, or why there is none (no NVIDIA driver, built without
/// the `nvml` feature, no GPU).
pub fn open_nvml() -> Result<Box<dyn GpuSensor>, SensorError> {
    #[cfg(feature = "nvml")]
    {
        let s = nvml::NvmlSensor::open()?;
        if s.gpus().is_empty() {
            return Err(SensorError::Unavailable("NVML reports no GPU".into()));
        }
        Ok(Box::new(s))
    }
    #[cfg(not(feature = "nvml"))]
    Err(SensorError::Unavailable("this hashrig was built without the nvml feature".into()))
}

/// Where the runtime reads GPU health from: NVML, or a fake sensor whose
/// readings a test sets (fixed at start).
#[derive(Clone, Default)]
pub enum SensorSource {
    #[default]
    Nvml,
    Fake(fake::FakeSensor),
}

impl SensorSource {
    pub fn open(&self) -> Result<Box<dyn GpuSensor>, SensorError> {
        match self {
            SensorSource::Nvml => open_nvml(),
            SensorSource::Fake(f) => Ok(Box::new(f.clone())),
        }
    }
}

impl std::fmt::Debug for SensorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SensorSource::Nvml => f.write_str("Nvml"),
            SensorSource::Fake(s) => write!(f, "Fake({} GPUs)", s.gpus().len()),
        }
    }
}

/// The same source: NVML, or the same fake (its handles share readings).
impl PartialEq for SensorSource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (SensorSource::Nvml, SensorSource::Nvml) => true,
            (SensorSource::Fake(a), SensorSource::Fake(b)) => a.same(b),
            _ => false,
        }
    }
}

/// `"00000000:17:00.0"` (NVML), `"0000:17:00.0"` (wgpu, sysfs) → `"0000:17:00.0"`,
/// lower case; `None` for anything else.
pub fn normalize_bus_id(s: &str) -> Option<String> {
    let mut parts = s.trim().split(':');
    let (domain, bus, devfn) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (dev, func) = devfn.split_once('.')?;
    let hex = |x: &str, max: u32| u32::from_str_radix(x, 16).ok().filter(|v| *v <= max && !x.is_empty());
    let (d, b, v, f) = (hex(domain, 0xffff)?, hex(bus, 0xff)?, hex(dev, 0x1f)?, hex(func, 7)?);
    Some(format!("{d:04x}:{b:02x}:{v:02x}.{f:x}"))
}

/// A wgpu adapter as the matcher needs it.
#[derive(Clone, Debug)]
pub struct AdapterRef {
    /// wgpu enumeration index (the `gpuN` label of the engines, [`crate::gpu::label`]).
    pub index: usize,
    pub name: String,
    pub pci_bus_id: String,
}

/// For each sensor GPU, the wgpu adapter on the same device: the same PCI
/// bus id, else the same name where exactly one GPU and one adapter carry it.
pub fn match_adapters(gpus: &[GpuIdentity], adapters: &[AdapterRef]) -> Vec<Option<usize>> {
    let mut taken = vec![false; adapters.len()];
    let mut out: Vec<Option<usize>> = gpus
        .iter()
        .map(|g| {
            let bus = normalize_bus_id(&g.pci_bus_id)?;
            let j = adapters.iter().position(|a| normalize_bus_id(&a.pci_bus_id).as_deref() == Some(&*bus))?;
            taken[j] = true;
            Some(adapters[j].index)
        })
        .collect();
    for (i, g) in gpus.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        let same_gpu = gpus.iter().filter(|o| o.name == g.name).count();
        let cands: Vec<usize> =
            (0..adapters.len()).filter(|&j| !taken[j] && adapters[j].name.trim() == g.name.trim()).collect();
        if same_gpu == 1 && cands.len() == 1 {
            taken[cands[0]] = true;
            out[i] = Some(adapters[cands[0]].index);
        }
    }
    out
}

/// The wgpu adapters of this machine, for matching (none without the gpu feature).
pub fn wgpu_adapters() -> Vec<AdapterRef> {
    #[cfg(feature = "gpu")]
    {
        crate::gpu::adapters()
            .into_iter()
            .map(|a| AdapterRef { index: a.summary.index, name: a.summary.name, pci_bus_id: a.summary.pci_bus_id })
            .collect()
    }
    #[cfg(not(feature = "gpu"))]
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids_normalize() {
        assert_eq!(normalize_bus_id("00000000:17:00.0").as_deref(), Some("0000:17:00.0"));
        assert_eq!(normalize_bus_id("0000:AB:1F.7").as_deref(), Some("0000:ab:1f.7"));
        assert_eq!(normalize_bus_id("0001:03:00.1").as_deref(), Some("0001:03:00.1"));
        for bad in ["", "17:00.0", "0000:17:00", "0000:100:00.0", "0000:17:20.0", "0000:17:00.8", "x:y:z.w"] {
            assert_eq!(normalize_bus_id(bad), None, "{bad}");
        }
    }

    fn gpu(index: u32, name: &str, bus: &str) -> GpuIdentity {
        GpuIdentity { index, uuid: format!("GPU-{index}"), name: name.into(), pci_bus_id: bus.into() }
    }

    fn ad(index: usize, name: &str, bus: &str) -> AdapterRef {
        AdapterRef { index, name: name.into(), pci_bus_id: bus.into() }
    }

    #[test]
    fn gpus_match_adapters_by_bus_then_unique_name() {
        // NVML and Vulkan enumerate in different orders: the bus id decides.
        let gpus = [gpu(0, "NVIDIA H200", "00000000:17:00.0"), gpu(1, "NVIDIA H200", "00000000:65:00.0")];
        let ads = [ad(0, "NVIDIA H200", "0000:65:00.0"), ad(1, "llvmpipe", ""), ad(2, "NVIDIA H200", "0000:17:00.0")];
        assert_eq!(match_adapters(&gpus, &ads), [Some(2), Some(0)]);
        // No bus id from the driver: a name held once on each side.
        let gpus = [gpu(0, "NVIDIA L4", "00000000:03:00.0"), gpu(1, "NVIDIA A2", "")];
        let ads = [ad(0, "NVIDIA A2", ""), ad(1, "NVIDIA L4", "")];
        assert_eq!(match_adapters(&gpus, &ads), [Some(1), Some(0)]);
        // Two of a name and no bus ids: no guess.
        let gpus = [gpu(0, "NVIDIA H200", ""), gpu(1, "NVIDIA H200", "")];
        let ads = [ad(0, "NVIDIA H200", ""), ad(1, "NVIDIA H200", "")];
        assert_eq!(match_adapters(&gpus, &ads), [None, None]);
        assert_eq!(match_adapters(&gpus, &[]), [None, None]);
    }
}
