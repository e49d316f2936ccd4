//! Which records to show: time window, classification, severity (exact or a priority
//! range), boot, record id, event id. [`FilterArgs`] is what clap parses (no I/O, no clock); [`FilterArgs::into_filter`]
//! validates it and resolves relative times against a given "now".

use anyhow::{bail, Context as _};
use records::{EventId, RecordId, Severity};

use super::record::Rec;
use super::when::{parse_time, Zone};

/// Record filters shared by `list` and `export`. All given filters must match.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only records created at or after TIME: `now`, `today`, `yesterday`, `tomorrow`,
    /// relative (`-1h`, `-30min`, `2 days ago`), `@EPOCH` seconds, RFC 3339 with `Z` or an
    /// offset (`2024-05-01T12:00:00+02:00`), or a local date/time (`2024-05-01`,
    /// `"2024-05-01 12:00"`, `12:00`; local unless --utc).
    #[arg(short = 'S', long, value_name = "TIME", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Only records created before TIME (same forms as --since).
    #[arg(short = 'U', long, value_name = "TIME", allow_hyphen_values = true)]
    pub until: Option<String>,
    /// Only this classification: exact (`org.seglog/hello/world`) or a prefix ending in `*`
    /// (`org.seglog/*`). Repeat to allow several.
    #[arg(short = 'c', long = "classification", value_name = "CLASS")]
    pub classifications: Vec<String>,
    /// Only records of exactly this severity (1 low, 2 medium, 3 high, 4 critical, or the
    /// name), as `record -s` sets it.
    #[arg(short = 's', long, value_name = "SEV")]
    pub severity: Option<String>,
    /// Only records of this priority or higher (`high`, `3`), or in a range
    /// (`low..high`, `2..`, `..medium`), like `journalctl -p`.
    #[arg(short = 'p', long, value_name = "PRIO")]
    pub priority: Option<String>,
    /// Only records of this boot: the current one without a value, else a boot id (32 hex
    /// characters, dashes allowed, as in /proc/sys/kernel/random/boot_id).
    #[arg(short = 'b', long, value_name = "ID", num_args = 0..=1, default_missing_value = "")]
    pub boot: Option<String>,
    /// Only the record with this id (32 hex characters, either case).
    #[arg(short = 'r', long, value_name = "ID")]
    pub record_id: Option<String>,
    /// Only records of this event (32 hex characters, either case).
    #[arg(short = 'e', long, value_name = "ID")]
    pub event_id: Option<String>,
    /// Show and read times in UTC instead of the local time zone.
    #[arg(long)]
    pub utc: bool,
}

/// A validated filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    classes: Vec<ClassPattern>,
    /// Lowest and highest severity shown (both inclusive).
    severities: Option<(Severity, Severity)>,
    boot_id: Option<[u8; 16]>,
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
    /// The zone times are shown and read in.
    pub fn zone(&self) -> Zone {
        Zone::pick(self.utc)
    }

    /// Validates the filters; relative times are taken relative to `now_ms` (milliseconds
    /// since the epoch).
    pub fn into_filter(self, now_ms: i64) -> anyhow::Result<Filter> {
        let zone = self.zone();
        let since_ms = self
            .since
            .as_deref()
            .map(|s| parse_time(s, now_ms, &zone))
            .transpose()
            .context("--since")?;
        let until_ms = self
            .until
            .as_deref()
            .map(|s| parse_time(s, now_ms, &zone))
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
        let mut severities = self.priority.as_deref().map(parse_priority).transpose()?;
        if let Some(s) = self.severity.as_deref() {
            let sev = s.parse::<Severity>().map_err(|_| {
                anyhow::anyhow!(
                    "invalid --severity {s:?}: use 1 (low), 2 (medium), 3 (high) or 4 (critical), or the name"
                )
            })?;
            let (lo, hi) = severities.unwrap_or((Severity::LOW, Severity::CRITICAL));
            if sev < lo || sev > hi {
                bail!("--severity {s} is outside --priority: nothing can match");
            }
            severities = Some((sev, sev));
        }
        let boot_id = self.boot.as_deref().map(parse_boot).transpose()?;
        let record_id = self
            .record_id
            .as_deref()
            .map(|s| RecordId::parse(s.trim()))
            .transpose()
            .map_err(|why| {
                anyhow::anyhow!(
                    "invalid --record-id: {why}; give the 32 hex characters `journal` shows"
                )
            })?;
        let event_id = self
            .event_id
            .as_deref()
            .map(|s| EventId::parse(s.trim()))
            .transpose()
            .context("invalid --event-id")?;
        Ok(Filter {
            since_ms,
            until_ms,
            classes,
            severities,
            boot_id,
            record_id,
            event_id,
        })
    }
}

