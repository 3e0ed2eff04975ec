//! The one place that owns CPU feature detection and backend choice.
//!
//! The choice is made by measurement, not by preference: which of SHA-NI and
//! AVX-512 is faster depends on the CPU model (on a Xeon without SHA
//! extensions AVX-512 wins by default; where both exist it is a race), so
//! [`detect`] times every runnable path for a few milliseconds on the calling
//! core, once per process, and picks the fastest.

use core::fmt;
use core::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{NonceRange, SearchInput};

/// A nonce-scanning kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Our portable SHA-256; the reference.
    Scalar,
    /// `sha2::block_api::compress256` from the midstate (uses SHA-NI when present).
    Midstate,
    /// x86_64 SHA extensions, two nonces interleaved.
    ShaNi,
    /// x86_64 AVX2, eight nonces in eight lanes.
    Avx2,
    /// x86_64 AVX-512F, sixteen nonces in sixteen lanes.
    Avx512,
}

/// Every backend, in no particular order.
const ALL: [Backend; 5] = [Backend::Scalar, Backend::Midstate, Backend::ShaNi, Backend::Avx2, Backend::Avx512];

/// The order [`available`] lists paths in: the expected speed before any
/// measurement (Zen 3: SHA-NI first). Only a listing order; [`detect`] measures.
const BY_SPEED: [Backend; 5] = [Backend::ShaNi, Backend::Avx512, Backend::Avx2, Backend::Midstate, Backend::Scalar];

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Scalar => "scalar",
            Backend::Midstate => "midstate",
            Backend::ShaNi => "sha-ni",
            Backend::Avx2 => "avx2",
            Backend::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the backend (run-time detection).
    pub fn is_available(&self) -> bool {
        match self {
            Backend::Scalar | Backend::Midstate => true,
            #[cfg(target_arch = "x86_64")]
            Backend::ShaNi => {
                std::is_x86_feature_detected!("sha")
                    && std::is_x86_feature_detected!("sse4.1")
                    && std::is_x86_feature_detected!("ssse3")
            }
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => std::is_x86_feature_detected!("avx2"),
            // Also checks that the OS saves the zmm registers (XCR0).
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => std::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Backend::ShaNi | Backend::Avx2 | Backend::Avx512 => false,
        }
    }

    /// The backend that will actually run: itself, or Scalar where this CPU
    /// lacks its instructions (so a wrong choice is slow, never a SIGILL).
    pub(crate) fn runnable(self) -> Backend {
        if self.is_available() {
            self
        } else {
            Backend::Scalar
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error from parsing a backend name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownBackend(pub String);

impl fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown backend {:?} (expected scalar, midstate, sha-ni, avx2 or avx512)", self.0)
    }
}

impl std::error::Error for UnknownBackend {}

impl FromStr for Backend {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        match norm.as_str() {
            "scalar" => Ok(Backend::Scalar),
            "midstate" => Ok(Backend::Midstate),
            "sha-ni" | "shani" => Ok(Backend::ShaNi),
            "avx2" => Ok(Backend::Avx2),
            "avx512" | "avx-512" => Ok(Backend::Avx512),
            _ => Err(UnknownBackend(s.to_string())),
        }
    }
}

/// Backends compiled in for this target: on non-x86_64 only Scalar and Midstate.
pub fn compiled() -> &'static [Backend] {
    if cfg!(target_arch = "x86_64") {
        &ALL
    } else {
        &ALL[..2]
    }
}

/// Backends this CPU can run, detected at run time, in the expected speed
/// order (see [`detect`] for the measured choice).
pub fn available() -> Vec<Backend> {
    BY_SPEED.iter().copied().filter(|b| compiled().contains(b) && b.is_available()).collect()
}

/// One path's rate from a short timing run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathRate {
    pub backend: Backend,
    /// Nonces per second on one thread.
    pub hashes_per_sec: f64,
}

