//! Calendar dates for what hashrig writes down (hardware profiles, the
//! autotune cache), without a calendar crate. A leaf: it imports nothing
//! of the crate, so every layer may date what it saves.

/// Today's UTC date as YYYY-MM-DD.
pub fn utc_date() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    date_of(secs)
}

/// The UTC date of `secs` after the Unix epoch, as YYYY-MM-DD
/// (civil-from-days).
pub fn date_of(secs: u64) -> String {
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against `date -u -d @SECS +%F` (GNU coreutils).
    #[test]
    fn dates_match_the_system_calendar() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(951_782_400), "2000-02-29");
        assert_eq!(date_of(1_700_000_000), "2023-11-14");
        assert_eq!(date_of(4_102_444_799), "2099-12-31");
        assert_eq!(utc_date().len(), 10);
    }
}
