//! What operators look at: the alert rules (Prometheus' own promtool checks
//! and unit-tests them), the Grafana dashboard, both naming only series
//! hashrig declares, and `/api/summary` and `hashrig status` on a running
//! demo.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod metrics_common;
mod run_common;
use run_common::{HashrigRun, BIN};

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/monitoring")
}

/// promtool, which `make test` installs (Debian's prometheus package): its
/// absence is a failure, never a skip.
fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let o = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool is needed: make test installs it (Debian package prometheus)");
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = monitoring();
    let (ok, out) = promtool(&["check", "rules", "hashrig.rules.yml"], &dir);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["test", "rules", "hashrig.rules.test.yml"], &dir);
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(monitoring().join("hashrig-dashboard.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every query of the dashboard's panels.
fn dashboard_exprs(d: &Value) -> Vec<String> {
    let panels = d["panels"].as_array().expect("panels");
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("every target has a query").to_string())
        .collect()
}

/// The dashboard imports as is: a data source input, a uid, panels placed
/// on the grid, and queries Prometheus parses (checked by promtool as
/// recording rules, with Grafana's variables filled in).
#[test]
fn dashboard_is_importable_and_its_queries_parse() {
    let d = dashboard();
    assert_eq!(d["__inputs"][0]["pluginId"], "prometheus");
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty() && u.len() <= 40));
    assert!(d["title"].is_string() && d["schemaVersion"].as_u64().is_some());
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel ids are unique");
        let g = &p["gridPos"];
        assert!(g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24, "{p}");
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
            assert!(!p["targets"].as_array().unwrap().is_empty(), "{}", p["title"]);
        }
    }
    let exprs = dashboard_exprs(&d);
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e.replace("$instance", ".*").replace("$__range", "1h").replace("$__rate_interval", "1m");
        rules += &format!("      - record: dashboard:expr{i}\n        expr: {}\n", serde_json::to_string(&e).unwrap());
    }
    let dir = std::env::temp_dir().join(format!("hashrig-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dashboard.rules.yml"), rules).unwrap();
    let (ok, out) = promtool(&["check", "rules", "dashboard.rules.yml"], &dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(ok, "{out}");
}

