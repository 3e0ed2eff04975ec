//! Signature verification, ours beside the libraries' own calls.
//!
//! * `ed25519_n256`: our batch (ZIP-215 and strict, from bytes) vs
//!   ed25519-dalek `verify_batch` (keys parsed outside the loop, and parsed
//!   inside it) vs ed25519-zebra's batch verifier, one thread, n = 256.
//!   `decompress_r_*`: the 256 R points alone, dalek's `decompress` one by
//!   one vs `decompress_many` (eight AVX-512 IFMA lanes where built in and
//!   runnable).
//! * `ecdsa`, `schnorr`: ours (single, and per item in a batch of 256) vs
//!   libsecp256k1's single verify through the `secp256k1` crate, and the
//!   host's share of a GPU verification per item (`gpu_encode_256`).
//! * `schnorr_batch`: BIP340 per item through `verify_batch` at batch 1
//!   vs batch 256 (the batch equation), per-item checks of the same 256,
//!   and batches of 256 with one invalid item (the adaptive policy, and the
//!   equation bisected); `schnorr_batch_sizes`: the equation vs per-item at
//!   small sizes (the crossover, `MIN_BATCH`).
//! * `msm_513`: the multi-scalar multiplication of a 256-item batch
//!   (513 points): ours (Pippenger, batch-affine buckets) vs k256's
//!   `lincomb_vartime` (Straus, GLV + wNAF). libsecp256k1's
//!   `ecmult_multi_var` is static in its C code, not reachable through the
//!   `secp256k1` crate. `lift_x`: BIP340's lift_x (one per R in a batch),
//!   ours on the 4×64 field (one at a time, four interleaved) vs through
//!   libsecp256k1's key parser.
//! * `scaling`: the engine on 1 thread vs all threads, n = 4096.
//!
//! `cargo bench --bench sig -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ed25519_dalek::{Signer, SigningKey};
use hashrig::sched::{SigEngine, SigEngineConfig};
use hashrig::sig::demo::valid_item;
use hashrig::sig::{verify_batch, verify_one, Scheme, SigItem};
use hashrig::topo::{PinPlan, PlanOptions, Topology};
use std::hint::black_box;

/// ed25519-zebra takes a rand_core 0.10 RNG; feed it from rand's ThreadRng.
struct Rng10(rand::rngs::ThreadRng);

impl ed25519_dalek::rand_core::TryRng for Rng10 {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(rand::RngCore::next_u32(&mut self.0))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(rand::RngCore::next_u64(&mut self.0))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        rand::RngCore::fill_bytes(&mut self.0, dst);
        Ok(())
    }
}
impl ed25519_dalek::rand_core::TryCryptoRng for Rng10 {}

fn ed_fixture(n: usize) -> (Vec<SigningKey>, Vec<Vec<u8>>, Vec<ed25519_dalek::Signature>) {
    let keys: Vec<SigningKey> = (0..n).map(|i| SigningKey::from_bytes(&[(i % 251) as u8 + 1; 32])).collect();
    let msgs: Vec<Vec<u8>> = (0..n).map(|i| format!("message {i}").into_bytes()).collect();
    let sigs = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
    (keys, msgs, sigs)
}

fn ed25519(c: &mut Criterion) {
    const N: usize = 256;
    let (keys, msgs, sigs) = ed_fixture(N);
    let vks: Vec<ed25519_dalek::VerifyingKey> = keys.iter().map(|k| k.verifying_key()).collect();
    let pk_bytes: Vec<[u8; 32]> = vks.iter().map(|v| v.to_bytes()).collect();
    let items = |s: Scheme| -> Vec<SigItem> {
        (0..N).map(|i| SigItem::new(s, pk_bytes[i], msgs[i].clone(), sigs[i].to_bytes())).collect()
    };
    let zip = items(Scheme::Ed25519);
    let strict = items(Scheme::Ed25519Strict);
    let mut g = c.benchmark_group("ed25519_n256");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("hashrig_zip215_batch", |b| b.iter(|| black_box(verify_batch(black_box(&zip)))));
    // Keys never seen before (the decoded-key cache holds 16384; 40960
    // distinct keys rotate through it): the cold cost.
    let cold: Vec<SigItem> = (0..40 * 1024u64).map(|i| valid_item(Scheme::Ed25519, 1_000_000 + i)).collect();
    let mut at = 0;
    g.bench_function("hashrig_zip215_batch_cold_keys", |b| {
        b.iter(|| {
            at = (at + N) % cold.len();
            black_box(verify_batch(black_box(&cold[at..at + N])))
        })
    });
    g.bench_function("hashrig_strict_batch", |b| b.iter(|| black_box(verify_batch(black_box(&strict)))));
    let m: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    g.bench_function("dalek_verify_batch_parsed_keys", |b| {
        b.iter(|| ed25519_dalek::verify_batch(black_box(&m), black_box(&sigs), black_box(&vks)).unwrap())
    });
    g.bench_function("dalek_verify_batch_from_bytes", |b| {
        b.iter(|| {
            let vks: Vec<_> = pk_bytes.iter().map(|p| ed25519_dalek::VerifyingKey::from_bytes(p).unwrap()).collect();
            ed25519_dalek::verify_batch(black_box(&m), black_box(&sigs), &vks).unwrap()
        })
    });
    g.bench_function("zebra_batch", |b| {
        b.iter(|| {
            let mut v = ed25519_zebra::batch::Verifier::new();
            for i in 0..N {
                let vk = ed25519_zebra::VerificationKeyBytes::from(pk_bytes[i]);
                v.queue((vk, ed25519_zebra::Signature::from_bytes(&sigs[i].to_bytes()), &msgs[i]));
            }
            v.verify(Rng10(rand::rng())).unwrap()
        })
    });
    // R's decompression alone, the serial share of a batch: dalek's one
    // point at a time vs ours (eight IFMA lanes where built and runnable).
    let rs: Vec<[u8; 32]> = sigs.iter().map(|s| s.to_bytes()[..32].try_into().unwrap()).collect();
    g.bench_function("decompress_r_dalek", |b| {
        b.iter(|| {
            black_box(&rs)
                .iter()
                .map(|r| curve25519_dalek::edwards::CompressedEdwardsY(*r).decompress())
                .collect::<Vec<_>>()
        })
    });
    g.bench_function("decompress_r_hashrig", |b| {
        b.iter(|| black_box(hashrig::sig::ed25519::decompress_many(black_box(&rs))))
    });
    g.bench_function("dalek_verify_single_x256", |b| {
        b.iter(|| {
            for i in 0..N {
                vks[i].verify_strict(&msgs[i], &sigs[i]).unwrap();
            }
        })
    });
    g.finish();
}

