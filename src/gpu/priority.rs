//! Signature dispatches go first on an adapter that also mines.
//!
//! A signature engine registers on its adapter (by enumeration index) while
//! it verifies, and marks each of its dispatches pending for as long as it
//! runs. The PoW engine on the same adapter keeps at most one dispatch in
//! flight while a signature engine is registered, and submits none while a
//! signature dispatch is pending: a signature batch waits at most for one
//! PoW dispatch (about 10 ms at the default chunk time). An adapter that only
//! mines keeps its full ring.

use std::sync::atomic::{AtomicU32, Ordering};

const ADAPTERS: usize = 64;
static PENDING: [AtomicU32; ADAPTERS] = [const { AtomicU32::new(0) }; ADAPTERS];
static ENGINES: [AtomicU32; ADAPTERS] = [const { AtomicU32::new(0) }; ADAPTERS];

/// A signature engine's registration on adapter `index`, until dropped.
pub struct SigEngineOn(usize);

pub fn register_sig_engine(index: usize) -> SigEngineOn {
    if let Some(e) = ENGINES.get(index) {
        e.fetch_add(1, Ordering::AcqRel);
    }
    SigEngineOn(index)
}

impl Drop for SigEngineOn {
    fn drop(&mut self) {
        if let Some(e) = ENGINES.get(self.0) {
            e.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Does a signature engine verify on adapter `index` (PoW keeps one dispatch in flight)?
pub fn sig_engine_on(index: usize) -> bool {
    ENGINES.get(index).is_some_and(|e| e.load(Ordering::Acquire) > 0)
}

/// Marks a signature dispatch pending on adapter `index` until dropped.
pub struct SigDispatch(usize);

pub fn sig_dispatch(index: usize) -> SigDispatch {
    if let Some(p) = PENDING.get(index) {
        p.fetch_add(1, Ordering::AcqRel);
    }
    SigDispatch(index)
}

impl Drop for SigDispatch {
    fn drop(&mut self) {
        if let Some(p) = PENDING.get(self.0) {
            p.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Is a signature dispatch pending on adapter `index`?
pub fn sig_pending(index: usize) -> bool {
    PENDING.get(index).is_some_and(|p| p.load(Ordering::Acquire) > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_while_held_and_per_adapter() {
        assert!(!sig_pending(7));
        let a = sig_dispatch(7);
        let b = sig_dispatch(7);
        assert!(sig_pending(7) && !sig_pending(8));
        drop(a);
        assert!(sig_pending(7));
        drop(b);
        assert!(!sig_pending(7));
        // Out of range: never pending, never a panic.
        let _c = sig_dispatch(1000);
        assert!(!sig_pending(1000));
    }

    #[test]
    fn registration_lasts_until_dropped() {
        assert!(!sig_engine_on(9));
        let r = register_sig_engine(9);
        assert!(sig_engine_on(9) && !sig_engine_on(10));
        drop(r);
        assert!(!sig_engine_on(9));
        let _x = register_sig_engine(4096);
        assert!(!sig_engine_on(4096));
    }
}
