//! hashrig: proof-of-work hashing and batch signature checks on NUMA-pinned
//! CPU cores and GPUs, fed by thin node adapters.
//!
//! Layers (docs/architecture.md has them with what each may know about):
//! - pure algorithms: `chain` (consensus types), `pow` (sha256d paths), `sig`
//!   (signature semantics and CPU batch verifiers);
//! - devices: `gpu` (one adapter: contexts, kernels, dispatch, autotune) and
//!   `health` (GPU health from NVML, the thermal guard);
//! - workers and scheduling: `sched` (PoW job sequence and engines, the
//!   signature engine and its CPU/GPU routing), placed by `topo` (hwloc
//!   discovery and the pinning plan);
//! - node adapters that speak to the outside: `node` (the demo chain,
//!   Stratum V1/V2, getblocktemplate, sigserve);
//! - `runtime`, which starts, reloads and stops all of the above from one
//!   config;
//! - the edge: `cli` (arguments → config → library calls), `metrics` (one
//!   Registry, `/metrics`), `profile` and `plot` (measured hardware profiles,
//!   sizing, plots).

pub mod chain;
pub mod cli;
pub mod date;
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
