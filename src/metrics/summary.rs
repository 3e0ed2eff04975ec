//! `/api/summary`: what a person or a script wants at a glance (as xmrig's
//! `/1/summary`), as one JSON object built from the same Registry `/metrics`
//! serves: version, uptime, hashrate windows per engine, shares, the active
//! pool, blocks, hardware errors, signature rates and latencies per scheme
//! and engine, GPU health.
//!
//! Rates and latencies over windows need history, so the registry is
//! sampled once a second ([`Summary::tick`], driven by the metrics server):
//! a minute of every series, 15 minutes of the hash counters. A window the
//! run has not lasted (90% of it) is `null`, never a guess.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::proto::MetricType;
use serde_json::{json, Value};

use super::Metrics;

/// Labels of one series, sorted by name (as the registry gathers them).
type Labels = Vec<(String, String)>;

#[derive(Clone, Debug, Default)]
struct Hist {
    count: u64,
    sum: f64,
    /// (upper bound, cumulative count), ascending; +Inf is `count`.
    buckets: Vec<(f64, u64)>,
}

#[derive(Clone, Debug)]
enum Val {
    Scalar(f64),
    Hist(Hist),
}

/// Every series of the registry at one instant.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    series: BTreeMap<String, Vec<(Labels, Val)>>,
}

impl Snapshot {
    fn take(m: &Metrics) -> Snapshot {
        let mut series = BTreeMap::new();
        for mf in m.registry.gather() {
            let kind = mf.get_field_type();
            let rows: Vec<(Labels, Val)> = mf
                .get_metric()
                .iter()
                .map(|x| {
                    let labels = x.get_label().iter().map(|l| (l.name().to_string(), l.value().to_string())).collect();
                    let v = match kind {
                        MetricType::COUNTER => Val::Scalar(x.get_counter().get_value()),
                        MetricType::HISTOGRAM => {
                            let h = x.get_histogram();
                            Val::Hist(Hist {
                                count: h.get_sample_count(),
                                sum: h.get_sample_sum(),
                                buckets: h
                                    .get_bucket()
                                    .iter()
                                    .map(|b| (b.upper_bound(), b.cumulative_count()))
                                    .collect(),
                            })
                        }
                        _ => Val::Scalar(x.get_gauge().get_value()),
                    };
                    (labels, v)
                })
                .collect();
            series.insert(mf.name().to_string(), rows);
        }
        Snapshot { series }
    }

    /// Series of `name` whose labels include every pair of `filter`.
    fn rows<'a>(&'a self, name: &str, filter: &'a [(&str, &str)]) -> impl Iterator<Item = (&'a Labels, &'a Val)> {
        self.series
            .get(name)
            .into_iter()
            .flatten()
            .filter(move |(l, _)| filter.iter().all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v)))
            .map(|(l, v)| (l, v))
    }

    /// Sum of the scalar series of `name` matching `filter`.
    fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        // (from +0.0: an empty f64 sum is -0.0)
        self.rows(name, filter).fold(0.0, |a, (_, v)| a + if let Val::Scalar(x) = v { *x } else { 0.0 })
    }

    /// The histograms of `name` matching `filter`, added together.
    fn hist(&self, name: &str, filter: &[(&str, &str)]) -> Hist {
        let mut out = Hist::default();
        for (_, v) in self.rows(name, filter) {
            if let Val::Hist(h) = v {
                out.count += h.count;
                out.sum += h.sum;
                if out.buckets.is_empty() {
                    out.buckets = h.buckets.clone();
                } else {
                    for (o, b) in out.buckets.iter_mut().zip(&h.buckets) {
                        o.1 += b.1;
                    }
                }
            }
        }
        out
    }

    /// The distinct values of label `key` among the series of `name`.
    fn label_values(&self, name: &str, key: &str) -> Vec<String> {
        let mut v: Vec<String> = self.rows(name, &[]).filter_map(|(l, _)| label(l, key).map(str::to_string)).collect();
        v.sort();
        v.dedup();
        v
    }
}

fn label<'a>(l: &'a Labels, key: &str) -> Option<&'a str> {
    l.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

