//! The duty cycle of each GPU adapter's PoW engine: the share of time it
//! keeps the GPU busy, 1 unless the thermal guard lowered it.
//!
//! Kept per adapter (wgpu enumeration index) in a table the engine reads
//! without locking, as `gpu::priority` does. Below 1 the engine keeps one
//! dispatch in flight and, after each, pauses for `busy × (1/duty − 1)`, so
//! the GPU idles that share of the time.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const ADAPTERS: usize = 64;
/// Per mille; 1000 = full speed.
static DUTY: [AtomicU32; ADAPTERS] = [const { AtomicU32::new(1000) }; ADAPTERS];

/// The lowest duty cycle the guard sets: the GPU keeps mining a little, so
/// its engine stays alive and its rate measured.
pub const MIN_DUTY: f64 = 0.1;
/// Longest pause between two dispatches, so a new job or a stop waits at
/// most this long on a throttled GPU.
pub const MAX_PAUSE: Duration = Duration::from_millis(500);

/// Sets adapter `index`'s duty cycle, clamped to [`MIN_DUTY`]..=1.
pub fn set(index: usize, duty: f64) {
    let d = if duty.is_finite() { duty.clamp(MIN_DUTY, 1.0) } else { 1.0 };
    if let Some(slot) = DUTY.get(index) {
        slot.store((d * 1000.0).round() as u32, Ordering::Release);
    }
}

/// Adapter `index`'s duty cycle (1 for an index out of the table).
pub fn get(index: usize) -> f64 {
    DUTY.get(index).map_or(1.0, |d| d.load(Ordering::Acquire) as f64 / 1000.0)
}

/// Is adapter `index` running below full speed?
pub fn throttled(index: usize) -> bool {
    get(index) < 1.0
}

/// How long the engine on adapter `index` pauses after a dispatch that kept
/// the GPU busy for `busy`; `None` at full speed.
pub fn pause_after(index: usize, busy: Duration) -> Option<Duration> {
    let d = get(index);
    (d < 1.0).then(|| busy.mul_f64(1.0 / d - 1.0).min(MAX_PAUSE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_give_the_duty_cycle() {
        // Indices of their own: the table is process-wide.
        assert_eq!(pause_after(50, Duration::from_millis(20)), None);
        set(50, 0.5);
        assert!(throttled(50) && !throttled(51));
        assert_eq!(pause_after(50, Duration::from_millis(20)), Some(Duration::from_millis(20)));
        set(50, 0.25);
        assert_eq!(pause_after(50, Duration::from_millis(20)), Some(Duration::from_millis(60)));
        // Busy 20 ms out of 20 + 60: a quarter of the time.
        set(50, 0.0); // clamped
        assert_eq!(get(50), MIN_DUTY);
        assert_eq!(pause_after(50, Duration::from_millis(200)), Some(MAX_PAUSE));
        set(50, f64::NAN);
        assert_eq!(get(50), 1.0);
        set(4096, 0.5); // out of range: ignored, never a panic
        assert_eq!(get(4096), 1.0);
    }
}
