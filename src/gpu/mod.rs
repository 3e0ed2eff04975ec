//! The GPU side of proof of work, through wgpu on Vulkan.
//!
//! - [`adapters`]: every Vulkan adapter, with what `hashrig devices` prints and
//!   whether it is usable (software rasterisers such as llvmpipe/lavapipe are
//!   skipped unless asked for);
//! - [`context::GpuContext`]: built once per adapter (device, queue, pipeline,
//!   a ring of per-dispatch buffers), runs the sha256d kernel;
//! - [`tune`]: workgroup size and nonces per thread, measured once per adapter
//!   and kernel and cached on disk;
//! - [`share`]: what the PoW engine, the signature engine and the thermal
//!   guard on one adapter share (signature priority, the duty cycle), and
//!   [`label`], the adapter's `gpuN` name. These two are compiled without
//!   the `gpu` feature too; everything else needs it.
//!
//! Nothing a driver reports may panic the process: wgpu's default error
//! handler (which panics) is replaced, device loss is a flag the engine reads,
//! and every call that can fail returns [`GpuError`].

#[cfg(feature = "gpu")]
pub mod context;
#[cfg(feature = "gpu")]
pub mod kernel;
pub mod share;
#[cfg(feature = "gpu")]
pub mod sig;
#[cfg(feature = "gpu")]
pub mod tune;

#[cfg(feature = "gpu")]
pub use context::{ContextOptions, DispatchResult, GpuContext};
pub use share::{AdapterShare, AdapterShares};
#[cfg(feature = "gpu")]
pub use tune::{TuneChoice, TuneMode};

#[cfg(feature = "gpu")]
use serde::Serialize;

/// The label of adapter `index` in metrics, logs and profiles: `"gpu0"`, by
/// its wgpu enumeration index (the `--gpu-devices` index).
pub fn label(index: usize) -> String {
    format!("gpu{index}")
}

#[cfg(feature = "gpu")]
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no usable GPU adapter (found: {0}); software adapters need --gpu-allow-software")]
    NoAdapter(String),
    #[error("GPU adapter index {0} does not exist")]
    BadIndex(usize),
    #[error("requesting the device failed: {0}")]
    RequestDevice(String),
    #[error("the adapter lacks what the kernel needs: {0}")]
    Unsupported(String),
    #[error("kernel compilation failed: {0}")]
    Compile(String),
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    #[error("GPU error: {0}")]
    Driver(String),
    #[error("a dispatch did not finish within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the GPU self-test failed: {0}")]
    SelfTest(String),
}

#[cfg(feature = "gpu")]
/// One adapter as `hashrig devices` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterSummary {
    /// Position in the enumeration (the `--gpu-devices` index).
    pub index: usize,
    pub name: String,
    pub vendor: u32,
    pub device: u32,
    /// PCI bus id (`"0000:17:00.0"`) where the driver reports one (Vulkan's
    /// `VK_EXT_pci_bus_info`), else empty. Matches the adapter to hwloc's
    /// PCI device and so to its NUMA node (`topo::locality`).
    pub pci_bus_id: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub backend: String,
    /// A CPU implementation (llvmpipe/lavapipe, SwiftShader).
    pub software: bool,
    pub timestamps: bool,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    pub max_compute_workgroup_size_x: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_storage_buffer_binding_size: u64,
}

#[cfg(feature = "gpu")]
impl AdapterSummary {
    fn of(index: usize, a: &wgpu::Adapter) -> AdapterSummary {
        let i = a.get_info();
        let l = a.limits();
        AdapterSummary {
            index,
            name: i.name.clone(),
            vendor: i.vendor,
            device: i.device,
            pci_bus_id: i.device_pci_bus_id.clone(),
            device_type: format!("{:?}", i.device_type),
            driver: i.driver.clone(),
            driver_info: i.driver_info.clone(),
            backend: i.backend.to_str().to_string(),
            software: i.device_type == wgpu::DeviceType::Cpu,
            timestamps: a.features().contains(wgpu::Features::TIMESTAMP_QUERY),
            subgroup_min_size: i.subgroup_min_size,
            subgroup_max_size: i.subgroup_max_size,
            max_compute_workgroup_size_x: l.max_compute_workgroup_size_x,
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
        }
    }

    /// One line: name, type, driver, backend and the limits that size dispatches.
    pub fn line(&self) -> String {
        format!(
            "{}: {} ({}, {:04x}:{:04x}) | driver {} {} | backend {} | subgroup {}..{} | workgroup x<={} invocations<={} groups/dim<={} | storage<={} MiB | timestamps {}{}",
            self.label(),
            self.name,
            self.device_type,
            self.vendor,
            self.device,
            self.driver,
            self.driver_info,
            self.backend,
            self.subgroup_min_size,
            self.subgroup_max_size,
            self.max_compute_workgroup_size_x,
            self.max_compute_invocations_per_workgroup,
            self.max_compute_workgroups_per_dimension,
            self.max_storage_buffer_binding_size >> 20,
            if self.timestamps { "yes" } else { "no" },
            if self.software { " | software (skipped unless --gpu-allow-software)" } else { "" },
        )
    }

    /// Its label, `"gpu0"` ([`label`]).
    pub fn label(&self) -> String {
        label(self.index)
    }

