//! Reads every GPU of a sensor once a tick: sets the health metrics and
//! feeds each GPU's thermal guard, whose changes go to the duty cycle in the
//! share of the wgpu adapter on the same device (`gpu::share`), where that
//! adapter's PoW engine reads it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::guard::{Action, ThermalGuard};
use super::metrics::HealthMetrics;
use super::{AdapterRef, GpuSensor, Reading, THROTTLE_REASONS};
use crate::gpu::{AdapterShare, AdapterShares};

/// Seconds between two readings: NVML's power figure is itself averaged
/// over about a second.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GuardConfig {
    /// °C at which a GPU's duty cycle is lowered; `None`: the guard is off.
    pub temp_limit: Option<f64>,
    /// Restore below `temp_limit - hysteresis`.
    pub hysteresis: f64,
}

struct Gpu {
    labels: [String; 2],
    name: String,
    /// The matched wgpu adapter: its label and its share.
    adapter: Option<(String, Arc<AdapterShare>)>,
    guard: Option<ThermalGuard>,
    last_energy: Option<f64>,
    failing: bool,
}

pub struct Monitor {
    sensor: Box<dyn GpuSensor>,
    gpus: Vec<Gpu>,
    metrics: HealthMetrics,
    guard: GuardConfig,
    /// A new guard config from a reload, applied at the next tick.
    pending: GuardHandle,
}

/// Changes a running monitor's thermal guard (a reload of the limit or gap).
#[derive(Clone, Default)]
pub struct GuardHandle(Arc<parking_lot::Mutex<Option<GuardConfig>>>);

impl GuardHandle {
    /// Applied at the monitor's next tick.
    pub fn set(&self, cfg: GuardConfig) {
        *self.0.lock() = Some(cfg);
    }
}

impl Monitor {
    /// Matches the sensor's GPUs to `adapters` and publishes what it knows of
    /// them (`hashrig_gpu_health_info`). The guard of a matched GPU sets the
    /// duty cycle in its adapter's share of `shares`.
    pub fn new(
        sensor: Box<dyn GpuSensor>,
        adapters: &[AdapterRef],
        shares: &AdapterShares,
        guard: &GuardConfig,
        metrics: HealthMetrics,
    ) -> Monitor {
        let matched = super::match_adapters(sensor.gpus(), adapters);
        let h = &metrics;
        if let Some(limit) = guard.temp_limit {
            h.guard_on(limit);
        }
        let gpus = sensor
            .gpus()
            .iter()
            .zip(matched)
            .map(|(g, adapter)| {
                let device = adapter.map_or_else(|| "none".to_string(), crate::gpu::label);
                h.info.with_label_values(&[&g.index.to_string(), &g.uuid, &g.name, &device]).set(1);
                match adapter {
                    Some(_) => tracing::info!("gpu health: NVML GPU {} ({}, {}) is {device}", g.index, g.name, g.uuid),
                    None if guard.temp_limit.is_some() => tracing::warn!(
                        "gpu health: NVML GPU {} ({}, bus {:?}) matches no wgpu adapter; the thermal guard cannot slow it",
                        g.index,
                        g.name,
                        g.pci_bus_id
                    ),
                    None => tracing::info!("gpu health: NVML GPU {} ({}) matches no wgpu adapter", g.index, g.name),
                }
                let adapter = adapter.map(|i| (device.clone(), shares.of(i)));
                if let Some((_, share)) = adapter.as_ref().filter(|_| guard.temp_limit.is_some()) {
                    h.duty_cycle_ratio.with_label_values(&[&device]).set(share.duty());
                }
                Gpu {
                    labels: [g.index.to_string(), g.uuid.clone()],
                    name: g.name.clone(),
                    adapter,
                    guard: guard.temp_limit.map(|l| ThermalGuard::new(l, guard.hysteresis)),
                    last_energy: None,
                    failing: false,
                }
            })
            .collect();
        Monitor { sensor, gpus, metrics, guard: guard.clone(), pending: GuardHandle::default() }
    }

    /// Where a reload sends a new guard config.
    pub fn guard_handle(&self) -> GuardHandle {
        self.pending.clone()
    }

