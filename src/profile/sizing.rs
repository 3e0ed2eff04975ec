//! Sizing: how many machines of each measured profile a workload needs.
//!
//! A workload is a hashrate, a signature rate (one scheme, the validator's
//! batch size, optionally a p99 bound per batch), or both. Capacities come
//! only from what a profile measured; a profile that did not measure what
//! the workload asks for says so instead of guessing.
//!
//! Both on one machine: the PoW workers run below signature checks in
//! priority (`--cpu-priority idle`), so the signatures take the share `f` of
//! the CPU they need and the CPU miners get the rest; GPUs mine regardless.
//! With `n` machines, `f = S / (n · sig_capacity)` and the hashrate is
//! `n · gpu + n · cpu · (1 − f)`, so the least `n` is
//! `max(⌈S / sig⌉, ⌈(H + cpu · S / sig) / (gpu + cpu)⌉)`.

use serde::Serialize;

use super::HwProfile;

/// What has to be served.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Workload {
    /// Hashes per second.
    pub hashrate: Option<f64>,
    /// Signatures per second of `scheme`.
    pub sigs_per_sec: Option<f64>,
    pub scheme: String,
    /// The batch size the validator sends (points with larger batches are not used).
    pub batch: usize,
    /// Largest acceptable p99 latency of one batch, seconds.
    pub p99_max: Option<f64>,
}

/// What one machine of a profile does, as measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Capacity {
    /// CPU hashrate, all threads.
    pub cpu_hashes_per_sec: f64,
    /// GPU hashrate of the whole machine (beside the CPU when measured so).
    pub gpu_hashes_per_sec: f64,
    /// Signatures per second for the workload's scheme at the largest
    /// measured batch size within its batch and p99 bounds, and that size.
    pub sigs: Option<(f64, usize)>,
}

/// The answer for one profile.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sized {
    pub profile: String,
    pub capacity: Capacity,
    /// Machines needed, or why the profile cannot tell.
    pub machines: Result<u64, String>,
}

/// A rate from a (possibly hand-edited) file: NaN, infinite or negative
/// figures count as not measured.
fn measured(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        0.0
    }
}

/// A machine's measured capacity for `w`.
pub fn capacity(p: &HwProfile, w: &Workload) -> Capacity {
    let cpu = p.pow_cpu.as_ref().map_or(0.0, |c| measured(c.all_threads_hashes_per_sec));
    // GPUs measured beside the CPU (bench --engine all) include the CPU's
    // interference; prefer them. Else the GPUs measured alone, summed.
    let beside: Vec<_> = p.pow_gpu.iter().filter(|g| g.with_cpu).collect();
    // (fold from +0.0: an empty f64 sum is -0.0)
    let gpu = if beside.is_empty() {
        p.pow_gpu.iter().fold(0.0, |a, g| a + measured(g.hashes_per_sec))
    } else {
        beside.iter().fold(0.0, |a, g| a + measured(g.hashes_per_sec))
    };
    let sigs = p.sig.as_ref().and_then(|s| {
        let threads = s.points.iter().map(|x| x.threads).max()?;
        s.points
            .iter()
            .filter(|x| x.threads == threads && x.scheme == w.scheme && x.batch <= w.batch.max(1))
            .filter(|x| measured(x.saturated_items_per_sec) > 0.0)
            .filter(|x| w.p99_max.is_none_or(|m| x.p99_seconds <= m))
            // The validator's batch size, or the largest measured below it
            // (throughput grows with the batch, so this errs low); at that
            // size the best engine measured (the CPU/GPU split where the
            // profile has one).
            .max_by(|a, b| a.batch.cmp(&b.batch).then(a.saturated_items_per_sec.total_cmp(&b.saturated_items_per_sec)))
            .map(|x| (x.saturated_items_per_sec, x.batch))
    });
    Capacity { cpu_hashes_per_sec: cpu, gpu_hashes_per_sec: gpu, sigs }
}

