//! Hardware profiles: what `hashrig bench` measured on one machine, written as
//! TOML under hw-profiles/ so people sizing hardware can compare machines.
//!
//! A profile file is updated section by section: `bench pow` rewrites
//! `[pow_cpu]` (and its GPUs' `[[pow_gpu]]`), `bench sig` rewrites `[sig]`,
//! and everything else stays (comparison runs added by tools/ scripts or by
//! hand). [`sizing`] turns profiles into machine counts for a workload
//! (`hashrig size`).

pub mod sizing;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::topo::Topology;

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct HwProfile {
    pub machine: Machine,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pow_cpu: Option<PowCpu>,
    /// One per GPU, from `bench pow --engine gpu|all`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pow_gpu: Vec<PowGpu>,
    /// From `bench sig --profile-out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<SigBench>,
    /// Reference figures measured beside ours in the same session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comparison: Vec<Comparison>,
}

/// Signature verification through the engine, per scheme and batch size.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SigBench {
    pub hashrig_version: String,
    pub date: String,
    pub command: String,
    pub seconds_per_point: f64,
    pub points: Vec<SigPoint>,
}

fn cpu_engine() -> String {
    "cpu".to_string()
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SigPoint {
    /// ed25519, ed25519-strict, ecdsa, schnorr.
    pub scheme: String,
    /// What verified: "cpu", "gpu" (every batch on the GPU) or "auto" (the
    /// CPU/GPU split). Profiles from before GPU signatures are all "cpu".
    #[serde(default = "cpu_engine")]
    pub engine: String,
    /// Items per batch.
    pub batch: usize,
    /// Engine threads (1, or every core of the plan).
    pub threads: usize,
    /// Latency of one batch, submitted alone.
    pub p50_seconds: f64,
    pub p99_seconds: f64,
    /// One batch at a time, back to back: one stream's rate.
    pub items_per_sec: f64,
    /// Two batches per engine thread queued: the machine's rate at this
    /// batch size (what sizing uses).
    pub saturated_items_per_sec: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Machine {
    pub cpu_model: String,
    pub packages: usize,
    pub numa_nodes: usize,
    pub cores: usize,
    pub pus: usize,
    pub kernel: String,
    /// Free text: cloud instance type, "shared 2-core VM", GPU model.
    #[serde(default)]
    pub note: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PowCpu {
    pub hashrig_version: String,
    /// UTC date of the run, YYYY-MM-DD.
    pub date: String,
    pub command: String,
    pub backend: String,
    pub threads: usize,
    pub seconds: f64,
    pub per_thread_hashes_per_sec: f64,
    pub all_threads_hashes_per_sec: f64,
    pub scaling: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PowGpu {
    pub hashrig_version: String,
    pub date: String,
    pub command: String,
    /// "gpu0", …
    pub device: String,
    /// The adapter line's name (e.g. "NVIDIA H100 80GB HBM3").
    pub adapter: String,
    pub tune: String,
    pub seconds: f64,
    pub hashes_per_sec: f64,
    /// Mean kernel time per dispatch.
    pub dispatch_seconds: f64,
    /// Measured while the CPU engine mined the same job.
    pub with_cpu: bool,
    /// CPU + every GPU, in that same run.
    pub total_hashes_per_sec: f64,
    /// `hashes_per_sec` over the GPU's power in the same window (NVML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashes_per_joule: Option<f64>,
    /// The GPU's power over the window and what NVML read at its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<crate::health::energy::Power>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Comparison {
    pub name: String,
    pub command: String,
    pub value: f64,
    pub unit: String,
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("reading {path}: {reason}")]
    Io { path: String, reason: std::io::Error },
    #[error("{path} is not a valid profile: {reason}")]
    Parse { path: String, reason: toml::de::Error },
    #[error("serialising the profile: {0}")]
    Serialize(toml::ser::Error),
}

impl From<toml::ser::Error> for ProfileError {
    fn from(e: toml::ser::Error) -> Self {
        ProfileError::Serialize(e)
    }
}

impl Machine {
    pub fn detect(topo: &Topology, cpu_model: String) -> Machine {
        Machine {
            cpu_model,
            packages: topo.package_count(),
            numa_nodes: topo.numa_nodes.len(),
            cores: topo.core_count(),
            pus: topo.pu_count(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            note: String::new(),
        }
    }
}

impl HwProfile {
    /// Loads `path` (or starts a new profile) with the machine section
    /// describing this machine; a hand-written note is kept.
    pub fn load_for_update(path: &Path, topo: &Topology, cpu_model: String) -> Result<HwProfile, ProfileError> {
        let mut p = Self::load(path)?.unwrap_or_default();
        p.machine = Machine { note: std::mem::take(&mut p.machine.note), ..Machine::detect(topo, cpu_model) };
        Ok(p)
    }

    /// Loads `path`, or `None` when it does not exist yet.
    pub fn load(path: &Path) -> Result<Option<HwProfile>, ProfileError> {
        match std::fs::read_to_string(path) {
            Ok(s) => toml::from_str(&s)
                .map(Some)
                .map_err(|reason| ProfileError::Parse { path: path.display().to_string(), reason }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(reason) => Err(ProfileError::Io { path: path.display().to_string(), reason }),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), ProfileError> {
        let text = format!(
            "# hashrig hardware profile: measured figures, see the README's performance table.\n{}",
            toml::to_string_pretty(self)?
        );
        std::fs::write(path, text).map_err(|reason| ProfileError::Io { path: path.display().to_string(), reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_toml() {
        let p = HwProfile {
            machine: Machine {
                cpu_model: "x".into(),
                cores: 2,
                pus: 2,
                numa_nodes: 1,
                packages: 1,
                ..Default::default()
            },
            pow_gpu: Vec::new(),
            sig: Some(SigBench {
                hashrig_version: "0.1.0".into(),
                date: crate::date::utc_date(),
                command: "hashrig bench sig".into(),
                seconds_per_point: 0.5,
                points: vec![SigPoint {
                    scheme: "ecdsa".into(),
                    engine: "cpu".into(),
                    batch: 64,
                    threads: 2,
                    p50_seconds: 1e-3,
                    p99_seconds: 2e-3,
                    items_per_sec: 5e4,
                    saturated_items_per_sec: 9e4,
                }],
            }),
            pow_cpu: Some(PowCpu {
                hashrig_version: "0.1.0".into(),
                date: crate::date::utc_date(),
                command: "hashrig bench pow".into(),
                backend: "sha-ni".into(),
                threads: 2,
                seconds: 5.0,
                per_thread_hashes_per_sec: 2.0e7,
                all_threads_hashes_per_sec: 4.0e7,
                scaling: 2.0,
            }),
            comparison: vec![Comparison {
                name: "openssl".into(),
                command: "openssl speed".into(),
                value: 1.0,
                unit: "x".into(),
                note: String::new(),
            }],
        };
        let s = toml::to_string_pretty(&p).unwrap();
        assert_eq!(toml::from_str::<HwProfile>(&s).unwrap(), p);
    }

    /// Every committed profile loads, and its figures are real numbers: the
    /// files are edited by hand beside `bench --profile-out`.
    #[test]
    fn committed_profiles_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hw-profiles");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("toml") {
                continue;
            }
            let p = HwProfile::load(&path).unwrap().unwrap();
            assert!(
                p.pow_cpu.is_some() || !p.pow_gpu.is_empty() || p.sig.is_some(),
                "{}: no measurement",
                path.display()
            );
            for s in p.sig.iter().flat_map(|s| &s.points) {
                assert!(s.scheme.parse::<crate::sig::Scheme>().is_ok(), "{}: scheme {:?}", path.display(), s.scheme);
                for v in [s.p50_seconds, s.p99_seconds, s.items_per_sec, s.saturated_items_per_sec] {
                    assert!(v.is_finite() && v > 0.0, "{}: sig figure {v}", path.display());
                }
            }
            let gpu = p.pow_gpu.iter().flat_map(|g| [g.hashes_per_sec, g.dispatch_seconds, g.total_hashes_per_sec]);
            let cpu = p.pow_cpu.iter().flat_map(|c| [c.per_thread_hashes_per_sec, c.all_threads_hashes_per_sec]);
            let power =
                p.pow_gpu.iter().flat_map(|g| g.hashes_per_joule.into_iter().chain(g.power.as_ref().map(|w| w.watts)));
            for v in gpu.chain(cpu).chain(power).chain(p.comparison.iter().map(|c| c.value)) {
                assert!(v.is_finite() && v > 0.0, "{}: figure {v}", path.display());
            }
            for c in &p.comparison {
                assert!(
                    !c.command.is_empty() && !c.unit.is_empty(),
                    "{}: {:?} says how it was measured",
                    path.display(),
                    c.name
                );
            }
            n += 1;
        }
        assert!(n > 0, "no profile in {}", dir.display());
    }
}