    /// A new limit and gap: GPUs keep the duty cycle they have and move from
    /// there; with the guard turned off they get full speed back.
    pub fn set_guard(&mut self, cfg: &GuardConfig) {
        if *cfg == self.guard {
            return;
        }
        let h = &self.metrics;
        match cfg.temp_limit {
            Some(l) => {
                h.guard_on(l);
                tracing::info!(
                    "thermal guard: GPUs at or above {l} °C slow down, back to full speed below {} °C",
                    l - cfg.hysteresis
                );
            }
            None => {
                h.guard_off();
                tracing::info!("thermal guard: off");
            }
        }
        for g in &mut self.gpus {
            match (cfg.temp_limit, g.guard.as_mut()) {
                (Some(l), Some(guard)) => guard.retarget(l, cfg.hysteresis),
                (Some(l), None) => {
                    g.guard = Some(ThermalGuard::new(l, cfg.hysteresis));
                    if let Some((device, share)) = &g.adapter {
                        h.duty_cycle_ratio.with_label_values(&[device]).set(share.duty());
                    }
                }
                (None, Some(_)) => {
                    g.guard = None;
                    if let Some((device, share)) = &g.adapter {
                        share.set_duty(1.0);
                        h.duty_cycle_ratio.with_label_values(&[device]).set(1.0);
                    }
                }
                (None, None) => {}
            }
        }
        self.guard = cfg.clone();
    }

    /// Reads every GPU once.
    pub fn tick(&mut self) {
        let pending = self.pending.0.lock().take();
        if let Some(cfg) = pending {
            self.set_guard(&cfg);
        }
        for i in 0..self.gpus.len() {
            match self.sensor.read(i) {
                Ok(r) => {
                    if self.gpus[i].failing {
                        tracing::info!("gpu health: NVML GPU {} reads again", self.gpus[i].labels[0]);
                    }
                    self.gpus[i].failing = false;
                    self.record(i, &r);
                }
                Err(e) => {
                    // Logged once per failing spell; the last figures stay.
                    if !self.gpus[i].failing {
                        tracing::warn!("gpu health: {e}");
                    }
                    self.gpus[i].failing = true;
                }
            }
        }
    }

    fn record(&mut self, i: usize, r: &Reading) {
        let h = &self.metrics;
        let g = &mut self.gpus[i];
        let l = [g.labels[0].as_str(), g.labels[1].as_str()];
        let set = |v: &prometheus::GaugeVec, x: Option<f64>| {
            if let Some(x) = x.filter(|x| x.is_finite()) {
                v.with_label_values(&l).set(x);
            }
        };
        set(&h.temperature_celsius, r.temperature_celsius);
        set(&h.power_watts, r.power_watts);
        set(&h.sm_clock_hertz, r.sm_clock_hertz);
        set(&h.memory_clock_hertz, r.memory_clock_hertz);
        set(&h.fan_speed_ratio, r.fan_speed_ratio);
        if let Some(e) = r.energy_joules.filter(|e| e.is_finite() && *e >= 0.0) {
            // The counter goes up by what NVML's went up by; a driver reload
            // (NVML's counter back near 0) adds nothing.
            let delta = match g.last_energy {
                None => e,
                Some(prev) => (e - prev).max(0.0),
            };
            h.energy_joules.with_label_values(&l).inc_by(delta);
            g.last_energy = Some(e);
        }
        if let Some(active) = &r.throttle_reasons {
            for reason in THROTTLE_REASONS {
                h.throttled.with_label_values(&[l[0], l[1], reason]).set(i64::from(active.contains(&reason)));
            }
        }
        let (Some(guard), Some((device, share))) = (g.guard.as_mut(), g.adapter.as_ref()) else { return };
        let Some(c) = guard.observe(r.temperature_celsius) else { return };
        share.set_duty(c.to);
        h.duty_cycle_ratio.with_label_values(&[device]).set(c.to);
        h.thermal_guard.with_label_values(&[device, c.action.label()]).inc();
        let t = r.temperature_celsius.unwrap_or(f64::NAN);
        match c.action {
            Action::Lowered => tracing::warn!(
                "{device} ({}) at {t:.0} °C: thermal guard lowers its duty cycle {:.0}% → {:.0}%",
                g.name,
                c.from * 100.0,
                c.to * 100.0
            ),
            Action::Raised if c.to >= 1.0 => {
                tracing::info!("{device} ({}) at {t:.0} °C: thermal guard restores full speed", g.name)
            }
            Action::Raised => tracing::info!(
                "{device} ({}) at {t:.0} °C: thermal guard raises its duty cycle {:.0}% → {:.0}%",
                g.name,
                c.from * 100.0,
                c.to * 100.0
            ),
        }
    }

