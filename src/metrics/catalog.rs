//! Every metric family hashrig declares, whether or not it has a series yet
//! (a labelled family appears in a scrape only once a label set is used):
//! what tools/monitoring/ may name, checked by tests/monitoring.rs.

use prometheus::core::Collector;
use prometheus::proto::MetricType;
use serde::Serialize;

use super::{GpuMetrics, Metrics, Probes, RuntimeMetrics, SigGpuMetrics};
use crate::health::metrics::HealthMetrics;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Family {
    pub name: String,
    /// "counter", "gauge" or "histogram".
    pub kind: &'static str,
    pub help: String,
}

impl Family {
    /// The names its samples carry: a histogram's `_bucket`, `_sum`, `_count`.
    pub fn sample_names(&self) -> Vec<String> {
        match self.kind {
            "histogram" => ["_bucket", "_sum", "_count"].iter().map(|s| format!("{}{s}", self.name)).collect(),
            _ => vec![self.name.clone()],
        }
    }
}

impl Metrics {
    /// Every family declared, sorted by name.
    pub fn families(&self) -> Vec<Family> {
        // No `..`: a new field fails to compile here until it is listed.
        let Metrics {
            registry: _,
            hashes,
            jobs,
            shares,
            blocks,
            hardware_errors,
            job_switch_seconds,
            hits_dropped,
            self_tests,
            worker_info,
            worker_pinned,
            chain_height,
            share_difficulty,
            build_info,
            sig_batch_seconds,
            sig_verdicts,
            sig_batches,
            sig_deadline_missed,
            sig_queued_items,
            sigserve_connections,
            sigserve_frames,
            sigserve_tls_handshake_failures,
            sigserve_closed,
            pool_connected,
            pool_difficulty,
            pool_difficulty_clamped,
            pool_shares_found,
            pool_shares,
            pool_protocol_shares,
            pool_role_shares,
            pool_block_candidates,
            pool_shares_queued,
            pool_stale_ratio,
            pool_submit_seconds,
            pool_reconnects,
            pool_failovers,
            gbt_templates,
            block_submit_answers,
            rpc_errors,
            gpu,
            sig_gpu,
            runtime,
            health,
            probes,
        } = self;
        // `..`: the probes' private state, which is not a metric.
        let Probes { ready, draining, requests, .. } = probes;
        let RuntimeMetrics { config_reloads, upgrades } = runtime;
        let GpuMetrics { adapter_info, device_lost, dispatch_seconds, hit_overflows } = gpu;
        let SigGpuMetrics {
            engine_items,
            batch_seconds,
            prediction_ratio,
            rechecks,
            mismatches,
            active,
            l0_seconds,
            item_seconds,
        } = sig_gpu;
        let HealthMetrics {
            info,
            temperature_celsius,
            power_watts,
            energy_joules,
            sm_clock_hertz,
            memory_clock_hertz,
            fan_speed_ratio,
            throttled,
            duty_cycle_ratio,
            thermal_guard,
            temp_limit_celsius,
            registry: _, // where they are, not one of them
        } = health;
        let all: [&dyn Collector; 66] = [
            ready,
            draining,
            requests,
            config_reloads,
            upgrades,
            hashes,
            jobs,
            shares,
            blocks,
            hardware_errors,
            job_switch_seconds,
            hits_dropped,
            self_tests,
            worker_info,
            worker_pinned,
            chain_height,
            share_difficulty,
            build_info,
            sig_batch_seconds,
            sig_verdicts,
            sig_batches,
            sig_deadline_missed,
            sig_queued_items,
            sigserve_connections,
            sigserve_frames,
            sigserve_tls_handshake_failures,
            sigserve_closed,
            pool_connected,
            pool_difficulty,
            pool_difficulty_clamped,
            pool_shares_found,
            pool_shares,
            pool_protocol_shares,
            pool_role_shares,
            pool_block_candidates,
            pool_shares_queued,
            pool_stale_ratio,
            pool_submit_seconds,
            pool_reconnects,
            pool_failovers,
            gbt_templates,
            block_submit_answers,
            rpc_errors,
            adapter_info,
            device_lost,
            dispatch_seconds,
            hit_overflows,
            engine_items,
            batch_seconds,
            prediction_ratio,
            rechecks,
            mismatches,
            active,
            l0_seconds,
            item_seconds,
            info,
            temperature_celsius,
            power_watts,
            energy_joules,
            sm_clock_hertz,
            memory_clock_hertz,
            fan_speed_ratio,
            throttled,
            duty_cycle_ratio,
            thermal_guard,
            temp_limit_celsius,
        ];
        let mut out: Vec<Family> = all
            .iter()
            .flat_map(|c| c.collect())
            .map(|mf| Family {
                name: mf.name().to_string(),
                kind: match mf.get_field_type() {
                    MetricType::COUNTER => "counter",
                    MetricType::GAUGE => "gauge",
                    MetricType::HISTOGRAM => "histogram",
                    MetricType::SUMMARY => "summary",
                    MetricType::UNTYPED => "untyped",
                },
                help: mf.help().to_string(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_listed_once_and_named_by_the_conventions() {
        let m = Metrics::new();
        let f = m.families();
        let mut names: Vec<&str> = f.iter().map(|x| x.name.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), f.len(), "a family listed twice");
        for x in &f {
            assert!(x.name.starts_with("hashrig_"), "{}", x.name);
            assert_eq!(
                x.kind == "counter",
                x.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                x.name
            );
            assert!(!x.help.is_empty(), "{}", x.name);
        }
        // Everything a scrape shows is listed (the info series always has one).
        m.build_info.with_label_values(&["0", "x"]).set(1);
        for l in m.render().lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(f.iter().any(|x| x.sample_names().iter().any(|s| s == name)), "{name} not listed");
        }
    }
}
