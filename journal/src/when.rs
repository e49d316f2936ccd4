//! Local time for the journal, as `journalctl` does it: times are shown and read in the
//! system time zone (`TZ`, else `/etc/localtime`), or in UTC with `--utc`.
//!
//! [`parse_time`] reads `--since`/`--until`: `now`, `today`, `yesterday`, `tomorrow`,
//! relative (`-1h`, `+10min`, `2 days ago`), `@EPOCH` seconds (fractions allowed), RFC 3339
//! with `Z` or an offset, and local date/times without an offset (`2024-05-01`,
//! `2024-05-01 12:00`, `12:00` today). [`ZonedFmt`] writes a record's time with its offset.

use anyhow::{bail, Context as _};
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::timefmt::{self, TimeFmt};

/// The zone times are shown and read in.
#[derive(Debug, Clone)]
pub struct Zone {
    /// `None`: UTC (`--utc`, and also when the system zone is UTC).
    tz: Option<TimeZone>,
}

impl Zone {
    /// UTC.
    pub fn utc() -> Self {
        Zone { tz: None }
    }

    /// The system time zone (`TZ`, else `/etc/localtime`; UTC when neither is usable).
    pub fn local() -> Self {
        let tz = TimeZone::system();
        // A zone that is UTC all year formats as `Z`, the short RFC 3339 form.
        let is_utc = tz.iana_name() == Some("UTC") || tz.iana_name() == Some("Etc/UTC");
        Zone {
            tz: (!is_utc).then_some(tz),
        }
    }

    /// `--utc` or the system zone.
    pub fn pick(utc: bool) -> Self {
        if utc {
            Zone::utc()
        } else {
            Zone::local()
        }
    }

    #[cfg(test)]
    fn named(name: &str) -> Self {
        Zone {
            tz: Some(TimeZone::get(name).expect("zone in the system tzdb")),
        }
    }

    fn tz(&self) -> TimeZone {
        self.tz.clone().unwrap_or(TimeZone::UTC)
    }

    /// The zone's offset from UTC at `second` (seconds since the epoch), in seconds.
    fn offset_at(&self, second: i64) -> i32 {
        match (&self.tz, Timestamp::from_second(second)) {
            (Some(tz), Ok(ts)) => tz.to_offset(ts).seconds(),
            _ => 0,
        }
    }
}

/// Length of `YYYY-MM-DDTHH:MM:SS.mmm+HH:MM`.
pub const ZONED_LEN: usize = 29;

/// Formats record times in a [`Zone`]: RFC 3339 with milliseconds, `Z` in UTC and the offset
/// elsewhere (`2023-11-14T23:13:20.123+01:00`). The offset is looked up once per second.
#[derive(Debug, Clone)]
pub struct ZonedFmt {
    zone: Zone,
    utc: TimeFmt,
    second: i64,
    offset: i32,
    buf: [u8; ZONED_LEN],
}

impl ZonedFmt {
    /// A formatter for `zone`.
    pub fn new(zone: Zone) -> Self {
        ZonedFmt {
            zone,
            utc: TimeFmt::default(),
            second: i64::MIN,
            offset: 0,
            buf: [b'0'; ZONED_LEN],
        }
    }

    /// `ms` in the zone; `None` when the local time falls outside the years 1970 to 9999.
    pub fn format(&mut self, ms: i64) -> Option<&str> {
        if self.zone.tz.is_none() {
            return self.utc.format(ms);
        }
        let second = ms.div_euclid(1000);
        if second != self.second {
            self.second = second;
            self.offset = self.zone.offset_at(second);
        }
        let local = ms.checked_add(i64::from(self.offset) * 1000)?;
        let text = self.utc.format(local)?;
        let head = text.as_bytes().get(..timefmt::LEN - 1)?;
        self.buf[..timefmt::LEN - 1].copy_from_slice(head);
        let (sign, abs) = if self.offset < 0 {
            (b'-', -self.offset)
        } else {
            (b'+', self.offset)
        };
        let (h, m) = ((abs / 3600) as u8, (abs / 60 % 60) as u8);
        self.buf[23..].copy_from_slice(&[
            sign,
            b'0' + h / 10,
            b'0' + h % 10,
            b':',
            b'0' + m / 10,
            b'0' + m % 10,
        ]);
        std::str::from_utf8(&self.buf).ok()
    }
}

