//! Autotune: workgroup size × nonces per thread, measured per adapter at
//! start-up and cached on disk (keyed by adapter, driver, kernel and
//! hashrig version), so only the first start on a machine pays for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::context::{dispatch_timeout, GpuContext};
use super::kernel::{self, Params};
use super::{AdapterSummary, GpuError};
use crate::pow::{NonceRange, SearchInput};

/// Workgroup size and nonces per thread of the sha256d pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TuneChoice {
    pub wg: u32,
    pub npt: u32,
}

impl TuneChoice {
    /// A safe start everywhere: 64 threads (two NVIDIA warps, one AMD wave),
    /// 32 nonces each.
    pub const DEFAULT: TuneChoice = TuneChoice { wg: 64, npt: 32 };

    /// Within what the adapter allows.
    pub fn clamped(self, a: &AdapterSummary) -> TuneChoice {
        let max_wg = a.max_compute_workgroup_size_x.min(a.max_compute_invocations_per_workgroup).max(1);
        TuneChoice { wg: self.wg.clamp(1, max_wg), npt: self.npt.clamp(1, 4096) }
    }
}

impl std::fmt::Display for TuneChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "workgroup {} x {} nonces/thread", self.wg, self.npt)
    }
}

/// How the engine picks its [`TuneChoice`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TuneMode {
    /// Use this choice, measure nothing.
    Fixed(TuneChoice),
    /// Use the cached choice for this adapter, or measure and cache it.
    /// `cache: None` measures every time.
    Auto { cache: Option<PathBuf>, retune: bool },
}

/// The candidates measured.
pub const WORKGROUPS: [u32; 3] = [64, 128, 256];
pub const NONCES_PER_THREAD: [u32; 3] = [16, 64, 256];

/// Where the cache lives: $HASHRIG_CACHE_DIR, else $XDG_CACHE_HOME/hashrig,
/// else ~/.cache/hashrig.
pub fn default_cache_path() -> Option<PathBuf> {
    let dir = std::env::var_os("HASHRIG_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("hashrig")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/hashrig")))?;
    Some(dir.join("gpu-tune.json"))
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CacheEntry {
    pub choice: TuneChoice,
    pub hashes_per_sec: f64,
    pub date: String,
}

/// The cache key of an adapter for the current kernel and build.
pub fn cache_key(a: &AdapterSummary) -> String {
    format!("{}|kernel {:016x}|hashrig {}", a.cache_key(), kernel::kernel_hash(), env!("CARGO_PKG_VERSION"))
}

fn load(path: &Path) -> BTreeMap<String, CacheEntry> {
    // A missing or damaged cache only costs a re-measurement.
    std::fs::read_to_string(path).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default()
}

fn store(path: &Path, key: String, e: CacheEntry) {
    let mut all = load(path);
    all.insert(key, e);
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&all).unwrap_or_default())?;
        std::fs::rename(tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!("cannot write the GPU tune cache {}: {e}", path.display());
    }
}

/// The cached choice for this context's adapter, if any.
pub fn cached(ctx: &GpuContext, path: &Path) -> Option<CacheEntry> {
    load(path).remove(&cache_key(&ctx.summary))
}

/// Measures every candidate on `ctx` (one dispatch at a time, each about
/// `target_seconds` long) and leaves the fastest set. Returns it with its rate.
pub fn measure(ctx: &mut GpuContext, target_seconds: f64) -> Result<(TuneChoice, f64), GpuError> {
    let input = SearchInput::new(&[0x5a; 80], &[0; 32]);
    let params = Params::for_header(&input);
    // One timed dispatch: kernel time where there are timestamps, else wall.
    let time = |ctx: &mut GpuContext, n: u64, start: u32| -> Result<f64, GpuError> {
        let r = NonceRange::new(start, n);
        ctx.submit(0, &params, r)?;
        let t0 = Instant::now();
        let res = ctx.wait(0, dispatch_timeout(n))?;
        Ok(res.kernel_seconds.unwrap_or_else(|| t0.elapsed().as_secs_f64()).max(1e-6))
    };
    // Size the sample with the default choice: double until it takes long enough.
    ctx.set_tune(TuneChoice::DEFAULT)?;
    let mut n: u64 = 1 << 16;
    loop {
        let dt = time(ctx, n, 0)?;
        if dt >= target_seconds || n >= 1 << 30 {
            break;
        }
        n = (n * 2).max((n as f64 * target_seconds / dt * 1.2) as u64).min(1 << 30);
    }
    let mut best: Option<(TuneChoice, f64)> = None;
    for wg in WORKGROUPS {
        for npt in NONCES_PER_THREAD {
            let c = TuneChoice { wg, npt }.clamped(&ctx.summary);
            if c.wg != wg {
                continue;
            }
            ctx.set_tune(c)?;
            time(ctx, n, 1 << 31)?; // warm-up (pipeline compile, clocks)
            let dt = time(ctx, n, 1 << 31)?.min(time(ctx, n, 1 << 31)?);
            let rate = n as f64 / dt;
            tracing::debug!(adapter = %ctx.summary.name, "autotune {c}: {:.3} MH/s", rate / 1e6);
            if best.is_none_or(|(_, r)| rate > r) {
                best = Some((c, rate));
            }
        }
    }
    let (choice, rate) = best.unwrap_or((TuneChoice::DEFAULT, 0.0));
    ctx.set_tune(choice)?;
    Ok((choice, rate))
}

/// Applies `mode` to `ctx`: a fixed choice, the cached one, or a fresh
/// measurement that is then cached. Returns the choice in use.
pub fn apply(ctx: &mut GpuContext, mode: &TuneMode) -> Result<TuneChoice, GpuError> {
    match mode {
        TuneMode::Fixed(c) => {
            ctx.set_tune(*c)?;
        }
        TuneMode::Auto { cache, retune } => {
            if let Some(e) = cache.as_deref().filter(|_| !retune).and_then(|p| cached(ctx, p)) {
                tracing::info!(adapter = %ctx.summary.name, "GPU tune from cache: {}", e.choice);
                ctx.set_tune(e.choice)?;
            } else {
                let t0 = Instant::now();
                let (choice, rate) = measure(ctx, 0.02)?;
                tracing::info!(
                    adapter = %ctx.summary.name,
                    "GPU autotune: {choice} at {:.2} MH/s (took {:.1} s)",
                    rate / 1e6,
                    t0.elapsed().as_secs_f64()
                );
                if let Some(p) = cache {
                    store(
                        p,
                        cache_key(&ctx.summary),
                        CacheEntry { choice, hashes_per_sec: rate, date: crate::date::utc_date() },
                    );
                }
            }
        }
    }
    Ok(ctx.tune)
}
