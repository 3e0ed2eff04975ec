//! A probe kernel run for the field tests: WGSL in, u32 words out, on the
//! first Vulkan adapter (lavapipe in CI).

use std::time::Duration;

/// Little-endian 13-bit limbs (up to 21 of them) as a decimal number, for
/// comparing with Python's integers (no bigint crate needed).
pub fn limbs_to_decimal(l: &[u32]) -> String {
    let mut n = [0u32; 9];
    for (i, &x) in l.iter().enumerate() {
        for bit in 0..13 {
            if x >> bit & 1 == 1 {
                let b = 13 * i + bit;
                n[b / 32] |= 1 << (b % 32);
            }
        }
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
/// returns them.
pub fn run(src: &str, input: &[u32], invocations: u32, out_words: usize) -> Vec<u32> {
    let a = hashrig::gpu::adapters().into_iter().next().expect("no Vulkan adapter: install mesa-vulkan-drivers");
    let (device, queue) = pollster::block_on(a.adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
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