/// `hashrig_…` names in `text`.
fn hashrig_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("hashrig_") {
        let before = rest[..i].chars().next_back();
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        // Not the tail of a longer identifier.
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// Sample names of every family hashrig declares (`_bucket`, `_sum`,
/// `_count` for histograms).
fn declared() -> BTreeSet<String> {
    hashrig::metrics::Metrics::new().families().iter().flat_map(|f| f.sample_names()).collect()
}

#[test]
fn dashboard_and_rules_name_only_series_hashrig_declares() {
    let known = declared();
    let dir = monitoring();
    let mut sources = vec![("hashrig-dashboard.json".to_string(), dashboard_exprs(&dashboard()).join("\n"))];
    for f in ["hashrig.rules.yml", "hashrig.rules.test.yml"] {
        sources.push((f.to_string(), std::fs::read_to_string(dir.join(f)).unwrap()));
    }
    for (file, text) in &sources {
        let names = hashrig_names(text);
        assert!(names.len() >= 5, "{file}: {names:?}");
        let unknown: Vec<_> = names.difference(&known).collect();
        assert!(unknown.is_empty(), "{file} names series hashrig does not export: {unknown:?}");
    }
    // The checker itself: a made-up name is caught.
    assert!(!known.contains("hashrig_hashes_per_second"));
    assert_eq!(
        hashrig_names("rate(hashrig_a_total[5m]) / xhashrig_b"),
        BTreeSet::from(["hashrig_a_total".to_string()])
    );
}

/// METHOD PATH on `addr`: status line, headers, body.
fn http(addr: &str, method: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
    (head.to_string(), body.to_string())
}

fn summary(addr: &str) -> Value {
    let (head, body) = http(addr, "GET", "/api/summary");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn summary_and_status_on_a_running_demo() {
    let run = HashrigRun::start_small(
        &["--demo-difficulty", "0.0001", "--demo-block-time", "1", "--duration", "120"],
        |_| {},
    );
    let addr = run.metrics_addr();
    // Until a block was found and the 10 s window has been lasted (bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    let v = loop {
        let v = summary(&addr);
        if v["hashrate"]["total"]["10s"].is_number() && v["blocks"]["accepted"].as_f64().unwrap_or(0.0) >= 1.0 {
            break v;
        }
        assert!(Instant::now() < deadline, "no block or 10 s hashrate within 60 s: {v:#}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let scrape = metrics_common::scrape(&addr);
    let sample = |prefix: &str| -> f64 {
        scrape.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap()
    };

    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(num(&v["uptime_seconds"]) >= 9.0, "{v:#}");
    // Hashrate per engine: the CPU worker, consistent with /metrics.
    let engines = v["hashrate"]["engines"].as_array().unwrap();
    let cpu = engines.iter().find(|e| e["engine"] == "cpu" && e["device"] == "numa0").expect("cpu engine");
    let total_then = num(&cpu["hashes_total"]);
    assert!(total_then > 0.0 && total_then <= sample("hashrig_hashes_total{device=\"numa0\",engine=\"cpu\"}"));
    let r10 = num(&cpu["hashes_per_second"]["10s"]);
    assert!(r10 > 0.0, "{cpu}");
    let sum10: f64 = engines.iter().filter_map(|e| e["hashes_per_second"]["10s"].as_f64()).sum();
    assert!((num(&v["hashrate"]["total"]["10s"]) - sum10).abs() <= 1e-6 * sum10, "{v:#}");
    assert!(v["hashrate"]["total"]["15m"].is_null(), "a window not lasted is null");
    // Shares, blocks, no pool on the demo, no hardware errors.
    assert!(num(&v["shares"]["accepted"]) >= 1.0);
    assert!(num(&v["blocks"]["accepted"]) >= 1.0);
    assert!(v["pool"].is_null());
    assert_eq!(num(&v["hardware_errors"]["total"]), 0.0);
    assert!(num(&v["chain_height"]) >= 1.0);
    // Signatures from the demo feed: every scheme verified, invalid ones
    // among the Ed25519 items, batch latencies of the mixed batches.
    let schemes = v["signatures"]["schemes"].as_array().unwrap();
    let row = |s: &str| schemes.iter().find(|x| x["scheme"] == s).unwrap_or_else(|| panic!("no {s} row: {v:#}"));
    for s in ["ed25519", "ecdsa", "schnorr"] {
        assert!(num(&row(s)["verdicts"]["valid"]) > 0.0, "{s}");
        assert!(num(&row(s)["items_per_second"]["10s"]) > 0.0, "{s}");
    }
    assert!(num(&row("ed25519")["verdicts"]["invalid"]) > 0.0);
    let lat = &row("mixed")["batch_latency"];
    assert!(num(&lat["count"]) > 0.0, "{lat}");
    let (p50, p99) = (num(&lat["p50_seconds"]), num(&lat["p99_seconds"]));
    assert!(p50 > 0.0 && p99 >= p50 && p99 < 2.5, "{lat}");
    let sig_cpu = v["signatures"]["engines"].as_array().unwrap().iter().find(|e| e["engine"] == "cpu").unwrap();
    assert!(num(&sig_cpu["items_total"]) > 0.0);
    // GPU health: none without NVML (this hashrig said so in its log).
    let gpus = v["gpus"].as_array().unwrap();
    if run.printed("GPU health is not available") {
        assert!(gpus.is_empty(), "{v:#}");
    } else {
        assert!(gpus.iter().all(|g| g["temperature_celsius"].is_number()), "{v:#}");
    }
    // Read-only: nothing but GET.
    assert!(http(&addr, "POST", "/api/summary").0.starts_with("HTTP/1.1 404"));

    // Every family a real scrape shows is declared (the list the monitoring
    // test checks names against is the real one).
    let known = declared();
    for l in scrape.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = l.split(['{', ' ']).next().unwrap();
        assert!(known.contains(name), "{name} is exported but not declared");
    }

    // `hashrig status ADDR`: the same figures for a person.
    let o = Command::new(BIN).args(["status", &addr]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}{}", String::from_utf8_lossy(&o.stderr));
    for want in [
        format!("hashrig {} at {addr}, up ", env!("CARGO_PKG_VERSION")).as_str(),
        "hashrate 10s / 60s / 15m:",
        "  cpu numa0: ",
        "blocks: accepted ",
        "  ed25519 ",
        "  engine cpu ",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    let o = Command::new(BIN).args(["status", &addr, "--json"]).output().unwrap();
    let j: Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
    assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn status_of_nothing_fails_clearly() {
    // A port nothing listens on: bind one, note it, free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for args in [vec!["status".to_string(), format!("127.0.0.1:{port}")], vec!["status".into(), "https://x:1".into()]] {
        let o = Command::new(BIN).args(&args).output().unwrap();
        assert!(!o.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("error:"), "{args:?}");
    }
}

#[test]
fn bad_gpu_temp_limits_fail_cleanly() {
    for args in [
        &["--gpu-temp-limit", "500"][..],
        &["--gpu-temp-limit", "NaN"],
        &["--gpu-temp-limit", "80", "--gpu-temp-hysteresis", "-1"],
        &["--gpu-temp-hysteresis", "3"], // without a limit
    ] {
        let o = Command::new(BIN).arg("run").args(args).args(["--no-metrics", "--duration", "1"]).output().unwrap();
        assert!(!o.status.success(), "{args:?}");
        assert!(!o.stderr.is_empty(), "{args:?} says why");
    }
}
