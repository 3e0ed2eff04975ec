//! Power over a measured window, for `bench pow`: the energy counter's
//! difference where the GPU has one (exact), else the mean of the power
//! readings at both ends.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{AdapterRef, GpuSensor, Reading};

/// A GPU's power over a window, with what else its sensor read at the end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Power {
    pub watts: f64,
    /// "energy counter" or "power readings".
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_celsius: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm_clock_hertz: Option<f64>,
}

/// Reads the GPUs of a sensor that wgpu adapters mine on.
pub struct EnergyMeter {
    sensor: Box<dyn GpuSensor>,
    /// (wgpu adapter index, sensor GPU position)
    pairs: Vec<(usize, usize)>,
}

/// Readings at the start of a window.
pub struct Window {
    at: Instant,
    start: Vec<Option<Reading>>,
}

impl EnergyMeter {
    /// A meter over the GPUs of `sensor` matched to `adapters`.
    pub fn new(sensor: Box<dyn GpuSensor>, adapters: &[AdapterRef]) -> EnergyMeter {
        let pairs = super::match_adapters(sensor.gpus(), adapters)
            .into_iter()
            .enumerate()
            .filter_map(|(i, a)| a.map(|a| (a, i)))
            .collect();
        EnergyMeter { sensor, pairs }
    }

    /// NVML's meter over `adapters`, or `None` (with the reason logged once at debug level).
    pub fn open(adapters: &[AdapterRef]) -> Option<EnergyMeter> {
        match super::open_nvml() {
            Ok(s) => Some(EnergyMeter::new(s, adapters)),
            Err(e) => {
                tracing::debug!("no power figures: {e}");
                None
            }
        }
    }

    pub fn start(&mut self) -> Window {
        let start = self.pairs.iter().map(|&(_, i)| self.sensor.read(i).ok()).collect();
        Window { at: Instant::now(), start }
    }

    /// Each matched adapter's power since `w`.
    pub fn finish(&mut self, w: Window) -> Vec<(usize, Power)> {
        let dt = w.at.elapsed().as_secs_f64();
        let mut out = Vec::new();
        for (&(adapter, i), start) in self.pairs.iter().zip(w.start) {
            let (Some(a), Ok(b)) = (start, self.sensor.read(i)) else { continue };
            let by_energy = match (a.energy_joules, b.energy_joules) {
                (Some(e0), Some(e1)) if e1 > e0 && dt > 0.0 => Some((e1 - e0) / dt),
                _ => None,
            };
            let by_power = match (a.power_watts, b.power_watts) {
                (Some(p0), Some(p1)) => Some((p0 + p1) / 2.0),
                (p0, p1) => p0.or(p1),
            };
            let (watts, method) = match (by_energy, by_power) {
                (Some(w), _) => (w, "energy counter"),
                (None, Some(w)) => (w, "power readings"),
                (None, None) => continue,
            };
            if !(watts.is_finite() && watts > 0.0) {
                continue;
            }
            out.push((
                adapter,
                Power {
                    watts,
                    method: method.into(),
                    temperature_celsius: b.temperature_celsius,
                    sm_clock_hertz: b.sm_clock_hertz,
                },
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::fake::FakeSensor;
    use crate::health::GpuIdentity;

    #[test]
    fn watts_from_the_energy_counter_else_power_readings() {
        let s = FakeSensor::new(vec![
            GpuIdentity { index: 0, uuid: "a".into(), name: "A".into(), pci_bus_id: "0000:01:00.0".into() },
            GpuIdentity { index: 1, uuid: "b".into(), name: "B".into(), pci_bus_id: "0000:02:00.0".into() },
            GpuIdentity { index: 2, uuid: "c".into(), name: "C".into(), pci_bus_id: "0000:03:00.0".into() },
        ]);
        let ads: Vec<AdapterRef> = (1..=3)
            .map(|b| AdapterRef { index: b + 10, name: String::new(), pci_bus_id: format!("0000:0{b}:00.0") })
            .collect();
        let mut m = EnergyMeter::new(Box::new(s.clone()), &ads);
        s.set(0, Reading { energy_joules: Some(100.0), power_watts: Some(1.0), ..Reading::default() });
        s.set(1, Reading { power_watts: Some(200.0), ..Reading::default() });
        let w = m.start();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let dt = w.at.elapsed().as_secs_f64();
        s.set(0, Reading { energy_joules: Some(130.0), temperature_celsius: Some(70.0), ..Reading::default() });
        s.set(1, Reading { power_watts: Some(300.0), ..Reading::default() });
        let out = m.finish(w);
        assert_eq!(out.len(), 2, "the GPU with neither figure has none: {out:?}");
        let (a, p) = &out[0];
        assert_eq!((*a, p.method.as_str(), p.temperature_celsius), (11, "energy counter", Some(70.0)));
        // 30 J over a little more than the 100 ms slept.
        assert!(p.watts <= 30.0 / dt && p.watts > 30.0 / (dt + 0.5), "{}", p.watts);
        assert_eq!(
            out[1],
            (
                12,
                Power {
                    watts: 250.0,
                    method: "power readings".into(),
                    temperature_celsius: None,
                    sm_clock_hertz: None
                }
            )
        );
    }
}