impl Hist {
    /// `later − self`: the observations made in between.
    fn delta(&self, later: &Hist) -> Hist {
        let buckets = if self.buckets.len() == later.buckets.len() {
            later.buckets.iter().zip(&self.buckets).map(|(l, e)| (l.0, l.1.saturating_sub(e.1))).collect()
        } else {
            later.buckets.clone()
        };
        Hist { count: later.count.saturating_sub(self.count), sum: later.sum - self.sum, buckets }
    }

    /// The `q` quantile, interpolated within its bucket as Prometheus'
    /// `histogram_quantile` does; `None` with no observation.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q * self.count as f64;
        let (mut lower, mut below) = (0.0, 0u64);
        for &(bound, cum) in &self.buckets {
            if cum as f64 >= rank {
                let inside = (cum - below) as f64;
                let frac = if inside > 0.0 { (rank - below as f64) / inside } else { 1.0 };
                return Some(lower + (bound - lower) * frac);
            }
            (lower, below) = (bound, cum);
        }
        // In the +Inf bucket: the highest finite bound, as Prometheus answers.
        Some(lower)
    }

    fn json(&self, window: f64) -> Value {
        json!({
            "window_seconds": window,
            "count": self.count,
            "mean_seconds": (self.count > 0).then(|| self.sum / self.count as f64),
            "p50_seconds": self.quantile(0.5),
            "p99_seconds": self.quantile(0.99),
        })
    }
}

/// The hash counters over 15 minutes for the long window.
type HashSample = (Instant, Snapshot);

const SHORT_HISTORY: Duration = Duration::from_secs(65);
const LONG_HISTORY: Duration = Duration::from_secs(15 * 60 + 5);
const TICK: Duration = Duration::from_secs(1);

/// Hashrate windows, as the status line prints them.
const HASH_WINDOWS: [(&str, u64); 3] = [("10s", 10), ("60s", 60), ("15m", 900)];
/// Signature rate windows.
const SIG_WINDOWS: [(&str, u64); 2] = [("10s", 10), ("60s", 60)];
/// Latency quantiles are taken over the last minute.
const LATENCY_WINDOW: Duration = Duration::from_secs(60);

pub struct Summary {
    metrics: Arc<Metrics>,
    started: Instant,
    history: Mutex<History>,
}

#[derive(Default)]
struct History {
    last_tick: Option<Instant>,
    /// Every series, for one minute.
    short: VecDeque<(Instant, Snapshot)>,
    /// Only `hashrig_hashes_total`, for 15 minutes.
    long: VecDeque<HashSample>,
}

impl Summary {
    pub fn new(metrics: Arc<Metrics>) -> Summary {
        let s = Summary { metrics, started: Instant::now(), history: Mutex::new(History::default()) };
        s.tick();
        s
    }

    /// Samples the registry if a second has passed since the last sample.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut h = self.history.lock();
        if h.last_tick.is_some_and(|t| now.duration_since(t) < TICK) {
            return;
        }
        h.last_tick = Some(now);
        let snap = Snapshot::take(&self.metrics);
        let hashes = Snapshot {
            series: snap
                .series
                .get("hashrig_hashes_total")
                .map(|r| ("hashrig_hashes_total".to_string(), r.clone()))
                .into_iter()
                .collect(),
        };
        h.short.push_back((now, snap));
        h.long.push_back((now, hashes));
        while h.short.front().is_some_and(|(t, _)| now.duration_since(*t) > SHORT_HISTORY) {
            h.short.pop_front();
        }
        while h.long.front().is_some_and(|(t, _)| now.duration_since(*t) > LONG_HISTORY) {
            h.long.pop_front();
        }
    }

    /// The summary now.
    pub fn json(&self) -> Value {
        let now = Instant::now();
        let cur = Snapshot::take(&self.metrics);
        let h = self.history.lock();
        // Latency over the last minute; since the start while the run is younger.
        let lat_base = h
            .short
            .front()
            .filter(|(t, _)| now.duration_since(*t) > LATENCY_WINDOW)
            .and_then(|_| h.short.iter().find(|(t, _)| now.duration_since(*t) <= LATENCY_WINDOW));
        let v = View {
            now,
            uptime: now.duration_since(self.started).as_secs_f64(),
            cur: &cur,
            short: &h.short,
            long: &h.long,
            lat_base,
        };
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": v.uptime,
            "readiness": self.metrics.probes.json(),
            "hashrate": v.hashrate(),
            "shares": v.by_label("hashrig_shares_total", "result"),
            "pool": v.pool(),
            "blocks": v.by_label("hashrig_blocks_total", "result"),
            "chain_height": v.gauge("hashrig_chain_height"),
            "hardware_errors": { "total": cur.sum("hashrig_hardware_errors_total", &[]), "by_device": v.hardware_errors() },
            "signatures": {
                "queued_items": cur.sum("hashrig_sig_queued_items", &[]),
                "schemes": v.sig_schemes(),
                "engines": v.sig_engines(),
            },
            "gpus": v.gpus(),
            "gpu_temp_limit_celsius": v.gauge("hashrig_gpu_temp_limit_celsius"),
        })
    }
}

