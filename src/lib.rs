//! hashrig: proof-of-work hashing and batch signature checks on NUMA-pinned
//! CPU cores and GPUs, fed by thin node adapters.
//!
//! Layers, top to bottom (docs/architecture.md has them with what each may
//! know about); a module imports only from its own layer or below, and no
//! modules import each other in a circle:
//! - the edge: `cli` (arguments → config → library calls) and `plot`
//!   (profile charts);
//! - `runtime`, which starts, reloads and stops all of the below from one
//!   config;
//! - node adapters that speak to the outside: `node` (the demo chain,
//!   Stratum V1/V2, getblocktemplate, sigserve);
//! - workers and scheduling: `sched` (PoW job sequence and engines, the
//!   signature engine and its CPU/GPU routing);
//! - measurements: `metrics` (one Registry, `/metrics`) and `profile`
//!   (measured hardware profiles, sizing);
//! - `health`: GPU health from NVML, the thermal guard;
//! - devices: `gpu` (one adapter: contexts, kernels, dispatch, autotune,
//!   and what the engines and the guard on it share);
//! - pure algorithms and the machine: `chain` (consensus types), `pow`
//!   (sha256d paths), `sig` (signature semantics and CPU batch verifiers),
//!   `topo` (hwloc discovery and the pinning plan), `date`.

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