const FORMS: &str = "use now, today, yesterday, tomorrow, relative (-1h, -30min, \"2 days ago\"), \
@EPOCH seconds, RFC 3339 with Z or an offset (2024-05-01T12:00:00+02:00), or a local date/time \
(2024-05-01, \"2024-05-01 12:00:00\", 12:00)";

/// Parses a time for --since/--until into milliseconds since the epoch; relative forms count
/// from `now_ms`, local forms are in `zone`.
pub fn parse_time(s: &str, now_ms: i64, zone: &Zone) -> anyhow::Result<i64> {
    let t = s.trim();
    let tz = zone.tz();
    let today = || -> anyhow::Result<Date> {
        let now = Timestamp::from_millisecond(now_ms).context("the clock is out of range")?;
        Ok(now.to_zoned_datetime(tz.clone()).date())
    };
    let midnight = |d: Date| -> anyhow::Result<i64> {
        Ok(tz
            .to_timestamp(d.to_datetime(Time::midnight()))
            .with_context(|| format!("invalid time {s:?}: out of range"))?
            .as_millisecond())
    };
    match t.to_ascii_lowercase().as_str() {
        "now" => return Ok(now_ms),
        "today" => return midnight(today()?),
        "yesterday" => return midnight(today()?.yesterday().context("out of range")?),
        "tomorrow" => return midnight(today()?.tomorrow().context("out of range")?),
        _ => {}
    }
    let relative = |body: &str, sign: i64| -> anyhow::Result<i64> {
        let d = humantime::parse_duration(body.trim())
            .with_context(|| format!("invalid relative time {s:?}; {FORMS}"))?;
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Ok(now_ms.saturating_add(sign.saturating_mul(ms)))
    };
    if let Some(body) = t.strip_prefix('-') {
        return relative(body, -1);
    }
    if let Some(body) = t.strip_prefix('+') {
        return relative(body, 1);
    }
    if let Some(body) = t.strip_suffix("ago") {
        return relative(body, -1);
    }
    if let Some(epoch) = t.strip_prefix('@') {
        return parse_epoch(epoch).with_context(|| format!("invalid time {s:?}; {FORMS}"));
    }
    // With `Z` or an offset: an instant, whatever the zone.
    let has_zone =
        t.ends_with(['Z', 'z']) || t.get(10..).is_some_and(|rest| rest.contains(['+', '-']));
    if has_zone {
        let normal = t.replacen(' ', "T", 1);
        let ts: Timestamp = normal
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid time {s:?}: {e}; {FORMS}"))?;
        return Ok(ts.as_millisecond());
    }
    // jiff's `Date` parser also takes a date-time (dropping the time): a date alone is
    // exactly `YYYY-MM-DD`.
    let date_only = t.len() == 10 && t.as_bytes().get(4) == Some(&b'-');
    let civil = if date_only {
        match t.parse::<Date>() {
            Ok(d) => d.to_datetime(Time::midnight()),
            Err(e) => bail!("invalid time {s:?}: {e}; {FORMS}"),
        }
    } else if let Ok(dt) = t.replacen(' ', "T", 1).parse::<DateTime>() {
        dt
    } else if let Ok(time) = t.parse::<Time>() {
        today()?.to_datetime(time)
    } else {
        bail!("invalid time {s:?}; {FORMS}");
    };
    Ok(tz
        .to_timestamp(civil)
        .with_context(|| format!("invalid time {s:?}: out of range"))?
        .as_millisecond())
}

