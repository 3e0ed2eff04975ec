//! The one place that owns CPU feature detection and backend choice.

use core::fmt;
use core::str::FromStr;

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

/// Fastest first, as measured on AMD Zen 3 (benches/sha256d.rs): see `detect`.
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

/// Backends this CPU can run, detected at run time, fastest first.
pub fn available() -> Vec<Backend> {
    BY_SPEED.iter().copied().filter(|b| compiled().contains(b) && b.is_available()).collect()
}

/// The fastest backend this CPU can run.
pub fn detect() -> Backend {
    available().first().copied().unwrap_or(Backend::Scalar)
}
