//! `hashrig scan`: the debugging command that hashes a given range of nonces
//! of one header and prints every hit. Later checks (and people) rely on its
//! exact output: one JSON line per hit, ascending nonce,
//! `{"nonce":N,"hash":"<display-order hex>"}`; exit 0; bad input exits 2.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::{Args, ValueEnum};

use crate::chain::{BlockHash, CompactTarget, Header, Target};
use crate::pow::{self, NonceRange, SearchInput};

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanEngine {
    Cpu,
    /// Every usable GPU adapter (and no CPU thread).
    Gpu,
    /// CPU threads and GPU adapters pulling slices of the same range.
    All,
}

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// The 80-byte header as 160 hex characters (its nonce field is ignored).
    #[arg(long)]
    pub header: String,
    /// First nonce.
    #[arg(long)]
    pub start: u32,
    /// Number of nonces; the range stops at the last nonce, 0xffffffff.
    #[arg(long)]
    pub count: u64,
    /// Target as nBits (8 hex characters); default: the header's own nBits.
    #[arg(long, conflicts_with = "target")]
    pub bits: Option<String>,
    /// Target as 64 hex characters, big-endian.
    #[arg(long)]
    pub target: Option<String>,
    /// Threads (default: every CPU).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    #[arg(long, value_enum, default_value = "cpu")]
    pub engine: ScanEngine,
    /// SHA-256d code path (default: the fastest available).
    #[arg(long)]
    pub backend: Option<pow::Backend>,
    #[command(flatten)]
    pub gpu: super::gpu::GpuArgs,
}

fn bad_input(msg: impl std::fmt::Display) -> anyhow::Result<ExitCode> {
    eprintln!("error: {msg}");
    Ok(ExitCode::from(2))
}

pub fn main(a: ScanArgs) -> anyhow::Result<ExitCode> {
    let header = match Header::from_hex(&a.header) {
        Ok(h) => h,
        Err(e) => return bad_input(format_args!("--header: {e}")),
    };
    let target = match (&a.bits, &a.target) {
        (Some(b), _) => match CompactTarget::from_hex(b) {
            Ok(bits) => match Target::from_compact(bits) {
                Ok(t) => t,
                Err(e) => return bad_input(format_args!("--bits: {e}")),
            },
            Err(e) => return bad_input(format_args!("--bits: {e}")),
        },
        (None, Some(t)) => match Target::from_hex(t) {
            Ok(t) => t,
            Err(e) => return bad_input(format_args!("--target: {e}")),
        },
        (None, None) => match header.target() {
            Ok(t) => t,
            Err(e) => return bad_input(format_args!("the header's nBits: {e}")),
        },
    };
    let backend = match a.backend {
        None => pow::detect(),
        Some(b) if pow::available().contains(&b) => b,
        Some(b) => return bad_input(format_args!("backend {} is not available on this CPU", b.name())),
    };
    if a.threads == Some(0) {
        return bad_input("--threads must be at least 1");
    }
    let range = NonceRange::new(a.start, a.count);
    if range.len() < a.count {
        eprintln!("note: nonces stop at 0xffffffff; scanning {} of the {} asked for", range.len(), a.count);
    }
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let hits = match a.engine {
        ScanEngine::Cpu => scan_parallel(backend, &header, &target, range, threads),
        ScanEngine::Gpu | ScanEngine::All => {
            let cpu_threads = if a.engine == ScanEngine::All { threads } else { 0 };
            match scan_gpu(backend, &header, &target, range, cpu_threads, &a.gpu) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(1));
                }
            }
        }
    };
    let mut out = String::new();
    for (nonce, hash) in hits {
        out.push_str(&format!("{{\"nonce\":{nonce},\"hash\":\"{hash}\"}}\n"));
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Scans `range` on `threads` threads pulling fixed slices from a shared
/// cursor (so a slow thread does not hold the rest up), re-checks every hit
/// through the independent header hash, and returns them sorted by nonce.
pub fn scan_parallel(
    backend: pow::Backend,
    header: &Header,
    target: &Target,
    range: NonceRange,
    threads: usize,
) -> Vec<(u32, BlockHash)> {
    const SLICE: u64 = 1 << 20;
    let input = SearchInput::new(&header.to_bytes(), &target.to_le_bytes());
    let cursor = AtomicU64::new(range.start as u64);
    let all: Vec<u32> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut hits = Vec::new();
                    loop {
                        let a = cursor.fetch_add(SLICE, Ordering::Relaxed);
                        if a >= range.end {
                            break;
                        }
                        let r = NonceRange { start: a as u32, end: (a + SLICE).min(range.end) };
                        pow::scan(backend, &input, r, &mut hits);
                    }
                    hits
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("scan thread panicked")).collect()
    });
    recheck(header, target, all)
}