/// `--priority`: a severity (that one or higher) or a range `A..B`, `A..`, `..B`.
fn parse_priority(s: &str) -> anyhow::Result<(Severity, Severity)> {
    match Severity::parse_range(s) {
        Ok(r) => Ok(r),
        Err(records::RangeError::Severity) => bail!(
            "invalid --priority {s:?}: use a severity (1 low, 2 medium, 3 high, 4 critical, or \
             the name) for that one or higher, or a range such as low..high, 2.. or ..medium"
        ),
        Err(records::RangeError::Empty) => bail!(
            "invalid --priority {s:?}: the range is empty (the lower end comes first, e.g. low..high)"
        ),
    }
}

/// `--boot`: empty for the current boot, else a boot id with or without dashes.
fn parse_boot(s: &str) -> anyhow::Result<[u8; 16]> {
    const KERNEL: &str = "/proc/sys/kernel/random/boot_id";
    let text = if s.trim().is_empty() {
        std::fs::read_to_string(KERNEL).with_context(|| {
            format!(
                "--boot without an id needs the current boot id from {KERNEL}; give the id instead"
            )
        })?
    } else {
        s.to_owned()
    };
    let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    if hex.len() != 32 || hex::decode_to_slice(&hex, &mut out).is_err() {
        bail!("invalid --boot {s:?}: give a boot id, 32 hex characters (dashes allowed), as `journal -o verbose` shows");
    }
    Ok(out)
}

impl Filter {
    /// Whether `r` passes every filter.
    pub fn matches(&self, r: &Rec<'_>) -> bool {
        let t = r.meta.wall_ms;
        let sev = r.meta.severity;
        self.since_ms.is_none_or(|s| t >= s)
            && self.until_ms.is_none_or(|u| t < u)
            && self.severities.is_none_or(|(lo, hi)| sev >= lo && sev <= hi)
            && self.event_id.is_none_or(|e| r.meta.event_id == Some(e))
            && self.boot_id.is_none_or(|b| r.context.boot_id == b)
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

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

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
        let bad_boot = FilterArgs {
            boot: Some("xyz".into()),
            ..Default::default()
        };
        assert!(format!("{:#}", bad_boot.into_filter(NOW).unwrap_err()).contains("--boot"));
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

    #[test]
    fn priorities_are_a_severity_and_up_or_a_range() {
        use Severity as S;
        assert_eq!(parse_priority("high").unwrap(), (S::HIGH, S::CRITICAL));
        assert_eq!(parse_priority("3").unwrap(), (S::HIGH, S::CRITICAL));
        assert_eq!(parse_priority("low..high").unwrap(), (S::LOW, S::HIGH));
        assert_eq!(parse_priority("2..").unwrap(), (S::MEDIUM, S::CRITICAL));
        assert_eq!(parse_priority("..Medium").unwrap(), (S::LOW, S::MEDIUM));
        for bad in ["critical..low", "5", "hi..", "x"] {
            let e = format!("{:#}", parse_priority(bad).unwrap_err());
            assert!(e.contains("--priority"), "{bad}: {e}");
        }
    }

    #[test]
    fn severity_is_exact_and_must_lie_inside_the_priority() {
        let f = FilterArgs {
            severity: Some("medium".into()),
            ..Default::default()
        };
        assert_eq!(
            f.into_filter(NOW).unwrap().severities,
            Some((Severity::MEDIUM, Severity::MEDIUM))
        );
        let f = FilterArgs {
            severity: Some("1".into()),
            priority: Some("high".into()),
            ..Default::default()
        };
        assert!(format!("{:#}", f.into_filter(NOW).unwrap_err()).contains("outside"));
    }

    #[test]
    fn boot_ids_take_dashes_and_either_case() {
        assert_eq!(
            parse_boot("B0B0B0B0-b0b0-b0b0-b0b0-b0b0b0b0b0b0").unwrap(),
            [0xb0; 16]
        );
        assert!(parse_boot("b0b0").is_err());
        if std::path::Path::new("/proc/sys/kernel/random/boot_id").exists() {
            assert!(
                parse_boot("").is_ok(),
                "the current boot id is read from /proc"
            );
        }
    }
}
