//! GPU health from NVIDIA's NVML (the library behind nvidia-smi and DCGM),
//! opened at run time: `libnvidia-ml.so.1` ships with the driver, so a
//! machine without it gets a clear "unavailable", never a link error.

use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;

use super::{GpuIdentity, GpuSensor, Reading, SensorError};

pub struct NvmlSensor {
    nvml: Nvml,
    gpus: Vec<GpuIdentity>,
    /// Fans per GPU (0 on passively cooled boards).
    fans: Vec<u32>,
}

impl NvmlSensor {
    /// Loads NVML and lists its GPUs; a GPU NVML cannot describe is skipped
    /// with a warning.
    pub fn open() -> Result<NvmlSensor, SensorError> {
        let nvml = Nvml::init().map_err(|e| SensorError::Unavailable(format!("NVML: {e}")))?;
        let count = nvml.device_count().map_err(|e| SensorError::Unavailable(format!("NVML device count: {e}")))?;
        let (mut gpus, mut fans) = (Vec::new(), Vec::new());
        for index in 0..count {
            let d = match nvml.device_by_index(index) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!("NVML GPU {index}: {e}; its health is not read");
                    continue;
                }
            };
            gpus.push(GpuIdentity {
                index,
                uuid: d.uuid().unwrap_or_default(),
                name: d.name().unwrap_or_default(),
                pci_bus_id: d.pci_info().ok().and_then(|p| super::normalize_bus_id(&p.bus_id)).unwrap_or_default(),
            });
            fans.push(d.num_fans().unwrap_or(0));
        }
        Ok(NvmlSensor { nvml, gpus, fans })
    }
}

/// A figure the GPU may not have: "not supported" is `None`, other errors too
/// (one bad call should not cost the other figures).
fn opt<T>(r: Result<T, NvmlError>) -> Option<T> {
    r.ok()
}

/// NVML's throttle bits, as the names in [`super::THROTTLE_REASONS`].
pub fn reasons(r: ThrottleReasons) -> Vec<&'static str> {
    let table = [
        (ThrottleReasons::GPU_IDLE, "gpu_idle"),
        (ThrottleReasons::APPLICATIONS_CLOCKS_SETTING, "applications_clocks"),
        (ThrottleReasons::SW_POWER_CAP, "sw_power_cap"),
        (ThrottleReasons::HW_SLOWDOWN, "hw_slowdown"),
        (ThrottleReasons::SYNC_BOOST, "sync_boost"),
        (ThrottleReasons::SW_THERMAL_SLOWDOWN, "sw_thermal"),
        (ThrottleReasons::HW_THERMAL_SLOWDOWN, "hw_thermal"),
        (ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN, "hw_power_brake"),
    ];
    table.iter().filter(|(bit, _)| r.contains(*bit)).map(|&(_, name)| name).collect()
}

impl GpuSensor for NvmlSensor {
    fn gpus(&self) -> &[GpuIdentity] {
        &self.gpus
    }

    fn read(&mut self, i: usize) -> Result<Reading, SensorError> {
        let g = self.gpus.get(i).ok_or(SensorError::Read { index: u32::MAX, reason: "no such GPU".into() })?;
        let d = self
            .nvml
            .device_by_index(g.index)
            .map_err(|e| SensorError::Read { index: g.index, reason: e.to_string() })?;
        let temperature = d.temperature(TemperatureSensor::Gpu);
        // A GPU that answers nothing at all (fallen off the bus) is an error,
        // not a reading of unknowns.
        if let Err(e @ (NvmlError::GpuLost | NvmlError::Uninitialized | NvmlError::DriverNotLoaded)) = &temperature {
            return Err(SensorError::Read { index: g.index, reason: e.to_string() });
        }
        let fans = self.fans.get(i).copied().unwrap_or(0);
        let fan = (fans > 0)
            .then(|| {
                let speeds: Vec<u32> = (0..fans).filter_map(|f| d.fan_speed(f).ok()).collect();
                (!speeds.is_empty()).then(|| speeds.iter().sum::<u32>() as f64 / speeds.len() as f64 / 100.0)
            })
            .flatten();
        Ok(Reading {
            temperature_celsius: opt(temperature).map(f64::from),
            power_watts: opt(d.power_usage()).map(|mw| mw as f64 / 1e3),
            energy_joules: opt(d.total_energy_consumption()).map(|mj| mj as f64 / 1e3),
            sm_clock_hertz: opt(d.clock_info(Clock::SM)).map(|mhz| mhz as f64 * 1e6),
            memory_clock_hertz: opt(d.clock_info(Clock::Memory)).map(|mhz| mhz as f64 * 1e6),
            fan_speed_ratio: fan,
            throttle_reasons: opt(d.current_throttle_reasons()).map(reasons),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_bits_name_the_fixed_reasons() {
        let r = reasons(ThrottleReasons::SW_POWER_CAP | ThrottleReasons::HW_THERMAL_SLOWDOWN);
        assert_eq!(r, ["sw_power_cap", "hw_thermal"]);
        assert!(reasons(ThrottleReasons::NONE).is_empty());
        for name in reasons(ThrottleReasons::all()) {
            assert!(crate::health::THROTTLE_REASONS.contains(&name), "{name}");
        }
    }

    /// Without the NVIDIA driver (CI, the development machines) opening
    /// fails with a reason; with it, every GPU reads.
    #[test]
    fn open_fails_cleanly_or_reads() {
        match NvmlSensor::open() {
            Err(e) => assert!(e.to_string().contains("NVML"), "{e}"),
            Ok(mut s) => {
                for i in 0..s.gpus().len() {
                    let r = s.read(i).unwrap();
                    assert!(r.temperature_celsius.is_some_and(|t| t > 0.0 && t < 130.0), "{r:?}");
                }
            }
        }
    }
}
