//! seglog's records: what a record and a writer's context are, how they are validated, and how
//! they are laid out inside segment-log frames (the record codec, [`RecordId`], and the one
//! context tracker every reader uses). Shared by the device side (recorder, uploader,
//! journal) and the server side (collector); no I/O beyond segment-log's reader.
//!
//! Record metadata: what a record and a writer's context are, how they are validated, and how
//! they are laid out inside segment-log frames.
//!
//! # On disk
//!
//! A record is one [`FrameKind::Record`](segment_log::FrameKind::Record) frame: a small header
//! followed by the payload bytes. Facts that repeat for a writer (machine id, boot id, OS,
//! kernel, the writer's table of classifications, base times) live in its [`Context`], which
//! the writer stores as the segment-log *preamble* ([`FrameKind::Preamble`]
//! (segment_log::FrameKind::Preamble)): the log writes it into every segment before that
//! writer's first record there, so every segment is self-describing and retention never
//! orphans a record's context.
//!
//! A record names its context by the writer's *slot* (a small number that a writer holds
//! exclusively while it is open; see `Recorder`). A record's context is the most recent
//! context frame of the same slot **in the same segment**, in position order. [`SlotContexts`]
//! is that rule, the one implementation every reader builds on; writers hold slots
//! `0..`[`MAX_SLOTS`].
//!
//! ```text
//! record frame payload, layout version 2 (current):
//!   u8       layout version (2)
//!   varint   slot                  writer slot; selects the context
//!   varint   class                 index into the context's classification table
//!   u8       meta                  bits 0-1: severity - 1; bit 2: event id follows;
//!                                  bit 3: spool hold follows; bits 4-7: zero
//!   varint   boot_delta_ms         boot time - context.base_boot_ms
//!   zigzag   wall_skew_ms          wall time - (context.base_wall_ms + boot_delta_ms)
//!   [16]     event id              if meta bit 2
//!   varint   hold_ms               if meta bit 3: spooled by the rate limiter; hold it
//!                                  back from upload until wall time + hold_ms
//!   ..       payload               the rest of the frame
//!
//! record frame payload, layout version 1 (previous, still decoded):
//!   u8       layout version (1)
//!   postcard { slot: u32, classification: String, severity: u8, wall_ms: i64,
//!              boot_ms: u64, event_id: Option<[u8; 16]> }
//!   ..       payload
//!
//! context frame payload, layout version 1:
//!   u8       context version (1)
//!   postcard Context (fields in declaration order)
//! ```
//!
//! varints and zigzag are postcard's (LEB128). A typical version-2 header is 8 bytes, which
//! with segment-log's 16-byte frame header keeps a 100-byte record under 1.3x its payload on
//! disk.
//!
//! # Compatibility
//! Readers decode every layout version up to [`RECORD_VERSION`] and refuse newer ones with
//! [`DecodeError::UnsupportedVersion`]. Changing a serialized struct means a new version.
#![forbid(unsafe_code)]

mod codec;
mod contexts;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod ids;
mod reader;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use codec::{
    decode_context, decode_frame, decode_record, encode_context, encode_record, encode_v2_header,
    DecodeError, Decoded, EncodeError, MAX_V2_HEADER,
};
pub use contexts::{SlotContexts, SlotFrame, MAX_SLOTS};
pub use ids::{EventId, Receipt, RecordId};
pub use reader::{ContextTracker, Observed, RecordEntry, RecordReader, RecordView, ResolveError};
pub use segment_log::Position;

/// The record layout version this build writes.
pub const RECORD_VERSION: u8 = 2;
/// The oldest record layout version this build still decodes.
pub const MIN_RECORD_VERSION: u8 = 1;
/// The context layout version this build writes (and the newest it decodes).
pub const CONTEXT_VERSION: u8 = 1;
/// Longest classification, in bytes (the telemetrics backend's limit).
pub const MAX_CLASSIFICATION_LEN: usize = 140;
/// Longest string field of a context, in bytes (the backend limits `build` to 256).
pub const MAX_CONTEXT_STRING: usize = 256;
/// Most classifications one context may intern; a writer that needs more starts a new table.
pub const MAX_CLASSIFICATIONS: usize = 1024;
/// Most `extra` key/value pairs of a context.
pub const MAX_CONTEXT_EXTRA: usize = 64;