/// Sorts kernel results and re-checks each through the independent header
/// hash; one that fails is reported as a hardware error and dropped.
fn recheck(header: &Header, target: &Target, mut all: Vec<u32>) -> Vec<(u32, BlockHash)> {
    all.sort_unstable();
    all.into_iter()
        .filter_map(|nonce| {
            let mut h = *header;
            h.nonce = nonce;
            let hash = h.block_hash();
            // A kernel result that fails the re-check is a bug, never output.
            if target.is_met_by(&hash) {
                Some((nonce, hash))
            } else {
                eprintln!("error: kernel reported nonce {nonce} which fails the re-check (hardware error)");
                None
            }
        })
        .collect()
}

/// `--engine gpu|all`: GPU contexts (and `cpu_threads` CPU threads) pull
/// slices of `range` from one cursor; results are re-checked like the CPU's.
#[cfg(feature = "gpu")]
fn scan_gpu(
    backend: pow::Backend,
    header: &Header,
    target: &Target,
    range: NonceRange,
    cpu_threads: usize,
    gpu_args: &super::gpu::GpuArgs,
) -> anyhow::Result<Vec<(u32, BlockHash)>> {
    const CPU_SLICE: u64 = 1 << 20;
    const GPU_SLICE: u64 = 1 << 26;
    let (mut gpus, why) = super::gpu::start_contexts(gpu_args, false);
    if let Some(why) = why {
        anyhow::bail!("no usable GPU: {why} (see `hashrig devices`)");
    }
    let input = SearchInput::new(&header.to_bytes(), &target.to_le_bytes());
    let cursor = AtomicU64::new(range.start as u64);
    let take = |n: u64| {
        let a = cursor.fetch_add(n, Ordering::Relaxed);
        (a < range.end).then(|| NonceRange { start: a as u32, end: (a + n).min(range.end) })
    };
    let results: Vec<anyhow::Result<Vec<u32>>> = std::thread::scope(|s| {
        let mut workers = Vec::new();
        for (label, ctx) in gpus.iter_mut() {
            let (take, input) = (&take, &input);
            workers.push(s.spawn(move || {
                let mut hits = Vec::new();
                while let Some(r) = take(GPU_SLICE) {
                    let out = ctx.scan(input, r, 1 << 24).map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
                    for n in &out.hardware_errors {
                        eprintln!(
                            "error: {label} reported nonce {n} whose hash disagrees with the CPU's (hardware error)"
                        );
                    }
                    hits.extend(out.hits);
                }
                Ok(hits)
            }));
        }
        for _ in 0..cpu_threads {
            let (take, input) = (&take, &input);
            workers.push(s.spawn(move || {
                let mut hits = Vec::new();
                while let Some(r) = take(CPU_SLICE) {
                    pow::scan(backend, input, r, &mut hits);
                }
                Ok(hits)
            }));
        }
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err(anyhow::anyhow!("scan thread panicked")))).collect()
    });
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    Ok(recheck(header, target, all))
}

#[cfg(not(feature = "gpu"))]
fn scan_gpu(
    _: pow::Backend,
    _: &Header,
    _: &Target,
    _: NonceRange,
    _: usize,
    _: &super::gpu::GpuArgs,
) -> anyhow::Result<Vec<(u32, BlockHash)>> {
    anyhow::bail!("{}", super::gpu::gpu_unavailable_reason())
}
