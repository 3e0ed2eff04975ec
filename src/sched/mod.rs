//! Scheduling: the PoW job sequence and nonce cursor, the engines that pull
//! from it, and run-wide statistics.

pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod job;
pub mod sig;
pub mod stats;

pub use cpu::{CpuConfig, CpuEngine};
#[cfg(feature = "gpu")]
pub use gpu::{GpuConfig, GpuEngine};
pub use job::{ActiveJob, Chunk, Hit, PowJob, PowScheduler};
pub use sig::{BatchReport, ExecPath, RateMeter, SigEngine, SigEngineConfig};
pub use sig::{GpuSigEngine, SimSpec, TrustPolicy};
pub use stats::Stats;