/// A value that failed validation, and which field it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The classification is not `DOMAIN/PROBE/REST`.
    #[error("invalid classification {value:?}: {reason}; use DOMAIN/PROBE/REST: three non-empty parts of printable ASCII without spaces, at most 140 bytes (e.g. org.example/probe/event)")]
    Classification {
        /// The refused value (cut to 160 characters).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The severity is not 1 to 4.
    #[error(
        "invalid severity {value}: use 1 (low), 2 (medium), 3 (high) or 4 (critical), or the name"
    )]
    Severity {
        /// The refused value.
        value: i64,
    },
    /// The severity is not a number.
    #[error(
        "invalid severity {text:?}: use 1 (low), 2 (medium), 3 (high) or 4 (critical), or the name"
    )]
    SeverityText {
        /// The refused text.
        text: String,
    },
    /// The event id is not 32 hex characters.
    #[error("invalid event id {value:?}: {reason}; use 32 hex characters (e.g. 5de9de8d5f3c6a7d445d75ba01cc3322)")]
    EventId {
        /// The refused value (cut to 160 characters).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl ValidationError {
    /// The name of the offending field: `classification`, `severity` or `event_id`.
    pub fn field(&self) -> &'static str {
        match self {
            ValidationError::Classification { .. } => "classification",
            ValidationError::Severity { .. } | ValidationError::SeverityText { .. } => "severity",
            ValidationError::EventId { .. } => "event_id",
        }
    }

    /// A stable short code for counters.
    pub fn code(&self) -> &'static str {
        match self {
            ValidationError::Classification { .. } => "invalid_classification",
            ValidationError::Severity { .. } | ValidationError::SeverityText { .. } => {
                "invalid_severity"
            }
            ValidationError::EventId { .. } => "invalid_event_id",
        }
    }
}

fn cut(s: &str) -> String {
    s.chars().take(160).collect()
}

/// A validated classification `DOMAIN/PROBE/REST`: exactly three non-empty parts separated
/// by `/`, printable ASCII without spaces (`!` to `~`), at most 140 bytes. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Classification(Arc<str>);

impl Classification {
    /// Validates `s`.
    pub fn new(s: &str) -> Result<Self, ValidationError> {
        Self::check(s)?;
        Ok(Classification(Arc::from(s)))
    }

    fn check(s: &str) -> Result<(), ValidationError> {
        let err = |reason| {
            Err(ValidationError::Classification {
                value: cut(s),
                reason,
            })
        };
        if s.is_empty() {
            return err("it is empty");
        }
        if s.len() > MAX_CLASSIFICATION_LEN {
            return err("it is longer than 140 bytes");
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return err("it contains a space, a control character or non-ASCII");
        }
        let mut parts = s.split('/');
        let n = parts.clone().count();
        if n != 3 {
            return err("it must have exactly three parts separated by '/'");
        }
        if parts.any(str::is_empty) {
            return err("a part is empty");
        }
        Ok(())
    }

    /// Whether both share one allocation (then they are equal; the converse need not hold).
    pub fn ptr_eq(&self, other: &Classification) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `(DOMAIN, PROBE, REST)`.
    pub fn parts(&self) -> (&str, &str, &str) {
        let mut it = self.0.splitn(3, '/');
        let a = it.next().unwrap_or_default();
        let b = it.next().unwrap_or_default();
        let c = it.next().unwrap_or_default();
        (a, b, c)
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Classification({:?})", &*self.0)
    }
}
impl FromStr for Classification {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, ValidationError> {
        Classification::new(s)
    }
}
impl TryFrom<String> for Classification {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, ValidationError> {
        Classification::check(&s)?;
        Ok(Classification(Arc::from(s)))
    }
}
impl Serialize for Classification {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}
impl<'de> Deserialize<'de> for Classification {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Classification::try_from(s).map_err(serde::de::Error::custom)
    }
}

/// Severity 1 (low) to 4 (critical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Severity(u8);

impl Severity {
    /// 1: low.
    pub const LOW: Severity = Severity(1);
    /// 2: medium.
    pub const MEDIUM: Severity = Severity(2);
    /// 3: high.
    pub const HIGH: Severity = Severity(3);
    /// 4: critical.
    pub const CRITICAL: Severity = Severity(4);

    /// Validates `value` (1 to 4).
    pub fn new(value: i64) -> Result<Self, ValidationError> {
        match u8::try_from(value) {
            Ok(v @ 1..=4) => Ok(Severity(v)),
            _ => Err(ValidationError::Severity { value }),
        }
    }

    /// The number, 1 to 4.
    pub fn get(self) -> u8 {
        self.0
    }

    /// The name: `low`, `medium`, `high` or `critical`.
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "low",
            2 => "medium",
            3 => "high",
            _ => "critical",
        }
    }
}

