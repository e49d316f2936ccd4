//! RFC 3339 timestamps with milliseconds (`2023-11-14T22:13:20.123Z`), formatted without the
//! `fmt` machinery: listing a million records formats a million times, and records written
//! close together share their second, which [`TimeFmt`] formats once.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub const LEN: usize = 24;

/// 9999-12-31T23:59:59.999Z, the last instant with a four-digit year.
pub const MAX_MS: i64 = 253_402_300_799_999;

/// Formats times, remembering the last second it formatted.
#[derive(Debug, Clone)]
pub struct TimeFmt {
    second: i64,
    buf: [u8; LEN],
}

impl Default for TimeFmt {
    fn default() -> Self {
        TimeFmt {
            second: -1,
            buf: *b"0000-00-00T00:00:00.000Z",
        }
    }
}

impl TimeFmt {
    /// `ms` (milliseconds since the epoch) as RFC 3339 UTC; `None` outside 1970..=9999.
    pub fn format(&mut self, ms: i64) -> Option<&str> {
        if !(0..=MAX_MS).contains(&ms) {
            return None;
        }
        let (second, milli) = (ms / 1000, ms % 1000);
        if second != self.second {
            self.second = second;
            write_second(&mut self.buf, second);
        }
        put_digits(&mut self.buf, 20, 3, milli as u64);
        std::str::from_utf8(&self.buf).ok()
    }
}

/// Writes `YYYY-MM-DDTHH:MM:SS` of `second` (seconds since the epoch, non-negative) into
/// the first 19 bytes of `buf`.
fn write_second(buf: &mut [u8; LEN], second: i64) {
    let (days, rem) = (second.div_euclid(86_400), second.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    put_digits(buf, 0, 4, y as u64);
    put_digits(buf, 5, 2, u64::from(m));
    put_digits(buf, 8, 2, u64::from(d));
    put_digits(buf, 11, 2, (rem / 3600) as u64);
    put_digits(buf, 14, 2, (rem / 60 % 60) as u64);
    put_digits(buf, 17, 2, (rem % 60) as u64);
}

/// Writes the `width` lowest decimal digits of `v` at `buf[at..at + width]`.
fn put_digits(buf: &mut [u8; LEN], at: usize, width: usize, mut v: u64) {
    for i in (at..at + width).rev() {
        if let Some(b) = buf.get_mut(i) {
            *b = b'0' + (v % 10) as u8;
        }
        v /= 10;
    }
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A time for `Display`: RFC 3339, or `@<ms>` outside the years 1970 to 9999.
#[derive(Clone, Copy)]
pub struct Time(pub i64);

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match TimeFmt::default().format(self.0) {
            Some(s) => f.write_str(s),
            None => write!(f, "@{}", self.0),
        }
    }
}

/// Milliseconds since the epoch of `t` (negative before 1970).
pub fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn humantime(ms: i64) -> String {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
    }

    #[test]
    fn matches_humantime_across_leap_years_centuries_and_the_range_ends() {
        let mut f = TimeFmt::default();
        let mut ms = 0i64;
        // A stride that lands on every month, day and time of day over the whole range.
        while ms <= MAX_MS {
            assert_eq!(f.format(ms).unwrap(), humantime(ms), "ms = {ms}");
            ms += 86_399_999 * 37 + 12_345;
        }
        for ms in [
            0,
            951_782_400_000,
            4_107_542_400_000,
            1_709_210_096_789,
            MAX_MS,
        ] {
            assert_eq!(f.format(ms).unwrap(), humantime(ms), "ms = {ms}");
        }
    }

    #[test]
    fn the_cached_second_is_reused_and_replaced() {
        let mut f = TimeFmt::default();
        assert_eq!(
            f.format(1_700_000_000_001).unwrap(),
            "2023-11-14T22:13:20.001Z"
        );
        assert_eq!(
            f.format(1_700_000_000_999).unwrap(),
            "2023-11-14T22:13:20.999Z"
        );
        assert_eq!(
            f.format(1_700_000_001_000).unwrap(),
            "2023-11-14T22:13:21.000Z"
        );
        assert_eq!(
            f.format(1_600_000_000_000).unwrap(),
            "2020-09-13T12:26:40.000Z"
        );
    }

    #[test]
    fn times_outside_the_four_digit_years_are_not_formatted() {
        let mut f = TimeFmt::default();
        assert_eq!(f.format(-1), None);
        assert_eq!(f.format(MAX_MS + 1), None);
        assert_eq!(Time(-5).to_string(), "@-5");
        assert_eq!(Time(i64::MAX).to_string(), format!("@{}", i64::MAX));
        assert_eq!(Time(0).to_string(), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn system_time_ms_round_trips_before_and_after_the_epoch() {
        assert_eq!(
            system_time_ms(UNIX_EPOCH + Duration::from_millis(1234)),
            1234
        );
        assert_eq!(
            system_time_ms(UNIX_EPOCH - Duration::from_millis(1234)),
            -1234
        );
    }
}
