//! `hashrig status [ADDR]`: a running hashrig's `/api/summary`, for a person.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The metrics listener of the running hashrig (HOST:PORT or http://HOST:PORT).
    #[arg(default_value_t = super::default_metrics_addr().to_string())]
    pub addr: String,
    /// Print the summary as JSON, as served.
    #[arg(long)]
    pub json: bool,
}

/// `http://HOST:PORT/api/summary` from what the user typed.
fn url(addr: &str) -> anyhow::Result<String> {
    let a = addr.trim().trim_end_matches('/');
    let hostport = a.strip_prefix("http://").unwrap_or(a);
    anyhow::ensure!(
        !hostport.is_empty() && !hostport.contains(['/', ' ', '?', '#']) && !a.starts_with("https://"),
        "{addr:?} is not HOST:PORT (the metrics listener speaks plain HTTP)"
    );
    Ok(format!("http://{hostport}/api/summary"))
}

pub fn main(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let url = url(&a.addr)?;
    let agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().new_agent();
    let body = agent
        .get(&url)
        .call()
        .with_context(|| format!("cannot read {url} (is hashrig run serving metrics there?)"))?
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading {url}"))?;
    let v: Value = serde_json::from_str(&body).with_context(|| format!("{url} did not answer JSON"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render(&v, &a.addr));
    }
    Ok(ExitCode::SUCCESS)
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// "1.23 MH/s"-style, or "n/a" for a window not lasted yet.
fn rate(v: &Value, unit: &str) -> String {
    match f(v) {
        Some(x) => {
            let (div, p) = crate::sched::stats::si_prefix(x);
            format!("{:.2} {p}{unit}", x / div)
        }
        None => "n/a".into(),
    }
}

fn windows(v: &Value, keys: &[&str], unit: &str) -> String {
    keys.iter().map(|k| rate(&v[*k], unit)).collect::<Vec<_>>().join(" / ")
}

fn ms(v: &Value) -> String {
    f(v).map_or("-".into(), |s| format!("{:.2} ms", s * 1e3))
}

fn counts(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            m.iter().map(|(k, n)| format!("{k} {}", n.as_f64().unwrap_or(0.0))).collect::<Vec<_>>().join(", ")
        }
        _ => "none".into(),
    }
}

fn uptime(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    format!("{}d {:02}h {:02}m {:02}s", s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60)
}