/// The registry now beside its history: what each section of the summary
/// is computed from.
struct View<'a> {
    now: Instant,
    uptime: f64,
    cur: &'a Snapshot,
    short: &'a VecDeque<(Instant, Snapshot)>,
    long: &'a VecDeque<HashSample>,
    /// The sample latencies are measured from (`None`: since the start).
    lat_base: Option<&'a (Instant, Snapshot)>,
}

/// A scalar series' value (histograms have none).
fn scalar(v: &Val) -> Option<f64> {
    match v {
        Val::Scalar(x) => Some(*x),
        Val::Hist(_) => None,
    }
}

impl View<'_> {
    /// The oldest sample within `w` of now, if the run has lasted 90% of `w`.
    fn base(&self, q: &VecDeque<(Instant, Snapshot)>, w: Duration) -> Option<(f64, Snapshot)> {
        let (t_first, _) = q.front()?;
        if self.now.duration_since(*t_first) < w.mul_f64(0.9) {
            return None;
        }
        let (t, s) = q.iter().find(|(t, _)| self.now.duration_since(*t) <= w)?;
        let dt = self.now.duration_since(*t).as_secs_f64();
        (dt > 0.0).then(|| (dt, s.clone()))
    }

    fn rate(&self, q: &VecDeque<(Instant, Snapshot)>, w: u64, name: &str, f: &[(&str, &str)]) -> Option<f64> {
        let (dt, old) = self.base(q, Duration::from_secs(w))?;
        Some(((self.cur.sum(name, f) - old.sum(name, f)) / dt).max(0.0))
    }

    fn windows(&self, q: &VecDeque<(Instant, Snapshot)>, ws: &[(&str, u64)], name: &str, f: &[(&str, &str)]) -> Value {
        let mut m = serde_json::Map::new();
        for &(k, w) in ws {
            m.insert(k.to_string(), json!(self.rate(q, w, name, f)));
        }
        Value::Object(m)
    }

    fn latency(&self, name: &str, f: &[(&str, &str)]) -> Value {
        let now_h = self.cur.hist(name, f);
        match self.lat_base {
            Some((t, old)) => old.hist(name, f).delta(&now_h).json(self.now.duration_since(*t).as_secs_f64()),
            None => now_h.json(self.uptime),
        }
    }

    fn by_label(&self, name: &str, key: &str) -> Value {
        let mut m = serde_json::Map::new();
        for v in self.cur.label_values(name, key) {
            m.insert(v.clone(), json!(self.cur.sum(name, &[(key, &v)])));
        }
        Value::Object(m)
    }

    /// A gauge's value, `None` where the series does not exist.
    fn gauge(&self, name: &str) -> Option<f64> {
        self.cur.series.contains_key(name).then(|| self.cur.sum(name, &[]))
    }

    /// Hashrate in total and per engine.
    fn hashrate(&self) -> Value {
        let mut engines = Vec::new();
        for (l, v) in self.cur.rows("hashrig_hashes_total", &[]) {
            let (Some(engine), Some(device), Val::Scalar(total)) = (label(l, "engine"), label(l, "device"), v) else {
                continue;
            };
            let f = [("engine", engine), ("device", device)];
            engines.push(json!({
                "engine": engine,
                "device": device,
                "hashes_total": total,
                "hashes_per_second": self.windows(self.long, &HASH_WINDOWS, "hashrig_hashes_total", &f),
            }));
        }
        json!({
            "total": self.windows(self.long, &HASH_WINDOWS, "hashrig_hashes_total", &[]),
            "engines": engines,
        })
    }

    /// The pools: which is active, shares, failovers; `None` without pools.
    fn pool(&self) -> Option<Value> {
        let cur = self.cur;
        let roles = cur.label_values("hashrig_pool_connected", "role");
        if roles.is_empty() {
            return None;
        }
        let connected = |r: &str| cur.sum("hashrig_pool_connected", &[("role", r)]) >= 1.0;
        let active = ["primary", "backup"].into_iter().find(|r| connected(r));
        let shares: Vec<Value> = cur
            .rows("hashrig_pool_shares_total", &[])
            .filter_map(|(l, v)| {
                scalar(v).map(|n| json!({"result": label(l, "result"), "reason": label(l, "reason"), "count": n}))
            })
            .collect();
        let by_pool = |r: &String| -> Value {
            let by_result: serde_json::Map<String, Value> = cur
                .rows("hashrig_pool_role_shares_total", &[("role", r)])
                .filter_map(|(l, v)| Some((label(l, "result")?.to_string(), json!(scalar(v)?))))
                .collect();
            Value::Object(by_result)
        };
        Some(json!({
            "active": active,
            "connected": roles.iter().map(|r| (r.clone(), json!(connected(r)))).collect::<serde_json::Map<_, _>>(),
            "difficulty": cur.sum("hashrig_pool_difficulty", &[]),
            "shares": shares,
            "shares_by_pool": roles.iter().map(|r| (r.clone(), by_pool(r))).collect::<serde_json::Map<_, _>>(),
            "stale_ratio": cur.sum("hashrig_pool_stale_ratio", &[]),
            "failovers": self.by_label("hashrig_pool_failovers_total", "direction"),
            "reconnects": self.by_label("hashrig_pool_reconnects_total", "cause"),
            "submit_latency": self.latency("hashrig_pool_submit_seconds", &[]),
        }))
    }

    /// Hardware errors per engine and device.
    fn hardware_errors(&self) -> Vec<Value> {
        self.cur
            .rows("hashrig_hardware_errors_total", &[])
            .filter_map(|(l, v)| {
                scalar(v).map(|n| json!({"engine": label(l, "engine"), "device": label(l, "device"), "count": n}))
            })
            .collect()
    }

    /// Verdicts, rates and latency per scheme. Batches of several schemes
    /// are timed as "mixed": a row of their own.
    fn sig_schemes(&self) -> Vec<Value> {
        let cur = self.cur;
        let mut names = cur.label_values("hashrig_sig_verdicts_total", "scheme");
        names.extend(cur.label_values("hashrig_sig_batch_seconds", "scheme"));
        names.sort();
        names.dedup();
        names
            .iter()
            .map(|s| {
                let f = [("scheme", s.as_str())];
                let verdicts =
                    |result: &str| cur.sum("hashrig_sig_verdicts_total", &[("scheme", s), ("result", result)]);
                json!({
                    "scheme": s,
                    "verdicts": {
                        "valid": verdicts("valid"),
                        "invalid": verdicts("invalid"),
                        "malformed": verdicts("malformed"),
                    },
                    "items_per_second": self.windows(self.short, &SIG_WINDOWS, "hashrig_sig_verdicts_total", &f),
                    "batch_latency": self.latency("hashrig_sig_batch_seconds", &f),
                    "deadline_missed": cur.sum("hashrig_sig_deadline_missed_total", &f),
                })
            })
            .collect()
    }

    /// Items and rates per signature engine; a GPU's dispatch latency and
    /// trust state beside its own.
    fn sig_engines(&self) -> Vec<Value> {
        let cur = self.cur;
        cur.label_values("hashrig_sig_engine_items_total", "engine")
            .iter()
            .map(|e| {
                let f = [("engine", e.as_str())];
                let mut v = json!({
                    "engine": e,
                    "items_total": cur.sum("hashrig_sig_engine_items_total", &f),
                    "items_per_second": self.windows(self.short, &SIG_WINDOWS, "hashrig_sig_engine_items_total", &f),
                });
                if e.starts_with("gpu") {
                    let d = [("device", e.as_str())];
                    v["dispatch_latency"] = self.latency("hashrig_sig_gpu_batch_seconds", &d);
                    v["active"] = json!(cur.sum("hashrig_sig_gpu_active", &d) >= 1.0);
                    v["mismatches"] = json!(cur.sum("hashrig_sig_gpu_mismatches_total", &d));
                }
                v
            })
            .collect()
    }

    /// GPU health as NVML reports it, and the thermal guard's duty cycle.
    fn gpus(&self) -> Vec<Value> {
        let cur = self.cur;
        cur.rows("hashrig_gpu_health_info", &[])
            .map(|(l, _)| {
                let (gpu, uuid) = (label(l, "gpu").unwrap_or(""), label(l, "uuid").unwrap_or(""));
                let device = label(l, "device").unwrap_or("none");
                let f = [("gpu", gpu), ("uuid", uuid)];
                let one = |name: &str| cur.rows(name, &f).next().and_then(|(_, v)| scalar(v));
                let throttled: Vec<&str> = cur
                    .rows("hashrig_gpu_throttled", &f)
                    .filter(|(_, v)| matches!(v, Val::Scalar(x) if *x >= 1.0))
                    .filter_map(|(l, _)| label(l, "reason"))
                    .collect();
                json!({
                    "gpu": gpu,
                    "uuid": uuid,
                    "name": label(l, "name"),
                    "device": device,
                    "temperature_celsius": one("hashrig_gpu_temperature_celsius"),
                    "power_watts": one("hashrig_gpu_power_watts"),
                    "energy_joules": one("hashrig_gpu_energy_joules_total"),
                    "sm_clock_hertz": one("hashrig_gpu_sm_clock_hertz"),
                    "memory_clock_hertz": one("hashrig_gpu_memory_clock_hertz"),
                    "fan_speed_ratio": one("hashrig_gpu_fan_speed_ratio"),
                    "throttle_reasons": throttled,
                    "duty_cycle_ratio": cur
                        .rows("hashrig_gpu_duty_cycle_ratio", &[("device", device)])
                        .next()
                        .and_then(|(_, v)| scalar(v)),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        // 10 observations: 4 ≤ 1, 4 in (1, 2], 2 above 4.
        let h = Hist { count: 10, sum: 0.0, buckets: vec![(1.0, 4), (2.0, 8), (4.0, 8)] };
        assert_eq!(h.quantile(0.2), Some(0.5));
        assert_eq!(h.quantile(0.5), Some(1.25));
        assert_eq!(h.quantile(0.99), Some(4.0), "in +Inf: the highest bound");
        assert_eq!(Hist::default().quantile(0.5), None);
        let later = Hist { count: 12, sum: 3.0, buckets: vec![(1.0, 6), (2.0, 10), (4.0, 10)] };
        let d = h.delta(&later);
        assert_eq!((d.count, d.buckets.clone()), (2, vec![(1.0, 2), (2.0, 2), (4.0, 2)]));
        assert_eq!(d.quantile(0.5), Some(0.5));
    }

    /// Counters, shares, signatures and GPU health come out of the registry;
    /// windows the run has not lasted are null.
    #[test]
    fn summary_reads_the_registry() {
        let m = Metrics::new();
        m.hashes.with_label_values(&["cpu", "numa0"]).inc_by(1000);
        m.shares.with_label_values(&["accepted"]).inc_by(3);
        m.blocks.with_label_values(&["accepted"]).inc();
        m.hardware_errors.with_label_values(&["gpu", "gpu0"]).inc();
        m.sig_verdicts.with_label_values(&["ecdsa", "valid"]).inc_by(7);
        m.sig_batch_seconds.with_label_values(&["ecdsa", "2-16"]).observe(0.002);
        m.sig_gpu.engine_items.with_label_values(&["gpu0"]).inc_by(5);
        m.pool_connected.with_label_values(&["primary"]).set(0);
        m.pool_connected.with_label_values(&["backup"]).set(1);
        m.pool_role_shares.with_label_values(&["primary", "accepted"]).inc_by(2);
        m.pool_role_shares.with_label_values(&["backup", "rejected"]).inc();
        m.health.info.with_label_values(&["0", "GPU-x", "Fake", "gpu0"]).set(1);
        m.health.temperature_celsius.with_label_values(&["0", "GPU-x"]).set(64.0);
        m.health.throttled.with_label_values(&["0", "GPU-x", "hw_thermal"]).set(1);
        m.health.throttled.with_label_values(&["0", "GPU-x", "gpu_idle"]).set(0);
        let s = Summary::new(m.clone());
        let v = s.json();
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["hashrate"]["engines"][0]["hashes_total"], 1000.0);
        assert!(v["hashrate"]["total"]["10s"].is_null(), "{v}");
        assert_eq!(v["shares"]["accepted"], 3.0);
        assert_eq!(v["blocks"]["accepted"], 1.0);
        assert_eq!(v["pool"]["active"], "backup");
        assert_eq!(v["pool"]["shares_by_pool"], json!({"primary": {"accepted": 2.0}, "backup": {"rejected": 1.0}}));
        assert_eq!(v["hardware_errors"]["total"], 1.0);
        let ecdsa = &v["signatures"]["schemes"][0];
        assert_eq!((ecdsa["scheme"].as_str(), ecdsa["verdicts"]["valid"].as_f64()), (Some("ecdsa"), Some(7.0)));
        assert_eq!(ecdsa["batch_latency"]["count"], 1);
        let p50 = ecdsa["batch_latency"]["p50_seconds"].as_f64().unwrap();
        assert!(p50 > 0.001 && p50 <= 0.0025, "{p50}");
        assert_eq!(v["signatures"]["engines"][0]["engine"], "gpu0");
        assert_eq!(v["signatures"]["engines"][0]["active"], false);
        let g = &v["gpus"][0];
        assert_eq!((g["temperature_celsius"].as_f64(), g["device"].as_str()), (Some(64.0), Some("gpu0")));
        assert_eq!(g["throttle_reasons"], json!(["hw_thermal"]));
        assert!(g["power_watts"].is_null());
        assert!(v["gpu_temp_limit_celsius"].is_null());
    }

    #[test]
    fn rates_over_sampled_windows() {
        let m = Metrics::new();
        let s = Summary::new(m.clone());
        // History as if sampled 11 s ago with 0 hashes; now 11 000.
        {
            let mut h = s.history.lock();
            let past = Instant::now() - Duration::from_secs(11);
            let snap = Snapshot::take(&m);
            h.short.clear();
            h.long.clear();
            h.short.push_back((past, snap.clone()));
            h.long.push_back((past, snap));
        }
        m.hashes.with_label_values(&["cpu", "numa0"]).inc_by(11_000);
        let v = s.json();
        let r = v["hashrate"]["total"]["10s"].as_f64();
        // The oldest sample inside 10 s: none (it is 11 s old), so null;
        // the 60 s window has not been lasted either.
        assert!(r.is_none(), "{v}");
        {
            let mut h = s.history.lock();
            let past = Instant::now() - Duration::from_secs(9);
            let snap = h.long[0].1.clone();
            h.long.push_back((past, snap));
        }
        let v = s.json();
        // 11 000 hashes since the sample 9 s ago.
        let r = v["hashrate"]["engines"][0]["hashes_per_second"]["10s"].as_f64().unwrap();
        assert!((1200.0..=11_000.0 / 9.0).contains(&r), "{r}");
        assert!(v["hashrate"]["total"]["60s"].is_null());
    }
}
