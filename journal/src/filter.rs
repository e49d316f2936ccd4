//! Which records to show: time window, classification, minimum severity, record id, event
//! id. [`FilterArgs`] is what clap parses (no I/O, no clock); [`FilterArgs::into_filter`]
//! validates it and resolves relative times against a given "now".

use anyhow::{bail, Context as _};
use records::{EventId, RecordId, Severity};

use super::record::Rec;

/// Record filters shared by `list` and `export`. All given filters must match.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only records created at or after TIME: RFC 3339 (`2024-05-01T12:00:00Z`, UTC), a date
    /// (`2024-05-01`), `now`, or relative (`-1h`, `-30min`, `2 days ago`).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Only records created before TIME (same forms as --since).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub until: Option<String>,
    /// Only this classification: exact (`org.seglog/hello/world`) or a prefix ending in `*`
    /// (`org.seglog/*`). Repeat to allow several.
    #[arg(short = 'c', long = "classification", value_name = "CLASS")]
    pub classifications: Vec<String>,
    /// Only records of at least this severity (1 low, 2 medium, 3 high, 4 critical).
    #[arg(short = 's', long, value_name = "SEV")]
    pub severity: Option<String>,
    /// Only the record with this id (32 hex characters).
    #[arg(short = 'r', long, value_name = "ID")]
    pub record_id: Option<String>,
    /// Only records of this event (32 hex characters).
    #[arg(short = 'e', long, value_name = "ID")]
    pub event_id: Option<String>,
}

/// A validated filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    classes: Vec<ClassPattern>,
    min_severity: Option<Severity>,
    record_id: Option<RecordId>,
    event_id: Option<EventId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ClassPattern {
    Exact(String),
    Prefix(String),
}

impl ClassPattern {
    fn parse(s: &str) -> anyhow::Result<Self> {
        if let Some(prefix) = s.strip_suffix('*') {
            if prefix.contains('*') {
                bail!("invalid classification pattern {s:?}: '*' is only allowed at the end");
            }
            return Ok(ClassPattern::Prefix(prefix.to_owned()));
        }
        if s.contains('*') {
            bail!("invalid classification pattern {s:?}: '*' is only allowed at the end");
        }
        records::Classification::new(s).with_context(|| {
            format!("invalid classification pattern {s:?}: give DOMAIN/PROBE/REST or a prefix ending in * (e.g. org.seglog/*)")
        })?;
        Ok(ClassPattern::Exact(s.to_owned()))
    }

    fn matches(&self, class: &str) -> bool {
        match self {
            ClassPattern::Exact(c) => c == class,
            ClassPattern::Prefix(p) => class.starts_with(p.as_str()),
        }
    }
}

impl FilterArgs {
    /// Validates the filters; relative times are taken relative to `now_ms` (milliseconds
    /// since the epoch).
    pub fn into_filter(self, now_ms: i64) -> anyhow::Result<Filter> {
        let since_ms = self
            .since
            .as_deref()
            .map(|s| parse_time(s, now_ms))
            .transpose()
            .context("--since")?;
        let until_ms = self
            .until
            .as_deref()
            .map(|s| parse_time(s, now_ms))
            .transpose()
            .context("--until")?;
        if let (Some(a), Some(b)) = (since_ms, until_ms) {
            if a > b {
                bail!("--since is after --until: nothing can match");
            }
        }
        let classes = self
            .classifications
            .iter()
            .map(|c| ClassPattern::parse(c))
            .collect::<Result<Vec<_>, _>>()?;
        let min_severity = self
            .severity
            .as_deref()
            .map(|s| s.parse::<Severity>())
            .transpose()
            .map_err(|_| {
                anyhow::anyhow!(
                    "invalid --severity: use 1 (low), 2 (medium), 3 (high) or 4 (critical)"
                )
            })?;
        let record_id = self
            .record_id
            .as_deref()
            .map(|s| RecordId::parse(&s.trim().to_ascii_lowercase()))
            .transpose()
            .map_err(|why| {
                anyhow::anyhow!(
                    "invalid --record-id: {why}; give the 32 hex characters `journal` shows"
                )
            })?;
        let event_id = self
            .event_id
            .as_deref()
            .map(|s| EventId::parse(&s.trim().to_ascii_lowercase()))
            .transpose()
            .context("invalid --event-id")?;
        Ok(Filter {
            since_ms,
            until_ms,
            classes,
            min_severity,
            record_id,
            event_id,
        })
    }
}

