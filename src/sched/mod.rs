//! Scheduling: the PoW job sequence and nonce cursor, the engines that pull
//! from it, and run-wide statistics.

pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod job;
pub mod sig;
#[cfg(feature = "gpu")]
pub mod sig_gpu;
pub mod stats;

pub use cpu::{CpuConfig, CpuEngine};
#[cfg(feature = "gpu")]
pub use gpu::{GpuConfig, GpuEngine};
pub use job::{ActiveJob, Chunk, Hit, PowJob, PowScheduler};
pub use sig::{BatchReport, ExecPath, RateMeter, SigEngine, SigEngineConfig};
#[cfg(feature = "gpu")]
pub use sig_gpu::{GpuSigEngine, TrustPolicy};
pub use stats::Stats;
