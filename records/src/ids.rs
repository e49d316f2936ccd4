//! A record's identities: the [`EventId`] a writer gives related records, the [`RecordId`]
//! derived from the log's private id and the record's position, and the [`Receipt`] an
//! append returns.
use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::{cut, Position, ValidationError};

fn parse_hex16(s: &str) -> Result<[u8; 16], &'static str> {
    if s.len() != 32 {
        return Err("it must be exactly 32 characters");
    }
    // Upper case is accepted everywhere an id is read (CLI, API, C API); ids are always
    // written in lower case.
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("it must use only 0-9 and a-f");
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(s, &mut out).map_err(|_| "it is not hex")?;
    Ok(out)
}

/// Groups records caused by one event: 128 bits, written as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId([u8; 16]);

impl EventId {
    /// Parses 32 hex characters in either case.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        parse_hex16(s)
            .map(EventId)
            .map_err(|reason| ValidationError::EventId {
                value: cut(s),
                reason,
            })
    }
    /// From raw bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        EventId(b)
    }
    /// A new random event id (from the OS random source; panics only if the OS has none,
    /// as `rand::random` did).
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).expect("the OS random source failed");
        EventId(b)
    }
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}
impl FromStr for EventId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, ValidationError> {
        EventId::parse(s)
    }
}

/// A record's id: the first 16 bytes of `sha256(public log id || segment (LE u64) || offset
/// (LE u64))`, shown as 32 lowercase hex characters. Derived from the position, never stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId([u8; 16]);

impl RecordId {
    /// The id of the record at `position` in the log whose public id is `public_log_id`.
    pub fn derive(public_log_id: &[u8; 32], position: Position) -> Self {
        let mut h = Sha256::new();
        h.update(public_log_id);
        h.update(position.segment.to_le_bytes());
        h.update(position.offset.to_le_bytes());
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        RecordId(id)
    }
    /// Parses 32 hex characters in either case.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        parse_hex16(s).map(RecordId)
    }
    /// From raw bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        RecordId(b)
    }
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({self})")
    }
}
impl FromStr for RecordId {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, &'static str> {
        RecordId::parse(s)
    }
}

/// What `Recorder::record` (in the `recorder` crate) returns for a written record: its
/// position and the public id of its log, from which its [`RecordId`] is derived on demand.
///
/// Writing a record does not compute its id (a sha256, the largest single cost of a record
/// otherwise); [`id`](Self::id) and `Display` compute it when asked, each time. The id is
/// the same value [`RecordId::derive`] gives for this position in this log: the id format
/// and the protocol are unchanged. `Receipt` is `Copy` (a position and 32 bytes) and owns
/// its data, so it outlives the recorder that returned it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    position: Position,
    public_log_id: [u8; 32],
    held_until_wall_ms: Option<i64>,
}

impl Receipt {
    /// The receipt of the record at `position` in the log whose public id is `public_log_id`.
    pub fn new(public_log_id: [u8; 32], position: Position) -> Self {
        Receipt {
            position,
            public_log_id,
            held_until_wall_ms: None,
        }
    }
    /// The same receipt for a record the rate limiter spooled: held back from upload until
    /// wall time `until_ms` (ms since the Unix epoch).
    pub fn held_until(mut self, until_ms: Option<i64>) -> Self {
        self.held_until_wall_ms = until_ms;
        self
    }
    /// For a record the rate limiter spooled (strategy `spool`): the wall time (ms since the
    /// Unix epoch) before which the uploader does not send it; `None` for a record sent as
    /// soon as possible.
    pub fn held_back_until(&self) -> Option<i64> {
        self.held_until_wall_ms
    }
    /// Where the record is in the log.
    pub fn position(&self) -> Position {
        self.position
    }
    /// The public id of the log the record is in.
    pub fn public_log_id(&self) -> &[u8; 32] {
        &self.public_log_id
    }
    /// The record's id: computes [`RecordId::derive`] (a sha256) on each call.
    pub fn id(&self) -> RecordId {
        RecordId::derive(&self.public_log_id, self.position)
    }
}

impl From<Receipt> for RecordId {
    /// Computes the id, like [`Receipt::id`].
    fn from(r: Receipt) -> RecordId {
        r.id()
    }
}

/// Prints the record's id (32 lowercase hex characters, as [`RecordId`] does); computes it.
impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.id(), f)
    }
}
/// Shows the position and the id (computing it).
impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receipt")
            .field("position", &self.position)
            .field("id", &self.id())
            .finish()
    }
}
