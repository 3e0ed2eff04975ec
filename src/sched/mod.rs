//! Scheduling: the PoW job sequence and nonce cursor, the engines that pull
//! from it, and run-wide statistics.

pub mod cpu;
pub mod job;
pub mod stats;

pub use cpu::{CpuConfig, CpuEngine};
pub use job::{ActiveJob, Chunk, Hit, PowJob, PowScheduler};
pub use stats::Stats;
