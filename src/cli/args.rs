//! Checks shared by the subcommands for numbers that become durations or
//! allocation sizes: out-of-range values are clear errors, never a panic in
//! `Duration::from_secs_f64`, `Instant + Duration` or `Vec::with_capacity`.

use std::time::Duration;

/// Longest duration a flag may ask for: ten years, far beyond any run, far
/// below what `Instant` arithmetic can hold.
pub const MAX_SECS: f64 = 10.0 * 365.0 * 86_400.0;

/// `secs` as a duration, for `flag`: a finite number of seconds in
/// `(0, MAX_SECS]` (or `[0, MAX_SECS]` when `allow_zero`).
pub fn duration(flag: &str, secs: f64, allow_zero: bool) -> anyhow::Result<Duration> {
    let low_ok = if allow_zero { secs >= 0.0 } else { secs > 0.0 };
    if !(low_ok && secs.is_finite()) {
        let what = if allow_zero { "zero or a positive" } else { "a positive" };
        anyhow::bail!("{flag} must be {what} number of seconds, got {secs}");
    }
    if secs > MAX_SECS {
        anyhow::bail!("{flag} must be at most {MAX_SECS:.0} seconds (ten years), got {secs}");
    }
    Duration::try_from_secs_f64(secs).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

/// A count for `flag` in `1..=max`.
pub fn count(flag: &str, n: usize, max: usize) -> anyhow::Result<usize> {
    if n == 0 {
        anyhow::bail!("{flag} must be at least 1");
    }
    if n > max {
        anyhow::bail!("{flag} must be at most {max}, got {n}");
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_out_of_range_are_errors() {
        for bad in [f64::INFINITY, f64::NAN, -1.0, 1e300, MAX_SECS * 2.0] {
            assert!(duration("--x", bad, true).is_err(), "{bad}");
        }
        assert!(duration("--x", 0.0, false).is_err());
        assert_eq!(duration("--x", 0.0, true).unwrap(), Duration::ZERO);
        assert_eq!(duration("--x", 1.5, false).unwrap(), Duration::from_millis(1500));
        assert!(duration("--x", MAX_SECS, false).is_ok());
    }

    #[test]
    fn counts_out_of_range_are_errors() {
        assert!(count("--n", 0, 10).is_err());
        assert!(count("--n", usize::MAX, 10).is_err());
        assert_eq!(count("--n", 10, 10).unwrap(), 10);
    }
}