/// Why a priority range did not parse ([`Severity::parse_range`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeError {
    /// An end is neither a number 1 to 4 nor a severity name.
    Severity,
    /// The lower end comes after the upper one.
    Empty,
}

impl Severity {
    /// A priority as `journal -p` and the collector's `priority` parameter take it (the
    /// meaning of journalctl's `-p`): one severity means that one or higher; `A..B`, `A..`
    /// and `..B` are ranges (inclusive; a missing end is low or critical). Names or numbers.
    pub fn parse_range(s: &str) -> Result<(Severity, Severity), RangeError> {
        let end = |t: &str, default: Severity| {
            if t.trim().is_empty() {
                Ok(default)
            } else {
                t.parse::<Severity>().map_err(|_| RangeError::Severity)
            }
        };
        let (lo, hi) = match s.split_once("..") {
            Some((a, b)) => (end(a, Severity::LOW)?, end(b, Severity::CRITICAL)?),
            None => (end(s, Severity::LOW)?, Severity::CRITICAL),
        };
        if lo > hi {
            return Err(RangeError::Empty);
        }
        Ok((lo, hi))
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl FromStr for Severity {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, ValidationError> {
        let t = s.trim();
        // The names as well as the numbers, in any case (`high`, `HIGH`, `3`).
        for sev in [Self::LOW, Self::MEDIUM, Self::HIGH, Self::CRITICAL] {
            if t.eq_ignore_ascii_case(sev.name()) {
                return Ok(sev);
            }
        }
        let v = t
            .parse::<i64>()
            .map_err(|_| ValidationError::SeverityText { text: s.to_owned() })?;
        Severity::new(v)
    }
}

/// What stays the same for a writer: stored once per segment as its preamble frame.
///
/// # Warning
/// Serialized with postcard field by field in declaration order: do not add, remove, retype
/// or reorder fields without a new [`CONTEXT_VERSION`]. New facts go into `extra`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// The writer's slot; records name their context by it.
    pub slot: u32,
    /// Counts context changes of this writer (new classification, machine id rotation,
    /// new base time).
    pub generation: u32,
    /// Record layout version the writer uses.
    pub record_format_version: u8,
    /// Machine id: rotating (sha256 of a local secret and the rotation period) or static.
    pub machine_id: String,
    /// The kernel's boot id; boot times compare only within one boot.
    pub boot_id: [u8; 16],
    /// CPU architecture, e.g. `x86_64`.
    pub arch: String,
    /// `sys_vendor|product_name|product_version` from /sys/class/dmi/id ("blank" if empty).
    pub host_type: String,
    /// OS build (os-release `VERSION_ID`, else `BUILD_ID`).
    pub build: String,
    /// OS name (os-release `ID`).
    pub system_name: String,
    /// Kernel release.
    pub kernel_version: String,
    /// `board_name|board_vendor` from /sys/class/dmi/id.
    pub board_name: String,
    /// CPU model name from /proc/cpuinfo.
    pub cpu_model: String,
    /// BIOS version from /sys/class/dmi/id.
    pub bios_version: String,
    /// Wall-clock base, milliseconds since the Unix epoch; record times are deltas from it.
    pub base_wall_ms: i64,
    /// Boot-time base, milliseconds since boot.
    pub base_boot_ms: u64,
    /// Classifications interned by this writer; a record stores an index into this table.
    pub classifications: Vec<Classification>,
    /// Further facts as key/value pairs (forward-compatible extension point).
    pub extra: Vec<(String, String)>,
}

impl Context {
    /// Checks the bounds a decoder enforces: string lengths, table sizes, machine id.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let invalid = |field: &'static str, reason: String| DecodeError::Invalid { field, reason };
        let strings = [
            ("machine_id", &self.machine_id),
            ("arch", &self.arch),
            ("host_type", &self.host_type),
            ("build", &self.build),
            ("system_name", &self.system_name),
            ("kernel_version", &self.kernel_version),
            ("board_name", &self.board_name),
            ("cpu_model", &self.cpu_model),
            ("bios_version", &self.bios_version),
        ];
        for (field, s) in strings {
            if s.len() > MAX_CONTEXT_STRING {
                return Err(invalid(
                    field,
                    format!("{} bytes, at most {MAX_CONTEXT_STRING}", s.len()),
                ));
            }
        }
        if self.classifications.len() > MAX_CLASSIFICATIONS {
            return Err(invalid(
                "classifications",
                format!(
                    "{} entries, at most {MAX_CLASSIFICATIONS}",
                    self.classifications.len()
                ),
            ));
        }
        if self.extra.len() > MAX_CONTEXT_EXTRA {
            return Err(invalid(
                "extra",
                format!("{} pairs, at most {MAX_CONTEXT_EXTRA}", self.extra.len()),
            ));
        }
        for (k, v) in &self.extra {
            if k.len() > MAX_CONTEXT_STRING || v.len() > MAX_CONTEXT_STRING {
                return Err(invalid(
                    "extra",
                    format!("entry longer than {MAX_CONTEXT_STRING} bytes"),
                ));
            }
        }
        Ok(())
    }