fn secp(c: &mut Criterion) {
    for scheme in [Scheme::Ecdsa, Scheme::Schnorr] {
        let items: Vec<SigItem> = (0..256).map(|i| valid_item(scheme, i)).collect();
        let mut g = c.benchmark_group(scheme.name());
        g.throughput(Throughput::Elements(1));
        g.bench_function("hashrig_single", |b| b.iter(|| black_box(verify_one(black_box(&items[0])))));
        match scheme {
            Scheme::Ecdsa => {
                let pk = secp256k1::PublicKey::from_slice(&items[0].pubkey).unwrap();
                let sig = secp256k1::ecdsa::Signature::from_compact(&items[0].sig).unwrap();
                let msg = secp256k1::Message::from_digest(items[0].msg.as_slice().try_into().unwrap());
                g.bench_function("libsecp256k1_single", |b| {
                    b.iter(|| secp256k1::ecdsa::verify(black_box(&sig), msg, black_box(&pk)).unwrap())
                });
            }
            _ => {
                let pk =
                    secp256k1::XOnlyPublicKey::from_byte_array(items[0].pubkey.as_slice().try_into().unwrap()).unwrap();
                let sig = secp256k1::schnorr::Signature::from_byte_array(items[0].sig.as_slice().try_into().unwrap());
                let msg = items[0].msg.clone();
                g.bench_function("libsecp256k1_single", |b| {
                    b.iter(|| secp256k1::schnorr::verify(black_box(&sig), black_box(&msg), black_box(&pk)).unwrap())
                });
            }
        }
        g.throughput(Throughput::Elements(256));
        g.bench_function("hashrig_batch_256", |b| b.iter(|| black_box(verify_batch(black_box(&items)))));
        // The host's share of a GPU verification (parse, 1/s by Montgomery's
        // trick or the challenge hash, GLV split, digits): what the feeder
        // thread spends per item, beside the CPU's whole verification above.
        let refs: Vec<&SigItem> = items.iter().collect();
        g.bench_function("gpu_encode_256", |b| {
            b.iter(|| black_box(hashrig::sig::secp::gpu::encode_batch(black_box(&refs))))
        });
        g.finish();
    }
}

fn schnorr_batch(c: &mut Criterion) {
    use hashrig::sig::secp::batch::{verify as batch_verify, BatchOptions, Item, MIN_BATCH};
    let items: Vec<SigItem> = (0..256).map(|i| valid_item(Scheme::Schnorr, i)).collect();
    let mut g = c.benchmark_group("schnorr_batch");
    for n in [1usize, 256] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("verify_batch", n), &items[..n], |b, it| {
            b.iter(|| black_box(verify_batch(black_box(it))))
        });
    }
    g.throughput(Throughput::Elements(256));
    g.bench_function("per_item_256", |b| b.iter(|| black_box(items.iter().map(verify_one).collect::<Vec<_>>())));
    // One invalid item (a flipped message bit) in the middle.
    let mut one_bad = items.clone();
    one_bad[131].msg[0] ^= 1;
    let plain: Vec<Item> = one_bad.iter().map(|it| (&it.pubkey[..], &it.msg[..], &it.sig[..])).collect();
    g.bench_function("one_invalid_256_adaptive", |b| {
        b.iter(|| black_box(batch_verify(black_box(&plain), &BatchOptions::default())))
    });
    let equation = BatchOptions { min_batch: MIN_BATCH, adaptive: false };
    g.bench_function("one_invalid_256_bisected", |b| b.iter(|| black_box(batch_verify(black_box(&plain), &equation))));
    g.finish();

    let mut g = c.benchmark_group("schnorr_batch_sizes");
    let always = BatchOptions { min_batch: 1, adaptive: false };
    let never = BatchOptions { min_batch: usize::MAX, adaptive: false };
    let plain: Vec<Item> = items.iter().map(|it| (&it.pubkey[..], &it.msg[..], &it.sig[..])).collect();
    for n in [2usize, 4, 8, 16, 32] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("equation", n), &plain[..n], |b, it| {
            b.iter(|| black_box(batch_verify(black_box(it), &always)))
        });
        g.bench_with_input(BenchmarkId::new("per_item", n), &plain[..n], |b, it| {
            b.iter(|| black_box(batch_verify(black_box(it), &never)))
        });
    }
    g.finish();
}

