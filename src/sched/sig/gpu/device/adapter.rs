//! An adapter's signature kernels as a [`SigDevice`]: the per-item kernels
//! (`gpu::sig`) and, where [`EquationMode`] allows, the batch-equation
//! kernels (`gpu::sig::msm`) for the Ed25519 and BIP340 items of a
//! dispatch, chosen and bisected by `super::super::equation`.
//!
//! A dispatch's equations run when it is submitted (on the feeder, which
//! owns the submissions: the per-item kernel's ring is never waited for on
//! the completion thread, which would deadlock against the feeder's next
//! dispatch); what they leave undecided joins the dispatch's per-item
//! items in one per-item submission, waited for as before.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{DeviceAnswer, DeviceError, DeviceInfo, InFlight, SigDevice};
use crate::gpu::share::{AdapterShare, SigEngineOn};
use crate::gpu::sig::{Curve, GpuMsm, GpuSigKernels, Ticket, MAX_ITEMS};
use crate::gpu::GpuAdapter;
use crate::sched::sig::gpu::equation::{bisect, has_equation, Chooser, EquationCost, EquationMode};
use crate::sig::{demo, Family, PerFamily, Scheme, SigItem, Verdict};

/// An equation that runs longer than this counts as a hung device.
const EQUATION_TIMEOUT: Duration = Duration::from_secs(60);

/// An adapter's signature kernels, registered in the adapter's share so
/// that PoW on it gives way to signature dispatches.
pub struct WgpuDevice {
    info: DeviceInfo,
    kernels: Arc<GpuSigKernels>,
    share: Arc<AdapterShare>,
    on_adapter: Mutex<Option<SigEngineOn>>,
    equations: Option<Arc<Equations>>,
}

/// The batch-equation kernels of an adapter and the choice between them
/// and the per-item kernels.
struct Equations {
    msm: PerFamily<Option<Mutex<GpuMsm>>>,
    chooser: Mutex<Chooser>,
    /// Test hook: after start-up, every failed equation reports "holds".
    lie: AtomicBool,
    started: AtomicBool,
    /// Equations run since start (start-up measurements not counted).
    count: Arc<AtomicU64>,
}

fn curve(f: Family) -> Option<Curve> {
    match f {
        Family::Ed25519 => Some(Curve::Ed25519),
        Family::Schnorr => Some(Curve::Bip340),
        Family::Ecdsa => None,
    }
}

fn scheme(f: Family) -> Scheme {
    match f {
        Family::Ed25519 => Scheme::Ed25519,
        Family::Ecdsa => Scheme::Ecdsa,
        Family::Schnorr => Scheme::Schnorr,
    }
}

impl WgpuDevice {
    /// Builds the kernels on `adapter` (seconds: shader compilation);
    /// `share` is the adapter's, as the PoW engine on it holds it. The
    /// batch-equation kernels are built and measured per
    /// `HASHRIG_GPU_EQUATION` (auto: on real GPUs only).
    pub fn open(adapter: &GpuAdapter, share: Arc<AdapterShare>) -> Result<WgpuDevice, DeviceError> {
        let mode = EquationMode::from_env().map_err(DeviceError::Driver)?;
        Self::open_with(adapter, share, mode)
    }

    /// [`open`](Self::open) with the equation mode given.
    pub fn open_with(
        adapter: &GpuAdapter,
        share: Arc<AdapterShare>,
        mode: EquationMode,
    ) -> Result<WgpuDevice, DeviceError> {
        let kernels = Arc::new(GpuSigKernels::new(adapter)?);
        let s = &adapter.summary;
        let wanted = match mode {
            EquationMode::Never => false,
            EquationMode::Auto => !s.software,
            EquationMode::Always => true,
        };
        let equations = if wanted { Some(Arc::new(Equations::open(adapter, &kernels, mode)?)) } else { None };
        Ok(WgpuDevice {
            info: DeviceInfo { name: s.name.clone(), index: s.index, software: s.software, simulated: false },
            kernels,
            on_adapter: Mutex::new(Some(share.register_sig_engine())),
            share,
            equations,
        })
    }

    /// The batch equations' costs and observed invalid rates (`None`
    /// when they are not used on this adapter).
    pub fn equation_choice(&self) -> Option<Chooser> {
        self.equations.as_ref().map(|e| e.chooser.lock().clone())
    }

    /// A counter of the batch equations this device runs (`None` when it
    /// runs none), to read after the device is handed to an engine.
    pub fn equation_counter(&self) -> Option<Arc<AtomicU64>> {
        self.equations.as_ref().map(|e| e.count.clone())
    }