/// The summary as lines for a terminal.
pub fn render(v: &Value, addr: &str) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "hashrig {} at {addr}, up {}",
        v["version"].as_str().unwrap_or("?"),
        uptime(f(&v["uptime_seconds"]).unwrap_or(0.0))
    );
    let r = &v["readiness"];
    if r.is_object() {
        let waiting: Vec<&str> = r["waiting_for"].as_array().into_iter().flatten().filter_map(|w| w.as_str()).collect();
        let _ = match r["ready"].as_bool() {
            Some(true) => writeln!(o, "ready (/readyz 200) | sigserve {}", r["sigserve"].as_str().unwrap_or("?")),
            _ => writeln!(o, "not ready (/readyz 503): {}", waiting.join(", ")),
        };
    }
    let hw = &v["hashrate"];
    let _ = writeln!(o, "hashrate 10s / 60s / 15m: {}", windows(&hw["total"], &["10s", "60s", "15m"], "H/s"));
    for e in hw["engines"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "  {} {}: {} ({} hashes)",
            e["engine"].as_str().unwrap_or("?"),
            e["device"].as_str().unwrap_or("?"),
            windows(&e["hashes_per_second"], &["10s", "60s", "15m"], "H/s"),
            f(&e["hashes_total"]).unwrap_or(0.0)
        );
    }
    let _ = writeln!(
        o,
        "shares: {} | blocks: {} | hardware errors: {}",
        counts(&v["shares"]),
        counts(&v["blocks"]),
        f(&v["hardware_errors"]["total"]).unwrap_or(0.0)
    );
    if let Some(h) = f(&v["chain_height"]) {
        let _ = writeln!(o, "mining on height {h}");
    }
    let p = &v["pool"];
    if p.is_object() {
        let _ = writeln!(
            o,
            "pool: active {} | difficulty {} | stale ratio {:.3} | failovers: {} | reconnects: {} | submit p99 {}",
            p["active"].as_str().unwrap_or("none (disconnected)"),
            f(&p["difficulty"]).unwrap_or(0.0),
            f(&p["stale_ratio"]).unwrap_or(0.0),
            counts(&p["failovers"]),
            counts(&p["reconnects"]),
            ms(&p["submit_latency"]["p99_seconds"]),
        );
        for (role, by) in p["shares_by_pool"].as_object().into_iter().flatten() {
            let _ = writeln!(o, "  shares for {role} pool jobs: {}", counts(by));
        }
        for s in p["shares"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "  {} ({}): {}",
                s["result"].as_str().unwrap_or("?"),
                s["reason"].as_str().unwrap_or("?"),
                f(&s["count"]).unwrap_or(0.0)
            );
        }
    }
    let sig = &v["signatures"];
    let _ = writeln!(o, "signatures (queued {}):", f(&sig["queued_items"]).unwrap_or(0.0));
    for s in sig["schemes"].as_array().into_iter().flatten() {
        // A row has what was measured for it: verdicts for a scheme, batch
        // latencies where batches were of that scheme alone ("mixed" holds
        // the batches of several).
        let mut parts = Vec::new();
        let verdicts: Vec<f64> =
            ["valid", "invalid", "malformed"].iter().map(|k| f(&s["verdicts"][*k]).unwrap_or(0.0)).collect();
        if verdicts.iter().any(|v| *v > 0.0) {
            parts.push(format!(
                "{} | valid {} invalid {} malformed {}",
                windows(&s["items_per_second"], &["10s", "60s"], "/s"),
                verdicts[0],
                verdicts[1],
                verdicts[2]
            ));
        }
        let l = &s["batch_latency"];
        if f(&l["count"]).unwrap_or(0.0) > 0.0 {
            parts.push(format!(
                "batch p50 {} p99 {} ({} batches in the last {:.0} s)",
                ms(&l["p50_seconds"]),
                ms(&l["p99_seconds"]),
                f(&l["count"]).unwrap_or(0.0),
                f(&l["window_seconds"]).unwrap_or(0.0)
            ));
        }
        parts.push(format!("deadline missed {}", f(&s["deadline_missed"]).unwrap_or(0.0)));
        let _ = writeln!(o, "  {:<15} {}", s["scheme"].as_str().unwrap_or("?"), parts.join(" | "));
    }
    for e in sig["engines"].as_array().into_iter().flatten() {
        let mut line = format!(
            "  engine {:<8} {} ({} items)",
            e["engine"].as_str().unwrap_or("?"),
            windows(&e["items_per_second"], &["10s", "60s"], "/s"),
            f(&e["items_total"]).unwrap_or(0.0)
        );
        if e.get("active").is_some() {
            let _ = write!(
                line,
                " | dispatch p50 {} p99 {} | {} | mismatches {}",
                ms(&e["dispatch_latency"]["p50_seconds"]),
                ms(&e["dispatch_latency"]["p99_seconds"]),
                if e["active"].as_bool() == Some(true) { "active" } else { "off signature work" },
                f(&e["mismatches"]).unwrap_or(0.0)
            );
        }
        let _ = writeln!(o, "{line}");
    }
    let gpus = v["gpus"].as_array().cloned().unwrap_or_default();
    if gpus.is_empty() {
        let _ = writeln!(o, "gpu health: not read (no NVML)");
    }
    for g in &gpus {
        let opt = |k: &str, scale: f64, unit: &str, digits: usize| {
            f(&g[k]).map_or("-".into(), |x| format!("{:.*} {unit}", digits, x * scale))
        };
        let reasons: Vec<&str> =
            g["throttle_reasons"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let _ = writeln!(
            o,
            "gpu {} {} ({}, {}): {} | {} | SM {} | memory {} | fan {} | duty {} | throttled: {}",
            g["gpu"].as_str().unwrap_or("?"),
            g["name"].as_str().unwrap_or("?"),
            g["device"].as_str().unwrap_or("none"),
            g["uuid"].as_str().unwrap_or("?"),
            opt("temperature_celsius", 1.0, "°C", 0),
            opt("power_watts", 1.0, "W", 0),
            opt("sm_clock_hertz", 1e-6, "MHz", 0),
            opt("memory_clock_hertz", 1e-6, "MHz", 0),
            opt("fan_speed_ratio", 100.0, "%", 0),
            opt("duty_cycle_ratio", 100.0, "%", 0),
            if reasons.is_empty() { "no".to_string() } else { reasons.join(", ") },
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_summary_urls() {
        assert_eq!(url("127.0.0.1:9787").unwrap(), "http://127.0.0.1:9787/api/summary");
        assert_eq!(url("http://[::1]:9787/").unwrap(), "http://[::1]:9787/api/summary");
        for bad in ["", "https://x:1", "x:1/metrics", "a b:1"] {
            assert!(url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn renders_what_it_is_given_and_survives_what_it_is_not() {
        let v = serde_json::json!({
            "version": "9.9.9", "uptime_seconds": 3725.0,
            "readiness": {"live": true, "ready": false, "draining": true, "sigserve": "listening",
                          "waiting_for": ["draining"]},
            "hashrate": {"total": {"10s": 2.5e6, "60s": null, "15m": null},
                         "engines": [{"engine": "cpu", "device": "numa0", "hashes_total": 1e7,
                                      "hashes_per_second": {"10s": 2.5e6, "60s": null, "15m": null}}]},
            "shares": {"accepted": 4.0}, "blocks": {}, "hardware_errors": {"total": 0.0},
            "pool": null,
            "signatures": {"queued_items": 0.0, "engines": [], "schemes": [
                {"scheme": "ecdsa", "verdicts": {"valid": 5.0, "invalid": 1.0}, "items_per_second": {"10s": 1500.0},
                 "batch_latency": {"count": 0}, "deadline_missed": 0.0},
                {"scheme": "mixed", "verdicts": {}, "deadline_missed": 2.0,
                 "batch_latency": {"count": 3, "p50_seconds": 0.001, "p99_seconds": 0.002, "window_seconds": 60.0}}]},
            "gpus": [{"gpu": "0", "name": "Fake", "device": "gpu0", "uuid": "GPU-1", "temperature_celsius": 71.0,
                      "throttle_reasons": ["sw_power_cap"], "duty_cycle_ratio": 0.7}],
        });
        let t = render(&v, "127.0.0.1:9787");
        assert!(t.contains("hashrig 9.9.9 at 127.0.0.1:9787, up 0d 01h 02m 05s"), "{t}");
        assert!(t.contains("hashrate 10s / 60s / 15m: 2.50 MH/s / n/a / n/a"), "{t}");
        assert!(t.contains("\nnot ready (/readyz 503): draining\n"), "{t}");
        assert!(t.contains("shares: accepted 4 | blocks: none"), "{t}");
        assert!(
            t.contains("  ecdsa           1.50 k/s / n/a | valid 5 invalid 1 malformed 0 | deadline missed 0\n"),
            "{t}"
        );
        assert!(
            t.contains(
                "  mixed           batch p50 1.00 ms p99 2.00 ms (3 batches in the last 60 s) | deadline missed 2\n"
            ),
            "{t}"
        );
        assert!(t.contains("gpu 0 Fake (gpu0, GPU-1): 71 °C | - | SM - |"), "{t}");
        assert!(t.contains("duty 70 % | throttled: sw_power_cap"), "{t}");
        // Anything else: no panic.
        let _ = render(&serde_json::json!({"hashrate": 5, "gpus": "x"}), "a");
        let _ = render(&Value::Null, "a");
    }
}