fn msm(c: &mut Criterion) {
    use hashrig::sig::secp::{msm, point::Affine};
    use k256::elliptic_curve::ops::{LinearCombination, Reduce};
    use k256::elliptic_curve::sec1::ToSec1Point;
    use k256::{ProjectivePoint, Scalar};
    let scalar = |i: u64, tag: &[u8]| {
        use sha2::Digest;
        let h = sha2::Sha256::new().chain_update(tag).chain_update(i.to_le_bytes()).finalize();
        <Scalar as Reduce<k256::FieldBytes>>::reduce(&h)
    };
    let pts: Vec<ProjectivePoint> = (0..513).map(|i| ProjectivePoint::GENERATOR * scalar(i, b"point")).collect();
    let ks: Vec<Scalar> = (0..513).map(|i| scalar(i, b"scalar")).collect();
    let ours: Vec<(Affine, Scalar)> = pts
        .iter()
        .zip(&ks)
        .map(|(p, k)| {
            let e = p.to_affine().to_sec1_point(false);
            let b = e.as_bytes();
            (Affine::from_xy(b[1..33].try_into().unwrap(), b[33..65].try_into().unwrap()).unwrap(), *k)
        })
        .collect();
    let theirs: Vec<(ProjectivePoint, Scalar)> = pts.iter().copied().zip(ks.iter().copied()).collect();
    let mut g = c.benchmark_group("msm_513");
    g.throughput(Throughput::Elements(513));
    g.bench_function("hashrig_pippenger_batch_affine", |b| b.iter(|| black_box(msm::sum(black_box(&ours)))));
    g.bench_function("k256_lincomb_vartime", |b| {
        b.iter(|| black_box(ProjectivePoint::lincomb_vartime(black_box(&theirs[..]))))
    });
    g.finish();
    // lift_x of one R: the batch pays one per signature.
    let xs: Vec<[u8; 32]> = ours.iter().map(|(p, _)| p.x.to_bytes()).collect();
    let mut g = c.benchmark_group("lift_x");
    g.throughput(Throughput::Elements(xs.len() as u64));
    g.bench_function("hashrig_4x64", |b| {
        b.iter(|| {
            xs.iter().for_each(|x| {
                let _ = black_box(Affine::lift_x(black_box(x)));
            })
        })
    });
    let refs: Vec<&[u8; 32]> = xs.iter().collect();
    g.bench_function("hashrig_4x64_four_at_once", |b| b.iter(|| black_box(Affine::lift_x_many(black_box(&refs)))));
    g.bench_function("libsecp256k1", |b| {
        b.iter(|| {
            xs.iter().for_each(|x| {
                let _ = black_box(Affine::lift_x_libsecp(black_box(x)));
            })
        })
    });
    g.finish();
}

fn engine(threads: usize) -> SigEngine {
    let topo = Topology::discover_or_fallback();
    let plan = PinPlan::build(&topo, &PlanOptions { threads: Some(threads), ..PlanOptions::default() }).unwrap();
    SigEngine::start(SigEngineConfig::new(plan), None).unwrap()
}

fn scaling(c: &mut Criterion) {
    const N: usize = 4096;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let engines: Vec<SigEngine> = [1, cores].iter().map(|&t| engine(t)).collect();
    for scheme in [Scheme::Ed25519, Scheme::Ecdsa, Scheme::Schnorr] {
        let pool: Vec<SigItem> = (0..256).map(|i| valid_item(scheme, i)).collect();
        let items: Vec<SigItem> = pool.iter().cycle().take(N).cloned().collect();
        let mut g = c.benchmark_group(format!("scaling_{}", scheme.name()));
        g.throughput(Throughput::Elements(N as u64));
        g.sample_size(10);
        for e in &engines {
            g.bench_with_input(BenchmarkId::new("threads", e.threads()), &items, |b, items| {
                b.iter(|| black_box(e.verify(items, None)))
            });
            if cores == 1 {
                break;
            }
        }
        g.finish();
    }
}

criterion_group!(benches, ed25519, secp, schnorr_batch, msm, scaling);
criterion_main!(benches);