/// Machines of profile `p` that serve `w`.
pub fn machines(p: &HwProfile, w: &Workload) -> (Capacity, Result<u64, String>) {
    let c = capacity(p, w);
    let n = (|| {
        let h = w.hashrate.unwrap_or(0.0);
        let s = w.sigs_per_sec.unwrap_or(0.0);
        if h <= 0.0 && s <= 0.0 {
            return Err("no workload given".to_string());
        }
        // The share of one machine's CPU the signatures take, times its CPU hashrate.
        let (n_sig, cpu_lost) = if s > 0.0 {
            let Some((rate, _)) = c.sigs else {
                return Err(match &p.sig {
                    None => "no signature measurement (hashrig bench sig --profile-out)".to_string(),
                    Some(_) => format!("no {} point within batch {} and the p99 bound", w.scheme, w.batch),
                });
            };
            (s / rate, c.cpu_hashes_per_sec * s / rate)
        } else {
            (0.0, 0.0)
        };
        let pow = c.cpu_hashes_per_sec + c.gpu_hashes_per_sec;
        let n_pow = if h > 0.0 {
            if pow <= 0.0 {
                return Err("no PoW measurement (hashrig bench pow --profile-out)".to_string());
            }
            (h + cpu_lost) / pow
        } else {
            0.0
        };
        // Ratios of measured rates: forgive rounding in the last digits.
        let n = (n_sig.max(n_pow) - 1e-9).ceil();
        if !n.is_finite() || n > 1e15 {
            return Err("more machines than can be counted".to_string());
        }
        Ok((n as u64).max(1))
    })();
    (c, n)
}