/// Times each of `paths` on the calling thread for about `per_path`, in
/// `rounds` alternated rounds (a burst of load from elsewhere then hits every
/// path alike), and keeps each path's best round, the least disturbed one.
/// Returns the rates fastest first.
pub fn measure(paths: &[Backend], per_path: Duration, rounds: u32) -> Vec<PathRate> {
    // Any header; a zero target is met by no hash, so no candidate reaches
    // the scalar confirmation and only the kernel is timed.
    let header: [u8; 80] = core::array::from_fn(|i| (i as u8).wrapping_mul(29).wrapping_add(3));
    let input = SearchInput::new(&header, &[0; 32]);
    let mut best = vec![0.0f64; paths.len()];
    let mut hits = Vec::new();
    let mut start = 0u32;
    for _ in 0..rounds.max(1) {
        for (b, best) in paths.iter().zip(best.iter_mut()) {
            // Small steps so that even the scalar path stays near `per_path`.
            const STEP: u32 = 512;
            let (t0, mut done) = (Instant::now(), 0u64);
            while t0.elapsed() < per_path {
                super::scan(*b, &input, NonceRange::new(start, STEP as u64), &mut hits);
                start = start.wrapping_add(STEP);
                done += STEP as u64;
            }
            *best = best.max(done as f64 / t0.elapsed().as_secs_f64());
        }
    }
    let mut rates: Vec<PathRate> =
        paths.iter().zip(best).map(|(&backend, hashes_per_sec)| PathRate { backend, hashes_per_sec }).collect();
    rates.sort_by(|a, b| b.hashes_per_sec.total_cmp(&a.hashes_per_sec));
    rates
}

/// The fastest of `rates`; Scalar when there are none.
pub fn fastest(rates: &[PathRate]) -> Backend {
    rates.iter().max_by(|a, b| a.hashes_per_sec.total_cmp(&b.hashes_per_sec)).map_or(Backend::Scalar, |r| r.backend)
}

/// The path [`detect`] chose, and the figures it chose by.
#[derive(Clone, Debug)]
pub struct Selection {
    pub chosen: Backend,
    /// Every runnable path, fastest first.
    pub rates: Vec<PathRate>,
    pub per_path: Duration,
    pub rounds: u32,
}

impl fmt::Display for Selection {
    /// `avx512 by measurement (MH/s on one core: avx512 55.1, sha-ni 27.3, …; best of 3 × 3 ms)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let figures: Vec<String> =
            self.rates.iter().map(|r| format!("{} {:.1}", r.backend, r.hashes_per_sec / 1e6)).collect();
        write!(
            f,
            "{} by measurement (MH/s on one core: {}; best of {} × {} ms)",
            self.chosen,
            figures.join(", "),
            self.rounds,
            self.per_path.as_millis()
        )
    }
}

/// Per path and round: 3 rounds of 3 ms over 5 paths is ~50 ms at start-up.
const SELECT_PER_PATH: Duration = Duration::from_millis(3);
const SELECT_ROUNDS: u32 = 3;

/// The measured choice, made on first use and kept for the process.
pub fn selection() -> &'static Selection {
    static SELECTION: OnceLock<Selection> = OnceLock::new();
    SELECTION.get_or_init(|| {
        let rates = measure(&available(), SELECT_PER_PATH, SELECT_ROUNDS);
        Selection { chosen: fastest(&rates), rates, per_path: SELECT_PER_PATH, rounds: SELECT_ROUNDS }
    })
}

/// The fastest backend this CPU runs, as measured on this core (see [`selection`]).
pub fn detect() -> Backend {
    selection().chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fastest_is_the_highest_rate_whatever_the_listing_order() {
        let r = |backend, mhs: f64| PathRate { backend, hashes_per_sec: mhs * 1e6 };
        // SHA-NI first in the listing order, slower in the figures: avx512 wins.
        let rates = [r(Backend::ShaNi, 27.0), r(Backend::Avx512, 41.0), r(Backend::Avx2, 14.0)];
        assert_eq!(fastest(&rates), Backend::Avx512);
        let rates = [r(Backend::ShaNi, 27.0), r(Backend::Avx512, 21.0), r(Backend::Scalar, 1.7)];
        assert_eq!(fastest(&rates), Backend::ShaNi);
        assert_eq!(fastest(&[]), Backend::Scalar);
    }

    #[test]
    fn measure_times_every_path_and_sorts_fastest_first() {
        let paths = available();
        let rates = measure(&paths, Duration::from_millis(1), 1);
        assert_eq!(rates.len(), paths.len());
        for p in &paths {
            assert!(rates.iter().any(|r| r.backend == *p && r.hashes_per_sec > 0.0), "{p}");
        }
        assert!(rates.windows(2).all(|w| w[0].hashes_per_sec >= w[1].hashes_per_sec));
        // Which path wins is the hardware's business (under an emulator the
        // scalar path can); the choice must be the measured winner.
        let s = selection();
        assert!(paths.contains(&s.chosen) && s.chosen == detect());
        assert_eq!(s.chosen, s.rates[0].backend);
    }
}