    /// What identifies the adapter on the PCI bus.
    pub fn pci_identity(&self) -> crate::topo::PciIdentity<'_> {
        crate::topo::PciIdentity { vendor: self.vendor, device: self.device, bus_id: &self.pci_bus_id }
    }

    /// The NUMA node nearest the adapter's PCI slot
    /// ([`Topology::numa_node_for`](crate::topo::Topology::numa_node_for));
    /// `None` when hwloc does not know it.
    pub fn numa_node(&self, topo: &crate::topo::Topology) -> Option<u32> {
        topo.numa_node_for(&self.pci_identity())
    }

    /// The CPUs that should feed the adapter
    /// ([`Topology::feeder_affinity`](crate::topo::Topology::feeder_affinity)):
    /// pass them to [`crate::topo::pin_to_node_or_warn`] at the start of the
    /// thread that packs, submits and re-checks its work. `None` when the
    /// locality is unknown (leave the thread unpinned).
    pub fn feeder_affinity(&self, topo: &crate::topo::Topology) -> Option<crate::topo::NodeAffinity> {
        topo.feeder_affinity(&self.pci_identity())
    }

    /// Identifies the adapter and driver in the autotune cache.
    pub fn cache_key(&self) -> String {
        format!(
            "{}|{:04x}:{:04x}|{}|{}|{}",
            self.name, self.vendor, self.device, self.driver, self.driver_info, self.backend
        )
    }
}

#[cfg(feature = "gpu")]
/// An adapter found by [`adapters`].
pub struct GpuAdapter {
    pub summary: AdapterSummary,
    pub adapter: wgpu::Adapter,
}

#[cfg(feature = "gpu")]
/// A device's loss flag and the reason it was set.
pub type Loss = (std::sync::Arc<std::sync::atomic::AtomicBool>, std::sync::Arc<parking_lot::Mutex<String>>);

#[cfg(feature = "gpu")]
/// A device and queue on `adapter` with the adapter's own limits and
/// `features` (only ones it has: request_device panics otherwise), and
/// wgpu's panicking error handler replaced by a loss flag: a device lost or
/// a GPU error marks it, so the engine stops using the device.
pub fn open_device(
    adapter: &GpuAdapter,
    label: &str,
    features: wgpu::Features,
) -> Result<(wgpu::Device, wgpu::Queue, Loss), GpuError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let a = &adapter.adapter;
    let desc = wgpu::DeviceDescriptor {
        label: Some(label),
        required_features: features,
        required_limits: a.limits(),
        ..Default::default()
    };
    let (device, queue) =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pollster::block_on(a.request_device(&desc))))
            .map_err(|_| GpuError::RequestDevice("wgpu panicked while requesting the device".into()))?
            .map_err(|e| GpuError::RequestDevice(e.to_string()))?;
    let lost = Arc::new(AtomicBool::new(false));
    let lost_reason = Arc::new(parking_lot::Mutex::new(String::new()));
    let (flag, why) = (lost.clone(), lost_reason.clone());
    device.set_device_lost_callback(move |reason, msg| {
        // Dropping the owner destroys the device: not a loss.
        if reason != wgpu::DeviceLostReason::Destroyed {
            *why.lock() = format!("{reason:?}: {msg}");
            flag.store(true, Ordering::Release);
        }
    });
    let (flag, why) = (lost.clone(), lost_reason.clone());
    let (name, label) = (adapter.summary.name.clone(), label.to_string());
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        tracing::error!(adapter = %name, "GPU error ({label}): {e}");
        let mut w = why.lock();
        if w.is_empty() {
            *w = e.to_string();
        }
        flag.store(true, Ordering::Release);
    }));
    Ok((device, queue, (lost, lost_reason)))
}

#[cfg(feature = "gpu")]
/// The wgpu instance: Vulkan only (the one backend compiled in).
pub fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = wgpu::Backends::VULKAN;
    // Validation layers are for wgpu's own debugging; never in a miner.
    desc.flags.remove(wgpu::InstanceFlags::VALIDATION | wgpu::InstanceFlags::DEBUG);
    wgpu::Instance::new(desc)
}

#[cfg(feature = "gpu")]
/// Every Vulkan adapter on this machine, in enumeration order. Enumeration
/// itself is guarded: a driver that panics inside wgpu yields no adapters.
pub fn adapters() -> Vec<GpuAdapter> {
    let found = std::panic::catch_unwind(|| {
        let inst = instance();
        pollster::block_on(inst.enumerate_adapters(wgpu::Backends::VULKAN))
    });
    match found {
        Ok(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, adapter)| GpuAdapter { summary: AdapterSummary::of(i, &adapter), adapter })
            .collect(),
        Err(_) => {
            tracing::error!("GPU adapter enumeration panicked inside the driver stack; no GPU is used");
            Vec::new()
        }
    }
}

#[cfg(feature = "gpu")]
/// The adapters mining may use: hardware ones, plus software ones when
/// `allow_software`.
pub fn usable_adapters(allow_software: bool) -> Vec<GpuAdapter> {
    adapters().into_iter().filter(|a| allow_software || !a.summary.software).collect()
}

#[cfg(feature = "gpu")]
/// Why no adapter was usable, for error messages: every adapter seen.
pub fn describe_all(list: &[GpuAdapter]) -> String {
    if list.is_empty() {
        "no Vulkan adapter at all".to_string()
    } else {
        list.iter()
            .map(|a| format!("{}{}", a.summary.name, if a.summary.software { " (software)" } else { "" }))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
