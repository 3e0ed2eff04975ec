//! Node adapters: each turns a protocol into jobs for the scheduler and
//! results back into protocol messages. They know nothing about devices.

pub mod config;
pub mod demo;
pub mod gbt;
pub mod sigfeed;
pub mod sigserve;
pub mod stratum;
pub mod tls;
