//! What the engines and the thermal guard on one GPU adapter share: one
//! [`AdapterShare`] per adapter, held as an `Arc` by the PoW engine, the
//! signature engine and the health monitor of that adapter. It is read in
//! the PoW engine's loop without locking.
//!
//! - Signature dispatches go first on an adapter that also mines. A
//!   signature engine registers on its adapter while it verifies, and marks
//!   each of its dispatches pending for as long as it runs. The PoW engine on
//!   the same adapter keeps at most one dispatch in flight while a signature
//!   engine is registered, and submits none while a signature dispatch is
//!   pending: a signature batch waits at most for one PoW dispatch (about
//!   10 ms at the default chunk time). An adapter that only mines keeps its
//!   full ring.
//! - The duty cycle of the PoW engine: the share of time it keeps the GPU
//!   busy, 1 unless the thermal guard lowered it. Below 1 the engine keeps
//!   one dispatch in flight and, after each, pauses for
//!   `busy × (1/duty − 1)`, so the GPU idles that share of the time.
//!
//! Whoever starts the engines of a process holds one [`AdapterShares`] and
//! hands each engine and the monitor the share of its adapter; nothing here
//! is process-wide.
//!
//! Compiled without the `gpu` feature too: the signature engine and the
//! health monitor name it either way.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// The lowest duty cycle the thermal guard sets: the GPU keeps mining a
/// little, so its engine stays alive and its rate measured.
pub const MIN_DUTY: f64 = 0.1;
/// Longest pause between two dispatches, so a new job or a stop waits at
/// most this long on a throttled GPU.
pub const MAX_PAUSE: Duration = Duration::from_millis(500);

/// One adapter's shared state (see the module).
#[derive(Debug)]
pub struct AdapterShare {
    /// Signature dispatches pending.
    pending: AtomicU32,
    /// Signature engines registered.
    engines: AtomicU32,
    /// Duty cycle, per mille; 1000 = full speed.
    duty: AtomicU32,
}

impl Default for AdapterShare {
    fn default() -> AdapterShare {
        AdapterShare::new()
    }
}

impl AdapterShare {
    /// No signature engine, full duty cycle.
    pub fn new() -> AdapterShare {
        AdapterShare { pending: AtomicU32::new(0), engines: AtomicU32::new(0), duty: AtomicU32::new(1000) }
    }

    /// Registers a signature engine on the adapter until the returned
    /// guard is dropped.
    pub fn register_sig_engine(self: &Arc<Self>) -> SigEngineOn {
        self.engines.fetch_add(1, Ordering::AcqRel);
        SigEngineOn(self.clone())
    }

    /// Does a signature engine verify on the adapter (PoW keeps one dispatch in flight)?
    pub fn sig_engine_on(&self) -> bool {
        self.engines.load(Ordering::Acquire) > 0
    }

    /// Marks a signature dispatch pending until the returned guard is dropped.
    pub fn sig_dispatch(self: &Arc<Self>) -> SigDispatch {
        self.pending.fetch_add(1, Ordering::AcqRel);
        SigDispatch(self.clone())
    }

    /// Is a signature dispatch pending on the adapter?
    pub fn sig_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }

    /// Sets the PoW engine's duty cycle, clamped to [`MIN_DUTY`]..=1 (1
    /// for a value that is not a number).
    pub fn set_duty(&self, duty: f64) {
        let d = if duty.is_finite() { duty.clamp(MIN_DUTY, 1.0) } else { 1.0 };
        self.duty.store((d * 1000.0).round() as u32, Ordering::Release);
    }

    /// The duty cycle, in per-mille steps.
    pub fn duty(&self) -> f64 {
        self.duty.load(Ordering::Acquire) as f64 / 1000.0
    }

    /// Is the PoW engine running below full speed?
    pub fn throttled(&self) -> bool {
        self.duty() < 1.0
    }

    /// How long the PoW engine pauses after a dispatch that kept the GPU
    /// busy for `busy`; `None` at full speed.
    pub fn pause_after(&self, busy: Duration) -> Option<Duration> {
        let d = self.duty();
        (d < 1.0).then(|| busy.mul_f64(1.0 / d - 1.0).min(MAX_PAUSE))
    }
}

/// A signature engine's registration on its adapter, until dropped.
#[derive(Debug)]
pub struct SigEngineOn(Arc<AdapterShare>);

impl Drop for SigEngineOn {
    fn drop(&mut self) {
        self.0.engines.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A signature dispatch pending on its adapter, until dropped.
#[derive(Debug)]
pub struct SigDispatch(Arc<AdapterShare>);

impl Drop for SigDispatch {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The shares of one process's adapters, by wgpu enumeration index: each
/// adapter's engines and monitor get the same [`AdapterShare`] from it.
/// Clones are the same set.
#[derive(Clone, Debug, Default)]
pub struct AdapterShares(Arc<Mutex<BTreeMap<usize, Arc<AdapterShare>>>>);

impl AdapterShares {
    pub fn new() -> AdapterShares {
        AdapterShares::default()
    }

    /// The share of adapter `index`, made on first use.
    pub fn of(&self, index: usize) -> Arc<AdapterShare> {
        self.0.lock().entry(index).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_while_held_and_per_adapter() {
        let (s7, s8) = (Arc::new(AdapterShare::new()), Arc::new(AdapterShare::new()));
        assert!(!s7.sig_pending());
        let a = s7.sig_dispatch();
        let b = s7.sig_dispatch();
        assert!(s7.sig_pending() && !s8.sig_pending());
        drop(a);
        assert!(s7.sig_pending());
        drop(b);
        assert!(!s7.sig_pending());
    }

    #[test]
    fn registration_lasts_until_dropped() {
        let (s9, s10) = (Arc::new(AdapterShare::new()), Arc::new(AdapterShare::new()));
        assert!(!s9.sig_engine_on());
        let r = s9.register_sig_engine();
        assert!(s9.sig_engine_on() && !s10.sig_engine_on());
        drop(r);
        assert!(!s9.sig_engine_on());
    }

    #[test]
    fn pauses_give_the_duty_cycle() {
        let (s, other) = (AdapterShare::new(), AdapterShare::new());
        assert_eq!(s.pause_after(Duration::from_millis(20)), None);
        s.set_duty(0.5);
        assert!(s.throttled() && !other.throttled());
        assert_eq!(s.pause_after(Duration::from_millis(20)), Some(Duration::from_millis(20)));
        s.set_duty(0.25);
        assert_eq!(s.pause_after(Duration::from_millis(20)), Some(Duration::from_millis(60)));
        // Busy 20 ms out of 20 + 60: a quarter of the time.
        s.set_duty(0.0); // clamped
        assert_eq!(s.duty(), MIN_DUTY);
        assert_eq!(s.pause_after(Duration::from_millis(200)), Some(MAX_PAUSE));
        s.set_duty(f64::NAN);
        assert_eq!(s.duty(), 1.0);
    }

    #[test]
    fn one_share_per_adapter_index() {
        let shares = AdapterShares::new();
        let a = shares.of(0);
        assert!(Arc::ptr_eq(&a, &shares.of(0)), "the same adapter, the same share");
        assert!(Arc::ptr_eq(&a, &shares.clone().of(0)), "a clone is the same set");
        let b = shares.of(1);
        assert!(!Arc::ptr_eq(&a, &b));
        a.set_duty(0.5);
        let _on = b.register_sig_engine();
        assert!(a.throttled() && !b.throttled());
        assert!(b.sig_engine_on() && !a.sig_engine_on());
        assert!(!Arc::ptr_eq(&a, &AdapterShares::new().of(0)), "another set, another share");
    }
}