    /// The boot id as 32 hex characters.
    pub fn boot_id_hex(&self) -> String {
        hex::encode(self.boot_id)
    }
}

/// How a record names its classification.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClassRef {
    /// Index into the context's classification table (layout 2).
    Index(u32),
    /// Stored in the record itself (layout 1).
    Inline(Classification),
}

/// A record's times as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordTime {
    /// Relative to the context's base times (layout 2).
    Relative {
        /// Boot time minus the context's `base_boot_ms`.
        boot_delta_ms: u64,
        /// Wall time minus `base_wall_ms + boot_delta_ms` (non-zero when the clock jumped).
        wall_skew_ms: i64,
    },
    /// Absolute (layout 1).
    Absolute {
        /// Wall time, milliseconds since the Unix epoch.
        wall_ms: i64,
        /// Boot time, milliseconds since boot.
        boot_ms: u64,
    },
}

/// A record's header as stored, before it is combined with its context.
///
/// `ClassRef::Index` + `RecordTime::Relative` is layout 2; `ClassRef::Inline` +
/// `RecordTime::Absolute` (and no `hold_ms`) is layout 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordHeader {
    /// The writer slot whose context applies.
    pub slot: u32,
    /// Classification.
    pub class: ClassRef,
    /// Severity.
    pub severity: Severity,
    /// Creation time.
    pub time: RecordTime,
    /// Event id, if the probe gave one.
    pub event_id: Option<EventId>,
    /// Set when the rate limiter spooled the record: the uploader holds it back until the
    /// record's wall time plus this many milliseconds.
    pub hold_ms: Option<u64>,
}

/// A record header combined with its context: absolute times and the classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Classification.
    pub classification: Classification,
    /// Severity.
    pub severity: Severity,
    /// Wall-clock creation time, milliseconds since the Unix epoch.
    pub wall_ms: i64,
    /// Boot-relative creation time, milliseconds since boot (see the context's boot id).
    pub boot_ms: u64,
    /// Event id.
    pub event_id: Option<EventId>,
    /// For spooled records: the wall time (ms) before which the uploader must not send it.
    pub hold_until_wall_ms: Option<i64>,
}

impl RecordHeader {
    /// The record's (wall ms, boot ms), its relative time resolved against the context's base.
    pub fn times(&self, ctx: &Context) -> (i64, u64) {
        match self.time {
            RecordTime::Absolute { wall_ms, boot_ms } => (wall_ms, boot_ms),
            RecordTime::Relative {
                boot_delta_ms,
                wall_skew_ms,
            } => {
                let delta = i64::try_from(boot_delta_ms).unwrap_or(i64::MAX);
                (
                    ctx.base_wall_ms
                        .saturating_add(delta)
                        .saturating_add(wall_skew_ms),
                    ctx.base_boot_ms.saturating_add(boot_delta_ms),
                )
            }
        }
    }

    /// For a spooled record written at `wall_ms`: the wall time before which it must not be
    /// sent.
    pub fn hold_until_wall_ms(&self, wall_ms: i64) -> Option<i64> {
        self.hold_ms
            .map(|h| wall_ms.saturating_add(i64::try_from(h).unwrap_or(i64::MAX)))
    }

    /// Combines the header with its context. Fails when the class index is outside the
    /// context's table.
    pub fn resolve(&self, ctx: &Context) -> Result<Resolved, ResolveError> {
        let classification =
            match &self.class {
                ClassRef::Inline(c) => c.clone(),
                ClassRef::Index(i) => ctx.classifications.get(*i as usize).cloned().ok_or(
                    ResolveError::ClassIndex {
                        index: *i,
                        len: ctx.classifications.len(),
                    },
                )?,
            };
        let (wall_ms, boot_ms) = self.times(ctx);
        let hold_until_wall_ms = self.hold_until_wall_ms(wall_ms);
        Ok(Resolved {
            classification,
            severity: self.severity,
            wall_ms,
            boot_ms,
            event_id: self.event_id,
            hold_until_wall_ms,
        })
    }
}

#[cfg(test)]
mod format_vector_test;
#[cfg(test)]
mod tests;