/// `1.5k`, `10M`, `7G`, `2.5TH/s`, `100 GH/s`, `3e9`: a rate with an
/// optional SI prefix and an optional unit (`H/s`, `/s`), no other text.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix("H/s").or_else(|| t.strip_suffix("h/s")).or_else(|| t.strip_suffix("/s")).unwrap_or(t);
    let t = t.trim_end();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('M') => (&t[..t.len() - 1], 1e6),
        Some('G') => (&t[..t.len() - 1], 1e9),
        Some('T') => (&t[..t.len() - 1], 1e12),
        Some('P') => (&t[..t.len() - 1], 1e15),
        _ => (t, 1.0),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v * mult),
        _ => Err(format!("{s:?} is not a positive rate (e.g. 250k, 10M, 2.5TH/s)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{PowCpu, PowGpu, SigBench, SigPoint};

    fn profile(cpu: f64, gpus: &[(f64, bool)], sig: &[(&str, usize, usize, f64, f64)]) -> HwProfile {
        HwProfile {
            pow_cpu: Some(PowCpu {
                hashrig_version: "t".into(),
                date: "d".into(),
                command: "c".into(),
                backend: "sha-ni".into(),
                threads: 2,
                seconds: 1.0,
                per_thread_hashes_per_sec: cpu / 2.0,
                all_threads_hashes_per_sec: cpu,
                scaling: 2.0,
            }),
            pow_gpu: gpus
                .iter()
                .enumerate()
                .map(|(i, &(r, with_cpu))| PowGpu {
                    hashrig_version: "t".into(),
                    date: "d".into(),
                    command: "c".into(),
                    device: crate::gpu::label(i),
                    adapter: "a".into(),
                    tune: "t".into(),
                    seconds: 1.0,
                    hashes_per_sec: r,
                    dispatch_seconds: 0.02,
                    with_cpu,
                    total_hashes_per_sec: r + cpu,
                    hashes_per_joule: None,
                    power: None,
                })
                .collect(),
            sig: Some(SigBench {
                hashrig_version: "t".into(),
                date: "d".into(),
                command: "c".into(),
                seconds_per_point: 1.0,
                points: sig
                    .iter()
                    .map(|&(scheme, batch, threads, p99, rate)| SigPoint {
                        engine: "cpu".into(),
                        scheme: scheme.into(),
                        batch,
                        threads,
                        p50_seconds: p99 / 2.0,
                        p99_seconds: p99,
                        items_per_sec: rate / threads as f64,
                        saturated_items_per_sec: rate,
                    })
                    .collect(),
            }),
            ..HwProfile::default()
        }
    }

    fn w(h: Option<f64>, s: Option<f64>, batch: usize, p99: Option<f64>) -> Workload {
        Workload { hashrate: h, sigs_per_sec: s, scheme: "ecdsa".into(), batch, p99_max: p99 }
    }

    #[test]
    fn pow_only_counts_cpu_and_gpus() {
        let p = profile(50e6, &[(4e9, false), (4e9, false)], &[]);
        // 8.05 GH/s a machine: 100 GH/s needs 13.
        assert_eq!(machines(&p, &w(Some(100e9), None, 64, None)).1, Ok(13));
        // GPUs measured beside the CPU win over the ones measured alone.
        let p = profile(50e6, &[(4e9, false), (3.5e9, true)], &[]);
        assert_eq!(capacity(&p, &w(None, None, 1, None)).gpu_hashes_per_sec, 3.5e9);
        let p = profile(50e6, &[], &[]);
        assert!(capacity(&p, &w(None, None, 1, None)).gpu_hashes_per_sec.is_sign_positive());
    }

    #[test]
    fn sigs_use_the_largest_batch_within_batch_and_p99() {
        let pts = [
            ("ecdsa", 16, 2, 1e-3, 51_000.0), // noisier than 64, not used for 64
            ("ecdsa", 64, 2, 3e-3, 50_000.0),
            ("ecdsa", 256, 2, 9e-3, 52_000.0),
            ("ecdsa", 64, 1, 5e-3, 26_000.0),
            ("ed25519", 64, 2, 2e-3, 90_000.0),
        ];
        let p = profile(50e6, &[], &pts);
        assert_eq!(capacity(&p, &w(None, None, 64, None)).sigs, Some((50_000.0, 64)));
        assert_eq!(capacity(&p, &w(None, None, 100, None)).sigs, Some((50_000.0, 64)));
        assert_eq!(capacity(&p, &w(None, None, 1024, None)).sigs, Some((52_000.0, 256)));
        assert_eq!(capacity(&p, &w(None, None, 1024, Some(4e-3))).sigs, Some((50_000.0, 64)));
        assert_eq!(capacity(&p, &w(None, None, 8, None)).sigs, None);
        assert_eq!(machines(&p, &w(None, Some(120_000.0), 64, None)).1, Ok(3));
        assert!(machines(&p, &w(None, Some(1.0), 8, None)).1.unwrap_err().contains("no ecdsa point"));
    }

    #[test]
    fn both_on_one_machine_takes_cpu_hashrate_away() {
        // CPU only: 100 MH/s a machine, 100k sigs/s a machine. 150 MH/s and
        // 100k sigs/s: one machine's CPU goes to signatures, so 1.5 + 1 → 3.
        let p = profile(100e6, &[], &[("ecdsa", 64, 2, 1e-3, 100_000.0)]);
        assert_eq!(machines(&p, &w(Some(150e6), Some(100_000.0), 64, None)).1, Ok(3));
        // 500k sigs/s fill five machines' CPUs: even 1 MH/s needs a sixth.
        assert_eq!(machines(&p, &w(Some(1e6), Some(500_000.0), 64, None)).1, Ok(6));
        assert_eq!(machines(&p, &w(None, Some(500_000.0), 64, None)).1, Ok(5));
        // A GPU mines whatever the CPU does.
        let p = profile(100e6, &[(1e9, false)], &[("ecdsa", 64, 2, 1e-3, 100_000.0)]);
        assert_eq!(machines(&p, &w(Some(1e9), Some(100_000.0), 64, None)).1, Ok(1));
    }

    #[test]
    fn missing_measurements_say_so() {
        let mut p = profile(0.0, &[], &[]);
        p.pow_cpu = None;
        p.sig = None;
        assert!(machines(&p, &w(Some(1e9), None, 64, None)).1.unwrap_err().contains("no PoW measurement"));
        assert!(machines(&p, &w(None, Some(1e3), 64, None)).1.unwrap_err().contains("bench sig"));
        assert!(machines(&p, &w(None, None, 64, None)).1.is_err());
    }

    #[test]
    fn nonsense_figures_count_as_not_measured() {
        let mut p = profile(f64::NAN, &[(-1.0, false)], &[("ecdsa", 64, 2, 1e-3, f64::INFINITY)]);
        let c = capacity(&p, &w(None, None, 64, None));
        assert_eq!((c.cpu_hashes_per_sec, c.gpu_hashes_per_sec, c.sigs), (0.0, 0.0, None));
        assert!(machines(&p, &w(Some(1e9), None, 64, None)).1.is_err());
        p.sig = None;
        assert!(machines(&p, &w(None, Some(1.0), 64, None)).1.is_err());
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("2.5TH/s"), Ok(2.5e12));
        assert_eq!(parse_rate("100 GH/s"), Ok(100e9));
        assert_eq!(parse_rate("250k"), Ok(250e3));
        assert_eq!(parse_rate("3e9"), Ok(3e9));
        assert_eq!(parse_rate("40000/s"), Ok(40000.0));
        for bad in ["", "0", "-1", "x", "10X", "NaN", "infT", "1e400"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