/// `@SECONDS[.FRACTION]` (negative allowed) in milliseconds.
fn parse_epoch(s: &str) -> anyhow::Result<i64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let negative = int.starts_with('-');
    let secs: i64 = int.parse().context("not a number of seconds")?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        bail!("the fraction must be at most 9 digits");
    }
    let mut ms_digits = frac
        .as_bytes()
        .iter()
        .take(3)
        .fold(0i64, |a, b| a * 10 + i64::from(b - b'0'));
    for _ in frac.len().min(3)..3 {
        ms_digits *= 10;
    }
    let base = secs.checked_mul(1000).context("out of range")?;
    Ok(if negative {
        base - ms_digits
    } else {
        base + ms_digits
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2023-11-14T22:13:20Z, a Tuesday.
    const NOW: i64 = 1_700_000_000_000;

    fn utc(s: &str) -> i64 {
        parse_time(s, NOW, &Zone::utc()).unwrap()
    }

    #[test]
    fn relative_times_count_back_from_now() {
        assert_eq!(utc("-1h"), NOW - 3_600_000);
        assert_eq!(utc("-30min"), NOW - 1_800_000);
        assert_eq!(utc("2 days ago"), NOW - 2 * 86_400_000);
        assert_eq!(utc("+10s"), NOW + 10_000);
        assert_eq!(utc("now"), NOW);
        assert_eq!(utc("NOW"), NOW);
    }

    #[test]
    fn day_words_are_midnights_in_the_zone() {
        let midnight_utc = 1_699_920_000_000; // 2023-11-14T00:00:00Z
        assert_eq!(utc("today"), midnight_utc);
        assert_eq!(utc("yesterday"), midnight_utc - 86_400_000);
        assert_eq!(utc("tomorrow"), midnight_utc + 86_400_000);
        // In Berlin (UTC+1 in November) the day starts an hour earlier.
        let berlin = Zone::named("Europe/Berlin");
        assert_eq!(
            parse_time("today", NOW, &berlin).unwrap(),
            midnight_utc - 3_600_000
        );
    }

    #[test]
    fn epoch_seconds_with_an_at_sign() {
        assert_eq!(utc("@1700000000"), NOW);
        assert_eq!(utc("@1700000000.5"), NOW + 500);
        assert_eq!(utc("@1700000000.123456"), NOW + 123);
        assert_eq!(utc("@-1.5"), -1500);
        assert!(parse_time("@soon", NOW, &Zone::utc()).is_err());
    }

    #[test]
    fn rfc3339_with_offsets_is_an_instant_in_any_zone() {
        let berlin = Zone::named("Europe/Berlin");
        for z in [Zone::utc(), berlin] {
            assert_eq!(parse_time("2023-11-14T22:13:20Z", NOW, &z).unwrap(), NOW);
            assert_eq!(
                parse_time("2023-11-14T23:13:20+01:00", NOW, &z).unwrap(),
                NOW
            );
            assert_eq!(
                parse_time("2023-11-14 17:13:20.5-05:00", NOW, &z).unwrap(),
                NOW + 500
            );
        }
    }

    #[test]
    fn times_without_an_offset_are_local() {
        let berlin = Zone::named("Europe/Berlin");
        assert_eq!(
            parse_time("2023-11-14 23:13:20", NOW, &berlin).unwrap(),
            NOW
        );
        assert_eq!(utc("2023-11-14T22:13:20"), NOW);
        assert_eq!(utc("1970-01-02"), 86_400_000);
        assert_eq!(
            parse_time("1970-01-02", NOW, &berlin).unwrap(),
            86_400_000 - 3_600_000
        );
        assert_eq!(utc("22:13:20"), NOW);
        assert_eq!(utc("22:13"), NOW - 20_000);
    }

    #[test]
    fn bad_times_say_which_forms_work() {
        for bad in ["yesterday-ish", "-fortnight", "2023-13-01", "@", "12:99"] {
            let e = format!("{:#}", parse_time(bad, NOW, &Zone::utc()).unwrap_err());
            assert!(
                e.contains("RFC 3339") && e.contains("yesterday"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn zoned_times_carry_their_offset_and_follow_daylight_saving() {
        let mut f = ZonedFmt::new(Zone::named("Europe/Berlin"));
        assert_eq!(
            f.format(NOW + 123).unwrap(),
            "2023-11-14T23:13:20.123+01:00"
        );
        // 2023-07-01T12:00:00Z is summer time.
        assert_eq!(
            f.format(1_688_212_800_000).unwrap(),
            "2023-07-01T14:00:00.000+02:00"
        );
        let mut ny = ZonedFmt::new(Zone::named("America/New_York"));
        assert_eq!(ny.format(NOW).unwrap(), "2023-11-14T17:13:20.000-05:00");
        let mut u = ZonedFmt::new(Zone::utc());
        assert_eq!(u.format(NOW).unwrap(), "2023-11-14T22:13:20.000Z");
        assert_eq!(u.format(-1), None);
    }
}
