//! Signature dispatches go first on an adapter that also mines.
//!
//! The signature engine marks each of its dispatches pending on its adapter
//! (by enumeration index) for as long as it runs; the PoW engine on the same
//! adapter submits no new dispatch while one is pending. A signature batch
//! therefore waits at most for the PoW dispatches already in the ring (its
//! depth, 3 by default, of about 10 ms each at the default chunk time), never
//! behind a stream of new ones.

use std::sync::atomic::{AtomicU32, Ordering};

const ADAPTERS: usize = 64;
static PENDING: [AtomicU32; ADAPTERS] = [const { AtomicU32::new(0) }; ADAPTERS];

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
}
