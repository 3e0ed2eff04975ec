//! hashrig: proof-of-work hashing and batch signature checks on NUMA-pinned
//! CPU cores and GPUs, fed by thin node adapters.
//!
//! Layers, kept apart as in xmrig and Firedancer: pure algorithms (`chain`,
//! `pow`), workers and scheduling (`sched`), topology (`topo`), and the node
//! adapters that speak to the outside (`node`).

pub mod chain;
pub mod cli;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod health;
pub mod metrics;
pub mod node;
pub mod plot;
pub mod pow;
pub mod profile;
pub mod runtime;
pub mod sched;
pub mod sig;
pub mod topo;
