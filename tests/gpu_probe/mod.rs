//! A probe kernel run for the field tests: WGSL in, u32 words out, on the
//! first Vulkan adapter (lavapipe in CI).

use std::time::Duration;

/// Little-endian 13-bit limbs (up to 21 of them) as a decimal number, for
/// comparing with Python's integers (no bigint crate needed).
#[allow(dead_code)] // not every test binary uses both
pub fn limbs_to_decimal(l: &[u32]) -> String {
    bits_to_decimal(l, 13)
}

/// Little-endian limbs at `bits` bits apart (a limb may hold more: loose
/// values; below 2^320 in all) as a decimal number.
pub fn bits_to_decimal(l: &[u32], bits: usize) -> String {
    let mut n = [0u32; 10];
    for (i, &x) in l.iter().enumerate() {
        // Add x << (bits * i): limbs of a loose value overlap.
        let (k, off) = ((bits * i) / 32, (bits * i) % 32);
        let mut carry = (x as u64) << off;
        for w in n[k..].iter_mut() {
            let sum = *w as u64 + (carry & 0xffff_ffff);
            *w = sum as u32;
            carry = (carry >> 32) + (sum >> 32);
        }
        assert_eq!(carry, 0, "value too large");
    }
    // Decimal by repeated division of the little-endian number by 10.
    let mut digits = Vec::new();
    while n.iter().any(|&w| w != 0) {
        let mut rem = 0u64;
        for w in n.iter_mut().rev() {
            let cur = (rem << 32) | *w as u64;
            *w = (cur / 10) as u32;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap()
}

/// Runs entry point `probe` of `src` (workgroup size 1) over `invocations`
/// invocations, binding 0 = `input`, binding 1 = `out_words` words, and
/// returns them. A source with 64-bit integers gets a device with
/// SHADER_INT64 (lavapipe has it).
pub fn run(src: &str, input: &[u32], invocations: u32, out_words: usize) -> Vec<u32> {
    let a = hashrig::gpu::adapters().into_iter().next().expect("no Vulkan adapter: install mesa-vulkan-drivers");
    let mut desc = wgpu::DeviceDescriptor::default();
    if src.contains("u64") {
        assert!(
            a.adapter.features().contains(wgpu::Features::SHADER_INT64),
            "{} has no SHADER_INT64: the 64-bit field cannot be tested on it",
            a.summary.name
        );
        desc.required_features = wgpu::Features::SHADER_INT64;
    }
    let (device, queue) = pollster::block_on(a.adapter.request_device(&desc)).unwrap();
    let desc = wgpu::ShaderModuleDescriptor { label: Some("probe"), source: wgpu::ShaderSource::Wgsl(src.into()) };
    let module = device.create_shader_module(desc);
    let inp = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4 * input.len() as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&inp, 0, bytemuck::cast_slice(input));
    let outb = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4 * out_words as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4 * out_words as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &module,
        entry_point: Some("probe"),
        compilation_options: Default::default(),
        cache: None,
    });
    let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: inp.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: outb.as_entire_binding() },
        ],
    });
    let mut enc = device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(invocations, 1, 1);
    }
    enc.copy_buffer_to_buffer(&outb, 0, &staging, 0, 4 * out_words as u64);
    queue.submit([enc.finish()]);
    staging.slice(..).map_async(wgpu::MapMode::Read, |_| {});
    device.poll(wgpu::PollType::Wait { submission_index: None, timeout: Some(Duration::from_secs(300)) }).unwrap();
    let v = staging.slice(..).get_mapped_range().unwrap();
    bytemuck::cast_slice(&v).to_vec()
}
