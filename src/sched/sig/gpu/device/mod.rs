//! What the GPU side of the signature engine drives: a device that takes a
//! batch of items and answers later. Two kinds: an adapter's wgpu kernels
//! ([`WgpuDevice`], feature `gpu`) and a simulated device with a given fixed
//! latency and rate ([`super::sim::SimDevice`]). The engine above them, its
//! queue, trust policy, cost model and metrics, is the same for both.

use std::time::{Duration, Instant};

use crate::sig::{SigItem, Verdict};

/// Why a device could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeviceError {
    #[error("the device was lost: {0}")]
    Lost(String),
    #[error("a dispatch did not finish within {0:?}")]
    Timeout(Duration),
    #[error("device error: {0}")]
    Driver(String),
}

#[cfg(feature = "gpu")]
impl From<crate::gpu::GpuError> for DeviceError {
    fn from(e: crate::gpu::GpuError) -> DeviceError {
        use crate::gpu::GpuError as G;
        match e {
            G::DeviceLost(s) => DeviceError::Lost(s),
            G::Timeout(t) => DeviceError::Timeout(t),
            other => DeviceError::Driver(other.to_string()),
        }
    }
}

/// A finished dispatch: one verdict per item (`None`: the device has no
/// kernel for it) and when the device had them ready.
pub struct DeviceAnswer {
    pub verdicts: Vec<Option<Verdict>>,
    pub ready: Instant,
}

/// A dispatch on its way; waited for on another thread than the one that
/// submitted it.
pub trait InFlight: Send {
    fn wait(self: Box<Self>, timeout: Duration) -> Result<DeviceAnswer, DeviceError>;
}

/// Adapter indices of simulated devices start here, clear of real ones.
pub const SIM_INDEX_BASE: usize = 1000;

/// What a device says about itself.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// Adapter name (or the simulation's parameters).
    pub name: String,
    /// The adapter's enumeration index ("gpu0" …), for labels and for
    /// sharing the adapter with PoW; a simulated device has its own range.
    pub index: usize,
    /// A CPU Vulkan driver (lavapipe).
    pub software: bool,
    /// Not a device at all: answers are modelled (never in a profile as a GPU).
    pub simulated: bool,
}

impl DeviceInfo {
    /// The metric label: "gpu0" by the adapter's enumeration index
    /// ([`crate::gpu::label`]), "sim0" for the first simulated device.
    pub fn label(&self) -> String {
        if self.simulated {
            format!("sim{}", self.index.saturating_sub(SIM_INDEX_BASE))
        } else {
            crate::gpu::label(self.index)
        }
    }
}

pub trait SigDevice: Send + Sync {
    fn info(&self) -> &DeviceInfo;
    /// Dispatches it keeps in flight at most.
    fn max_in_flight(&self) -> usize;
    /// Items in one dispatch at most.
    fn max_items(&self) -> usize;
    /// Starts verifying `items`; returns once they are handed over (the
    /// host's encoding runs here, on the calling thread's rayon pool).
    fn submit(&self, items: &[&SigItem]) -> Result<Box<dyn InFlight>, DeviceError>;
    /// While signature dispatches are pending on the adapter a PoW engine
    /// on it yields (see `gpu::share`); `None` for a device that shares
    /// nothing.
    fn hold_adapter(&self) -> Option<Box<dyn Send>> {
        None
    }
    /// The engine's start-up self-test and measurements are done.
    fn started(&self) {}
    /// The engine stopped using the device for good (taken off or shut
    /// down): give the adapter back to mining.
    fn release(&self) {}
}

#[cfg(feature = "gpu")]
pub use adapter::WgpuDevice;

#[cfg(feature = "gpu")]
mod adapter;