    /// Ticks every `interval` on this thread until `stop`; then the
    /// adapters it slowed get their full duty cycle back.
    pub fn run(mut self, interval: Duration, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            self.tick();
            let mut slept = Duration::ZERO;
            while slept < interval && !stop.load(Ordering::Relaxed) {
                let step = Duration::from_millis(100).min(interval - slept);
                std::thread::sleep(step);
                slept += step;
            }
        }
        for g in &self.gpus {
            if let (Some(_), Some((_, share))) = (&g.guard, &g.adapter) {
                share.set_duty(1.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::fake::FakeSensor;
    use crate::health::GpuIdentity;

    fn sample(body: &str, prefix: &str) -> Option<f64> {
        body.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Health metrics in a Registry of their own, and its text exposition.
    fn metrics() -> (prometheus::Registry, HealthMetrics) {
        let r = prometheus::Registry::new();
        let h = HealthMetrics::register(&r);
        (r, h)
    }

    fn render(r: &prometheus::Registry) -> String {
        let mut buf = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("utf-8")
    }

    fn fake() -> FakeSensor {
        FakeSensor::new(vec![
            GpuIdentity {
                index: 0,
                uuid: "GPU-aaaa".into(),
                name: "Fake H200".into(),
                pci_bus_id: "0000:17:00.0".into(),
            },
            GpuIdentity { index: 1, uuid: "GPU-bbbb".into(), name: "Fake L4".into(), pci_bus_id: String::new() },
        ])
    }

    /// Readings become metrics with Prometheus' unit names; missing figures
    /// are not exported; the energy counter follows NVML's.
    #[test]
    fn readings_become_metrics() {
        let (registry, metrics) = metrics();
        let s = fake();
        let adapters = [AdapterRef { index: 61, name: "Fake H200".into(), pci_bus_id: "0000:17:00.0".into() }];
        let shares = AdapterShares::new();
        let mut m = Monitor::new(Box::new(s.clone()), &adapters, &shares, &GuardConfig::default(), metrics);
        s.set(
            0,
            Reading {
                temperature_celsius: Some(61.0),
                power_watts: Some(412.5),
                energy_joules: Some(1000.0),
                sm_clock_hertz: Some(1.98e9),
                memory_clock_hertz: Some(3.2e9),
                fan_speed_ratio: None,
                throttle_reasons: Some(vec!["sw_power_cap"]),
            },
        );
        m.tick();
        s.set(0, Reading { energy_joules: Some(1400.0), ..Reading::default() });
        s.fail(1, "GPU is lost");
        m.tick();
        let body = render(&registry);
        let l = "{gpu=\"0\",uuid=\"GPU-aaaa\"}";
        assert_eq!(sample(&body, &format!("hashrig_gpu_temperature_celsius{l}")), Some(61.0), "{body}");
        assert_eq!(sample(&body, &format!("hashrig_gpu_power_watts{l}")), Some(412.5));
        assert_eq!(sample(&body, &format!("hashrig_gpu_energy_joules_total{l}")), Some(1400.0));
        assert_eq!(sample(&body, &format!("hashrig_gpu_sm_clock_hertz{l}")), Some(1.98e9));
        assert_eq!(
            sample(&body, "hashrig_gpu_throttled{gpu=\"0\",reason=\"sw_power_cap\",uuid=\"GPU-aaaa\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&body, "hashrig_gpu_throttled{gpu=\"0\",reason=\"hw_thermal\",uuid=\"GPU-aaaa\"}"),
            Some(0.0)
        );
        assert!(!body.contains("hashrig_gpu_fan_speed_ratio{"), "no fan reported, none exported");
        assert!(
            body.contains("hashrig_gpu_health_info{device=\"gpu61\",gpu=\"0\",name=\"Fake H200\",uuid=\"GPU-aaaa\"} 1")
        );
        assert!(
            body.contains("hashrig_gpu_health_info{device=\"none\",gpu=\"1\",name=\"Fake L4\",uuid=\"GPU-bbbb\"} 1")
        );
        assert!(!body.contains("hashrig_gpu_temperature_celsius{gpu=\"1\""));
        assert!(!body.contains("hashrig_gpu_temp_limit_celsius"), "guard off");
    }

    /// A GPU above the limit is slowed through its adapter's duty cycle, and
    /// restored once cool; each change is counted.
    #[test]
    fn the_guard_slows_a_hot_gpu_and_restores_it() {
        let (registry, metrics) = metrics();
        let s = fake();
        let adapters = [
            AdapterRef { index: 62, name: "Fake H200".into(), pci_bus_id: "0000:17:00.0".into() },
            AdapterRef { index: 63, name: "Fake L4".into(), pci_bus_id: String::new() },
        ];
        let cfg = GuardConfig { temp_limit: Some(83.0), hysteresis: 5.0 };
        let shares = AdapterShares::new();
        let (s62, s63) = (shares.of(62), shares.of(63));
        let mut m = Monitor::new(Box::new(s.clone()), &adapters, &shares, &cfg, metrics);
        s.set_temperature(0, 70.0);
        s.set_temperature(1, 70.0);
        m.tick();
        assert_eq!((s62.duty(), s63.duty()), (1.0, 1.0));
        s.set_temperature(0, 84.0);
        m.tick();
        m.tick();
        assert_eq!(s62.duty(), 0.49);
        assert_eq!(s63.duty(), 1.0, "the other GPU is cool");
        assert_eq!(s62.pause_after(Duration::from_millis(49)), Some(Duration::from_millis(51)));
        s.set_temperature(0, 80.0); // inside the gap: held
        m.tick();
        assert_eq!(s62.duty(), 0.49);
        s.set_temperature(0, 60.0);
        for _ in 0..10 {
            m.tick();
        }
        assert_eq!(s62.duty(), 1.0);
        let body = render(&registry);
        let d = "device=\"gpu62\"";
        assert_eq!(sample(&body, &format!("hashrig_gpu_thermal_guard_total{{action=\"lowered\",{d}}}")), Some(2.0));
        assert_eq!(sample(&body, &format!("hashrig_gpu_thermal_guard_total{{action=\"raised\",{d}}}")), Some(6.0));
        assert_eq!(sample(&body, &format!("hashrig_gpu_duty_cycle_ratio{{{d}}}")), Some(1.0));
        assert_eq!(sample(&body, "hashrig_gpu_temp_limit_celsius"), Some(83.0));
    }

    /// A reload's new limit reaches the running guard: a cooler limit raises
    /// the GPU from where it is, and turning the guard off restores full
    /// speed and drops the limit's gauge.
    #[test]
    fn a_new_limit_applies_at_the_next_reading() {
        let (registry, metrics) = metrics();
        let s = fake();
        let adapters = [AdapterRef { index: 60, name: "Fake H200".into(), pci_bus_id: "0000:17:00.0".into() }];
        let shares = AdapterShares::new();
        let s60 = shares.of(60);
        let mut m = Monitor::new(Box::new(s.clone()), &adapters, &shares, &GuardConfig::default(), metrics);
        let handle = m.guard_handle();
        s.set_temperature(0, 84.0);
        m.tick();
        assert_eq!(s60.duty(), 1.0, "guard off");
        handle.set(GuardConfig { temp_limit: Some(83.0), hysteresis: 5.0 });
        m.tick();
        assert_eq!(s60.duty(), 0.7);
        assert_eq!(sample(&render(&registry), "hashrig_gpu_temp_limit_celsius"), Some(83.0));
        handle.set(GuardConfig { temp_limit: Some(95.0), hysteresis: 5.0 });
        m.tick();
        assert_eq!(s60.duty(), 0.8, "raised from where it was");
        handle.set(GuardConfig { temp_limit: None, hysteresis: 5.0 });
        m.tick();
        assert_eq!(s60.duty(), 1.0);
        assert!(!render(&registry).contains("hashrig_gpu_temp_limit_celsius"));
    }
}
