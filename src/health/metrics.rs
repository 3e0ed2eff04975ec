//! GPU health series, registered in the one Registry by `Metrics::new`.
//!
//! Labels: `gpu` is the sensor's (NVML's) index and `uuid` the GPU's UUID,
//! a fixed set per machine; `device` is the wgpu adapter label the engines
//! use ("gpu0"), joined through `hashrig_gpu_health_info`. Nothing is
//! exported for a GPU until its first reading, so a machine without NVML
//! exports none of these.

use prometheus::{CounterVec, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct HealthMetrics {
    /// One series per GPU read, value 1: name and the adapter it was matched to.
    pub info: IntGaugeVec,
    pub temperature_celsius: GaugeVec,
    pub power_watts: GaugeVec,
    /// NVML's energy counter (since the driver loaded), as a counter.
    pub energy_joules: CounterVec,
    pub sm_clock_hertz: GaugeVec,
    pub memory_clock_hertz: GaugeVec,
    pub fan_speed_ratio: GaugeVec,
    /// 1 while the clocks are held down for `reason`, else 0.
    pub throttled: IntGaugeVec,
    /// The duty cycle the thermal guard allows the PoW engine, by device.
    pub duty_cycle_ratio: GaugeVec,
    /// Thermal guard changes of the duty cycle, by device and action ("lowered", "raised").
    pub thermal_guard: IntCounterVec,
    /// The `--gpu-temp-limit` in force (absent when the guard is off).
    pub temp_limit_celsius: prometheus::Gauge,
    /// The Registry these are in, where [`HealthMetrics::guard_on`] adds
    /// the limit.
    pub(crate) registry: Registry,
}

fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> GaugeVec {
    reg(r, GaugeVec::new(Opts::new(name, help), &["gpu", "uuid"]).expect("static metric definition"))
}

impl HealthMetrics {
    pub fn register(r: &Registry) -> HealthMetrics {
        let info = reg(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "hashrig_gpu_health_info",
                    "GPUs whose health is read, and the adapter that mines on each (value is always 1).",
                ),
                &["gpu", "uuid", "name", "device"],
            )
            .expect("static metric definition"),
        );
        let energy_joules = reg(
            r,
            CounterVec::new(
                Opts::new("hashrig_gpu_energy_joules_total", "Energy the GPU used since its driver loaded."),
                &["gpu", "uuid"],
            )
            .expect("static metric definition"),
        );
        let throttled = reg(
            r,
            IntGaugeVec::new(
                Opts::new("hashrig_gpu_throttled", "1 while the GPU's clocks are held down for this reason."),
                &["gpu", "uuid", "reason"],
            )
            .expect("static metric definition"),
        );
        let duty_cycle_ratio = reg(
            r,
            GaugeVec::new(
                Opts::new(
                    "hashrig_gpu_duty_cycle_ratio",
                    "Share of time the thermal guard lets the PoW engine keep the GPU busy.",
                ),
                &["device"],
            )
            .expect("static metric definition"),
        );
        let thermal_guard = reg(
            r,
            IntCounterVec::new(
                Opts::new("hashrig_gpu_thermal_guard_total", "Duty cycle changes made by the thermal guard."),
                &["device", "action"],
            )
            .expect("static metric definition"),
        );
        // A gauge with no labels is always exported; registered only once
        // the guard is on (`guard_on`), so it says whether it is.
        let temp_limit_celsius =
            prometheus::Gauge::new("hashrig_gpu_temp_limit_celsius", "The thermal guard's limit (--gpu-temp-limit).")
                .expect("static metric definition");
        HealthMetrics {
            info,
            temperature_celsius: gauge(r, "hashrig_gpu_temperature_celsius", "GPU die temperature."),
            power_watts: gauge(r, "hashrig_gpu_power_watts", "GPU board power draw."),
            energy_joules,
            sm_clock_hertz: gauge(r, "hashrig_gpu_sm_clock_hertz", "Streaming multiprocessor clock."),
            memory_clock_hertz: gauge(r, "hashrig_gpu_memory_clock_hertz", "GPU memory clock."),
            fan_speed_ratio: gauge(r, "hashrig_gpu_fan_speed_ratio", "Fan speed, share of its maximum."),
            throttled,
            duty_cycle_ratio,
            thermal_guard,
            temp_limit_celsius,
            registry: r.clone(),
        }
    }

    /// The thermal guard is on at `limit`: `hashrig_gpu_temp_limit_celsius`
    /// is exported from now on.
    pub fn guard_on(&self, limit: f64) {
        // Already there when a second monitor shares these metrics.
        let _ = self.registry.register(Box::new(self.temp_limit_celsius.clone()));
        self.temp_limit_celsius.set(limit);
    }

    /// The guard is off: no limit is exported.
    pub fn guard_off(&self) {
        let _ = self.registry.unregister(Box::new(self.temp_limit_celsius.clone()));
    }
}