impl Filter {
    /// Whether `r` passes every filter.
    pub fn matches(&self, r: &Rec<'_>) -> bool {
        let t = r.meta.wall_ms;
        self.since_ms.is_none_or(|s| t >= s)
            && self.until_ms.is_none_or(|u| t < u)
            && self.min_severity.is_none_or(|m| r.meta.severity >= m)
            && self.event_id.is_none_or(|e| r.meta.event_id == Some(e))
            && (self.classes.is_empty()
                || self
                    .classes
                    .iter()
                    .any(|p| p.matches(r.meta.classification.as_str())))
            // Last: the id is a sha256, derived only for records that passed the rest.
            && self.record_id.is_none_or(|id| r.id() == id)
    }

    /// The record id asked for: record ids are unique, so a reader that found it may stop.
    pub fn record_id(&self) -> Option<RecordId> {
        self.record_id
    }
}

/// Parses a time for --since/--until into milliseconds since the epoch.
pub fn parse_time(s: &str, now_ms: i64) -> anyhow::Result<i64> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now_ms);
    }
    let relative = |body: &str, sign: i64| -> anyhow::Result<i64> {
        let d = humantime::parse_duration(body.trim()).with_context(|| {
            format!("invalid relative time {s:?} (examples: -1h, -30min, \"2 days ago\")")
        })?;
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
    let full;
    let t = if t.len() == 10 && t.as_bytes().get(4) == Some(&b'-') {
        full = format!("{t}T00:00:00Z");
        full.as_str()
    } else {
        t
    };
    let at = humantime::parse_rfc3339_weak(t).with_context(|| {
        format!("invalid time {s:?}: use RFC 3339 in UTC (2024-05-01T12:00:00Z), a date (2024-05-01), now, or relative (-1h)")
    })?;
    Ok(super::timefmt::system_time_ms(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn relative_times_count_back_from_now() {
        assert_eq!(parse_time("-1h", NOW).unwrap(), NOW - 3_600_000);
        assert_eq!(parse_time("-30min", NOW).unwrap(), NOW - 1_800_000);
        assert_eq!(parse_time("2 days ago", NOW).unwrap(), NOW - 2 * 86_400_000);
        assert_eq!(parse_time("+10s", NOW).unwrap(), NOW + 10_000);
        assert_eq!(parse_time("now", NOW).unwrap(), NOW);
    }

    #[test]
    fn absolute_times_accept_rfc3339_and_plain_dates() {
        assert_eq!(parse_time("2023-11-14T22:13:20Z", NOW).unwrap(), NOW);
        assert_eq!(
            parse_time("2023-11-14T22:13:20.5Z", NOW).unwrap(),
            NOW + 500
        );
        assert_eq!(parse_time("2023-11-14 22:13:20", NOW).unwrap(), NOW);
        assert_eq!(parse_time("1970-01-02", NOW).unwrap(), 86_400_000);
    }

    #[test]
    fn bad_times_say_which_forms_work() {
        let e = format!("{:#}", parse_time("yesterday-ish", NOW).unwrap_err());
        assert!(e.contains("RFC 3339"), "{e}");
        let e = format!("{:#}", parse_time("-fortnight", NOW).unwrap_err());
        assert!(e.contains("-1h"), "{e}");
    }

    #[test]
    fn classification_patterns_are_exact_or_trailing_star_prefixes() {
        let p = ClassPattern::parse("org.seglog/*").unwrap();
        assert!(p.matches("org.seglog/hello/world"));
        assert!(!p.matches("org.other/hello/world"));
        let e = ClassPattern::parse("org.seglog/hello/world").unwrap();
        assert!(e.matches("org.seglog/hello/world"));
        assert!(!e.matches("org.seglog/hello/world2"));
        assert!(ClassPattern::parse("org.*/x").is_err());
        assert!(
            ClassPattern::parse("org.seglog").is_err(),
            "an exact class needs three parts"
        );
    }

    #[test]
    fn filter_args_are_validated_with_clear_messages() {
        let bad_sev = FilterArgs {
            severity: Some("9".into()),
            ..Default::default()
        };
        assert!(format!("{:#}", bad_sev.into_filter(NOW).unwrap_err()).contains("--severity"));
        let bad_id = FilterArgs {
            record_id: Some("xyz".into()),
            ..Default::default()
        };
        assert!(format!("{:#}", bad_id.into_filter(NOW).unwrap_err()).contains("--record-id"));
        let reversed = FilterArgs {
            since: Some("-1h".into()),
            until: Some("-2h".into()),
            ..Default::default()
        };
        assert!(format!("{:#}", reversed.into_filter(NOW).unwrap_err()).contains("after --until"));
        let upper = FilterArgs {
            record_id: Some("A".repeat(32)),
            ..Default::default()
        };
        assert_eq!(
            upper.into_filter(NOW).unwrap().record_id(),
            Some(RecordId::from_bytes([0xaa; 16]))
        );
    }
}