    /// Test hook: once the engine has started, every failed batch equation
    /// reports that it holds, as a faulty kernel could; the trust policy's
    /// canaries must catch it.
    #[doc(hidden)]
    pub fn lie_after_start(&self) {
        if let Some(e) = &self.equations {
            e.lie.store(true, Ordering::Relaxed);
        }
    }
}

impl Equations {
    /// Builds the kernels of both curves; in `auto`, measures an equation
    /// at two sizes and the per-item kernel at the larger one on valid
    /// items of each family.
    fn open(adapter: &GpuAdapter, kernels: &GpuSigKernels, mode: EquationMode) -> Result<Equations, DeviceError> {
        let mut msm: PerFamily<Option<Mutex<GpuMsm>>> = PerFamily::default();
        for f in Family::ALL {
            if let Some(c) = curve(f) {
                match GpuMsm::new(adapter, c) {
                    Ok(m) => msm[f] = Some(Mutex::new(m)),
                    Err(e) => tracing::warn!(adapter = %adapter.summary.name, "no {c:?} batch equation: {e}"),
                }
            }
        }
        let mut cost: PerFamily<Option<EquationCost>> = PerFamily::default();
        let mut per_item = PerFamily::<f64>::default();
        for f in Family::ALL {
            let Some(m) = &msm[f] else { continue };
            if mode != EquationMode::Auto {
                cost[f] = Some(EquationCost { l0: 0.0, per_item: 0.0 });
                continue;
            }
            let big = if adapter.summary.software { 512 } else { 16384 };
            let items: Vec<SigItem> = (0..big as u64).map(|i| demo::valid_item(scheme(f), 0xe9_0000 + i)).collect();
            let refs: Vec<&SigItem> = items.iter().collect();
            let m = m.lock();
            let time_eq = |n: usize| -> Result<f64, DeviceError> {
                let t = Instant::now();
                m.verify_batch_equation(&refs[..n], EQUATION_TIMEOUT)?;
                Ok(t.elapsed().as_secs_f64())
            };
            time_eq(64)?; // the first dispatch pays for pipeline set-up
            let (t1, t2) = (time_eq(64)?, time_eq(big)?);
            let t = Instant::now();
            let ticket = kernels.submit(&refs)?;
            kernels.wait(ticket, EQUATION_TIMEOUT)?;
            per_item[f] = t.elapsed().as_secs_f64() / big as f64;
            cost[f] = Some(EquationCost::fit(64, t1, big, t2));
            tracing::info!(
                adapter = %adapter.summary.name,
                "{f:?} batch equation: L0 {:.2} ms, {:.0} items/s; per-item kernel {:.0} items/s",
                t1 * 1e3,
                big as f64 / t2,
                1.0 / per_item[f]
            );
        }
        Ok(Equations {
            msm,
            chooser: Mutex::new(Chooser::new(mode, cost, per_item)),
            lie: AtomicBool::new(false),
            started: AtomicBool::new(false),
            count: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The equations of one dispatch: each family's items that the chooser
    /// sends to an equation, bisected; their verdicts where decided.
    fn run(&self, items: &[&SigItem], out: &mut [Option<Verdict>]) -> Result<(), DeviceError> {
        let lie = self.lie.load(Ordering::Relaxed) && self.started.load(Ordering::Relaxed);
        for f in Family::ALL.into_iter().filter(|&f| has_equation(f)) {
            let Some(msm) = &self.msm[f] else { continue };
            let at: Vec<usize> = (0..items.len()).filter(|&i| items[i].scheme.family() == f).collect();
            let chooser = self.chooser.lock().clone();
            if !chooser.use_equation(f, at.len()) {
                continue;
            }
            let msm = msm.lock();
            let t0 = Instant::now();
            let until = chooser.budget(f, at.len()).map(|b| t0 + Duration::from_secs_f64(b));
            let mut timings = Vec::new();
            let mut run = |set: &[usize]| -> Result<Vec<Option<Verdict>>, DeviceError> {
                let sub: Vec<&SigItem> = set.iter().map(|&k| items[at[k]]).collect();
                let t = Instant::now();
                let mut v = msm.verify_batch_equation(&sub, EQUATION_TIMEOUT)?.verdicts;
                timings.push((sub.len(), t.elapsed().as_secs_f64()));
                if lie {
                    v.iter_mut().filter(|x| x.is_none()).for_each(|x| *x = Some(Verdict::Valid));
                }
                Ok(v)
            };
            let b = bisect(at.len(), &mut run, &|s| chooser.per_item_here(f, s), until)?;
            self.count.fetch_add(u64::from(b.equations), Ordering::Relaxed);
            let mut c = self.chooser.lock();
            for (n, secs) in timings {
                c.learn_equation(f, n, secs);
            }
            drop(c);
            for (k, v) in b.verdicts.into_iter().enumerate() {
                out[at[k]] = v;
            }
        }
        Ok(())
    }

    /// Learns the invalid rate of each family from a dispatch's verdicts.
    fn learn(&self, items: &[Family], verdicts: &[Option<Verdict>]) {
        let mut n = PerFamily::<usize>::default();
        let mut bad = PerFamily::<usize>::default();
        for (f, v) in items.iter().zip(verdicts) {
            n[*f] += 1;
            bad[*f] += usize::from(v.is_some_and(|v| !v.is_valid()));
        }
        let mut c = self.chooser.lock();
        for f in Family::ALL.into_iter().filter(|&f| has_equation(f) && n[f] > 0) {
            c.learn_outcome(f, n[f], bad[f]);
        }
    }
}

struct Flight {
    kernels: Arc<GpuSigKernels>,
    /// The per-item submission and the dispatch positions of its items
    /// (none listed: the whole dispatch, in order).
    ticket: Option<(Ticket, Vec<usize>, Instant)>,
    /// Verdicts the equations decided (`None` for the per-item kernel).
    decided: Vec<Option<Verdict>>,
    ready: Instant,
    equations: Option<(Arc<Equations>, Vec<Family>)>,
}

impl InFlight for Flight {
    fn wait(self: Box<Self>, timeout: Duration) -> Result<DeviceAnswer, DeviceError> {
        let Flight { kernels, ticket, mut decided, mut ready, equations } = *self;
        if let Some((ticket, at, submitted)) = ticket {
            let d = kernels.wait(ticket, timeout)?;
            if at.is_empty() {
                return Ok(DeviceAnswer { verdicts: d.verdicts, ready: d.ready });
            }
            if d.verdicts.len() != at.len() {
                return Err(DeviceError::Driver(format!("{} verdicts for {} items", d.verdicts.len(), at.len())));
            }
            if let Some((eq, fams)) = &equations {
                let f = fams[at[0]];
                if at.iter().all(|&i| fams[i] == f) {
                    eq.chooser.lock().learn_per_item(
                        f,
                        at.len(),
                        d.ready.saturating_duration_since(submitted).as_secs_f64(),
                    );
                }
            }
            for (i, v) in at.into_iter().zip(d.verdicts) {
                decided[i] = v;
            }
            ready = ready.max(d.ready);
        }
        if let Some((eq, fams)) = &equations {
            eq.learn(fams, &decided);
        }
        Ok(DeviceAnswer { verdicts: decided, ready })
    }
}

impl SigDevice for WgpuDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn max_in_flight(&self) -> usize {
        self.kernels.max_in_flight()
    }

    fn max_items(&self) -> usize {
        MAX_ITEMS
    }

    fn submit(&self, items: &[&SigItem]) -> Result<Box<dyn InFlight>, DeviceError> {
        let Some(eq) = &self.equations else {
            // Per-item kernels only: the whole dispatch in one submission.
            let ticket = Some((self.kernels.submit(items)?, Vec::new(), Instant::now()));
            let kernels = self.kernels.clone();
            return Ok(Box::new(Flight {
                kernels,
                ticket,
                decided: Vec::new(),
                ready: Instant::now(),
                equations: None,
            }));
        };
        let mut decided = vec![None; items.len()];
        eq.run(items, &mut decided)?;
        let at: Vec<usize> = (0..items.len()).filter(|&i| decided[i].is_none()).collect();
        let ticket = if at.is_empty() {
            None
        } else {
            let rest: Vec<&SigItem> = at.iter().map(|&i| items[i]).collect();
            Some((self.kernels.submit(&rest)?, at, Instant::now()))
        };
        let families = items.iter().map(|i| i.scheme.family()).collect();
        let equations = Some((eq.clone(), families));
        Ok(Box::new(Flight { kernels: self.kernels.clone(), ticket, decided, ready: Instant::now(), equations }))
    }

    fn hold_adapter(&self) -> Option<Box<dyn Send>> {
        Some(Box::new(self.share.sig_dispatch()))
    }

    fn started(&self) {
        if let Some(e) = &self.equations {
            e.started.store(true, Ordering::Relaxed);
        }
    }

    fn release(&self) {
        self.on_adapter.lock().take();
    }
}
