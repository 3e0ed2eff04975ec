//! What the GPU tests share: the adapter they run on. Lavapipe (Mesa's CPU
//! Vulkan driver, `make deps`) where there is no GPU; no adapter at all is
//! a failure, never a skip.

/// The first Vulkan adapter, or a panic that says how to get one.
pub fn first_adapter() -> hashrig::gpu::GpuAdapter {
    hashrig::gpu::adapters().into_iter().next().unwrap_or_else(|| {
        panic!(
            "no Vulkan adapter found: the GPU tests need one (install mesa-vulkan-drivers for lavapipe: `make deps`)"
        )
    })
}
