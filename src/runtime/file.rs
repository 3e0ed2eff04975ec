//! The runtime's keys of the config file (`--config FILE`), beside the node
//! adapter's `[[pool]]`, `[stratum]` and `[node]` (read by
//! `node::config`). Flags given on the command line win over the file, at
//! start and at every reload.
//!
//! ```toml
//! log_level = "info"              # live
//! [cpu]                           # live: PoW workers restart when their plan changes
//! threads = 4
//! numa_nodes = [0]
//! smt = false
//! pin = true
//! backend = "sha-ni"
//! priority = "idle"               # idle | low | normal
//! [sig]
//! demo_rate = 2000                # live
//! [gpu]
//! temp_limit = 83                 # live: the thermal guard (off without it)
//! temp_hysteresis = 5             # live
//! [metrics]
//! addr = "127.0.0.1:9787"         # live (rebinds)
//! enabled = true                  # live
//! [sigserve]                      # restart (or live upgrade)
//! addr = "unix:/run/hashrig/sig.sock"
//! drain_secs = 5                  # live: on SIGTERM, /readyz 503 this long first
//! tls_cert = "server.pem"
//! tls_key = "server.key"
//! client_ca = "validators-ca.pem"
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::pow::Backend;
use crate::topo::WorkerPriority;

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFile {
    pub log_level: Option<String>,
    #[serde(default)]
    pub cpu: CpuSection,
    #[serde(default)]
    pub sig: SigSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub gpu: GpuSection,
    pub sigserve: Option<SigserveSection>,
    // The node adapter's sections, read by `node::config`.
    pool: Option<toml::Value>,
    stratum: Option<toml::Value>,
    node: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CpuSection {
    pub threads: Option<usize>,
    pub numa_nodes: Option<Vec<u32>>,
    pub smt: Option<bool>,
    pub pin: Option<bool>,
    #[serde(default, deserialize_with = "from_str_opt")]
    pub backend: Option<Backend>,
    #[serde(default, deserialize_with = "from_str_opt")]
    pub priority: Option<WorkerPriority>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SigSection {
    pub demo_rate: Option<f64>,
}

/// The thermal guard (`--gpu-temp-limit`, `--gpu-temp-hysteresis`), °C.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GpuSection {
    pub temp_limit: Option<f64>,
    pub temp_hysteresis: Option<f64>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    #[serde(default, deserialize_with = "from_str_opt")]
    pub addr: Option<SocketAddr>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SigserveSection {
    /// None: sigserve only when the command line asks for it (the other
    /// keys then apply to that address).
    pub addr: Option<String>,
    /// Seconds of drain on SIGTERM.
    pub drain_secs: Option<f64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
}

/// A string key parsed with the type's `FromStr` (its error in the message).
fn from_str_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| s.parse::<T>().map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))).transpose()
}

/// A config file the runtime cannot read: where, and what is wrong (never
/// the line itself: it may hold a password).
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct FileError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// Parses the runtime's keys of `text` (`path` names the file in errors,
/// which never quote its lines: they may hold passwords).
pub fn parse(path: &std::path::Path, text: &str) -> Result<RuntimeFile, FileError> {
    toml::from_str(text).map_err(|e| FileError {
        path: path.to_owned(),
        line: e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
        message: e.message().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_parse_beside_the_adapters() {
        let p = std::path::Path::new("t.toml");
        let f = parse(
            p,
            "log_level = \"debug\"\n[[pool]]\nurl = \"stratum+tcp://h:1\"\nuser = \"w\"\n[cpu]\nthreads = 2\npriority = \"low\"\n\
             [metrics]\naddr = \"127.0.0.1:9\"\n[sig]\ndemo_rate = 5\n",
        )
        .unwrap();
        assert_eq!(f.log_level.as_deref(), Some("debug"));
        assert_eq!((f.cpu.threads, f.cpu.priority), (Some(2), Some(WorkerPriority::Low)));
        assert_eq!(f.metrics.addr, Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(f.sig.demo_rate, Some(5.0));
        let g = parse(p, "[gpu]\ntemp_limit = 83\ntemp_hysteresis = 4\n").unwrap().gpu;
        assert_eq!((g.temp_limit, g.temp_hysteresis), (Some(83.0), Some(4.0)));
        let s = parse(p, "[sigserve]\ndrain_secs = 2.5\n").unwrap().sigserve.unwrap();
        assert_eq!((s.addr, s.drain_secs), (None, Some(2.5)), "a drain for --sigserve's address");
        assert!(parse(p, "[cpu]\nthreads = \"many\"\n").is_err());
        assert!(parse(p, "[cpu]\npriority = \"urgent\"\n").unwrap_err().to_string().contains("urgent"));
        assert!(parse(p, "[metrics]\nport = 1\n").is_err(), "unknown keys are errors");
        assert!(parse(p, "[cpu]\nthreads = 1\npass = \"hunter2\" x\n").unwrap_err().to_string().contains("line 3"));
    }
}
