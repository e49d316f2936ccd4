//! The trim ledger: `<log dir>/trim-ledger`, a small checksummed, append-only file to which
//! every trimmer (a writer's background retention, [`crate::retention::enforce`], the
//! uploader's retention) appends one entry per segment it removes, stating how many records
//! the segment held. A reader that later finds the segment missing (the uploader) reads the
//! ledger to state the exact number of records lost. Layout: FORMAT.md, "Trim ledger".
//!
//! Appends take an exclusive flock on the file; compaction (which drops entries a consumer
//! has passed, and bounds the file to [`MAX_ENTRIES`]) writes a new file and renames it over
//! the old one under the same lock, and appenders check after locking that they hold the
//! current file. Decoding is bounded ([`MAX_LEDGER_BYTES`]) and checks every entry.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::perms::Sharing;

/// File name of the ledger in the log directory.
pub const LEDGER_FILE: &str = "trim-ledger";
/// Magic bytes at offset 0.
pub const LEDGER_MAGIC: [u8; 8] = *b"\x89SEGTRM\n";
/// Ledger format version.
pub const LEDGER_VERSION: u32 = 1;
/// Size of the file header.
pub const LEDGER_HEADER_LEN: usize = 16;
/// Size of one entry.
pub const ENTRY_LEN: usize = 80;
/// Entries kept at most; an append past this drops the oldest half.
pub const MAX_ENTRIES: usize = 16_384;
/// The most bytes a decoder reads (longer files are a damaged ledger; the rest is ignored).
pub const MAX_LEDGER_BYTES: usize = LEDGER_HEADER_LEN + ENTRY_LEN * (MAX_ENTRIES + 1);
/// The checksum covers bytes `0..ENTRY_CRC_COVERS` of an entry.
const ENTRY_CRC_COVERS: usize = 72;

/// Why a segment was removed.
///
/// # Warning
/// On-disk values: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TrimReason {
    /// Total size over `max_bytes`.
    Size = 1,
    /// Older than `max_age`.
    Age = 2,
}

impl TrimReason {
    /// A stable short name.
    pub fn as_str(self) -> &'static str {
        match self {
            TrimReason::Size => "size",
            TrimReason::Age => "age",
        }
    }
}

/// One removed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrimEntry {
    /// Segment number.
    pub segment: u64,
    /// Record frames (preambles excluded) the segment held.
    pub records: u64,
    /// Disk bytes freed.
    pub bytes: u64,
    /// Offset of the first record frame (0: none).
    pub first_offset: u64,
    /// Offset of the last record frame (0: none).
    pub last_offset: u64,
    /// A position in this segment the trimmer knew a consumer had reached (the uploader's
    /// cursor), 0 if none.
    pub from_offset: u64,
    /// Records at or after `from_offset` (0 if `from_offset` is 0).
    pub records_from: u64,
    /// When it was removed (ns since the Unix epoch).
    pub wall_ns: i64,
    /// Why.
    pub reason: TrimReason,
}

fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

/// The 16-byte file header.
pub fn encode_header() -> [u8; LEDGER_HEADER_LEN] {
    let mut b = [0u8; LEDGER_HEADER_LEN];
    let parts: [&[u8]; 3] = [
        &LEDGER_MAGIC,
        &LEDGER_VERSION.to_le_bytes(),
        &(ENTRY_LEN as u32).to_le_bytes(),
    ];
    let mut at = 0;
    for p in parts {
        if let Some(s) = b.get_mut(at..at + p.len()) {
            s.copy_from_slice(p);
        }
        at += p.len();
    }
    b
}

impl TrimEntry {
    /// Encodes the entry (80 bytes, checksummed).
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        let words = [
            self.segment,
            self.records,
            self.bytes,
            self.first_offset,
            self.last_offset,
            self.from_offset,
            self.records_from,
            self.wall_ns as u64,
        ];
        for (i, w) in words.iter().enumerate() {
            if let Some(s) = b.get_mut(i * 8..i * 8 + 8) {
                s.copy_from_slice(&w.to_le_bytes());
            }
        }
        if let Some(r) = b.get_mut(64) {
            *r = self.reason as u8;
        }
        let crc = crc32c::crc32c(b.get(..ENTRY_CRC_COVERS).unwrap_or_default());
        if let Some(s) = b.get_mut(72..76) {
            s.copy_from_slice(&crc.to_le_bytes());
        }
        b
    }

    /// Decodes one entry; `None` if it fails any check (checksum, reserved bytes, reason).
    pub fn decode(b: &[u8]) -> Option<TrimEntry> {
        if b.len() != ENTRY_LEN {
            return None;
        }
        let crc = crc32c::crc32c(b.get(..ENTRY_CRC_COVERS)?);
        if crc != get_u32(b, 72) || b.get(65..72)? != [0u8; 7] || b.get(76..80)? != [0u8; 4] {
            return None;
        }
        let reason = match *b.get(64)? {
            1 => TrimReason::Size,
            2 => TrimReason::Age,
            _ => return None,
        };
        let e = TrimEntry {
            segment: get_u64(b, 0),
            records: get_u64(b, 8),
            bytes: get_u64(b, 16),
            first_offset: get_u64(b, 24),
            last_offset: get_u64(b, 32),
            from_offset: get_u64(b, 40),
            records_from: get_u64(b, 48),
            wall_ns: get_u64(b, 56) as i64,
            reason,
        };
        (e.records_from <= e.records && e.first_offset <= e.last_offset).then_some(e)
    }
}

/// A decoded ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Entries by segment number (the first entry for a number wins).
    pub entries: BTreeMap<u64, TrimEntry>,
    /// Entries that failed their checks (skipped).
    pub damaged: u64,
    /// Bytes at the end that do not form a whole entry (an append cut by a crash).
    pub torn_tail: u64,
}

/// Why a ledger could not be decoded at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// Shorter than its header, or the magic is wrong.
    #[error("not a trim ledger (bad magic or shorter than 16 bytes)")]
    BadMagic,
    /// Written by a newer seglog.
    #[error("trim ledger version {0} is newer than this seglog supports (1); upgrade seglog")]
    UnsupportedVersion(u32),
    /// The entry length field is not 80.
    #[error("trim ledger entry length {0} is not 80")]
    BadEntryLen(u32),
}

/// Decodes ledger bytes. Reads at most [`MAX_LEDGER_BYTES`]; never panics.
pub fn decode(bytes: &[u8]) -> std::result::Result<Ledger, LedgerError> {
    let bytes = bytes
        .get(..bytes.len().min(MAX_LEDGER_BYTES))
        .unwrap_or_default();
    if bytes.len() < LEDGER_HEADER_LEN || bytes.get(..8) != Some(&LEDGER_MAGIC[..]) {
        return Err(LedgerError::BadMagic);
    }
    match get_u32(bytes, 8) {
        LEDGER_VERSION => {}
        v => return Err(LedgerError::UnsupportedVersion(v)),
    }
    match get_u32(bytes, 12) {
        80 => {}
        n => return Err(LedgerError::BadEntryLen(n)),
    }
    let body = bytes.get(LEDGER_HEADER_LEN..).unwrap_or_default();
    let mut l = Ledger::default();
    let mut chunks = body.chunks_exact(ENTRY_LEN);
    for c in chunks.by_ref() {
        match TrimEntry::decode(c) {
            Some(e) => {
                l.entries.entry(e.segment).or_insert(e);
            }
            None => l.damaged += 1,
        }
    }
    l.torn_tail = chunks.remainder().len() as u64;
    Ok(l)
}

impl Ledger {
    /// Records lost in segments `[first, first + count)` from a position `start`: every
    /// segment must have an entry (else `None`: unknown). When `start` lies inside `first`
    /// past its first record, the records before it are subtracted: `before` if the caller
    /// counted them, else the entry's `records_from` if its `from_offset` is `start`'s offset.
    pub fn records_lost(
        &self,
        start_offset: u64,
        first: u64,
        count: u64,
        before: Option<u64>,
    ) -> Option<u64> {
        let Some(last) = count.checked_sub(1) else {
            return Some(0);
        };
        let last = first.checked_add(last)?;
        let in_range: Vec<&TrimEntry> = self.entries.range(first..=last).map(|(_, e)| e).collect();
        if in_range.len() as u64 != count {
            return None;
        }
        let mut sum: u64 = 0;
        for e in in_range {
            let n = if e.segment != first || e.records == 0 || start_offset <= e.first_offset {
                e.records
            } else if let Some(b) = before {
                e.records.checked_sub(b)?
            } else if e.from_offset == start_offset {
                e.records_from
            } else {
                return None;
            };
            sum = sum.checked_add(n)?;
        }
        Some(sum)
    }

    /// Total records and segments in the ledger.
    pub fn totals(&self) -> (u64, u64) {
        let records = self
            .entries
            .values()
            .fold(0u64, |a, e| a.saturating_add(e.records));
        (self.entries.len() as u64, records)
    }
}

/// Path of the ledger of the log in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(LEDGER_FILE)
}

/// Reads the ledger of the log in `dir` (an empty one if there is none).
pub fn read(dir: &Path) -> Result<Ledger> {
    let p = path(dir);
    let f = match File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ledger::default()),
        Err(e) => return Err(Error::io("open trim ledger", &p, e)),
    };
    let mut b = Vec::new();
    f.take(MAX_LEDGER_BYTES as u64)
        .read_to_end(&mut b)
        .map_err(|e| Error::io("read trim ledger", &p, e))?;
    if b.is_empty() {
        return Ok(Ledger::default());
    }
    decode(&b).map_err(|e| {
        Error::io(
            "decode trim ledger (move it aside to start a new one)",
            &p,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })
}

/// Opens the current ledger file locked exclusively (creating it with the log's mode).
fn open_locked(p: &Path) -> Result<File> {
    let sharing = log_sharing(p)?;
    loop {
        let f = sharing
            .open_or_create(OpenOptions::new().read(true).append(true), p)
            .map_err(|e| Error::io("open trim ledger", p, e))?;
        f.lock().map_err(|e| Error::io("lock trim ledger", p, e))?;
        // A compaction may have renamed a new file over the one we opened.
        let ours = f
            .metadata()
            .map_err(|e| Error::io("stat trim ledger", p, e))?;
        match std::fs::metadata(p) {
            Ok(cur) if cur.ino() == ours.ino() && cur.dev() == ours.dev() => return Ok(f),
            _ => continue,
        }
    }
}

/// The permission policy of the log holding ledger file `p`.
fn log_sharing(p: &Path) -> Result<Sharing> {
    let dir = p.parent().unwrap_or(Path::new("."));
    Sharing::of_dir(dir).map_err(|e| Error::io("stat", dir, e))
}

/// Creates the ledger (header only, space reserved for appends) if there is none. Writers call
/// it when they open the log, so a retention pass on a full disk can still record counts.
pub fn prepare(dir: &Path) -> Result<()> {
    let p = path(dir);
    if p.exists() {
        return Ok(());
    }
    let mut f = open_locked(&p)?;
    let len = f
        .metadata()
        .map_err(|e| Error::io("stat trim ledger", &p, e))?
        .len();
    if len == 0 {
        f.write_all(&encode_header())
            .and_then(|()| f.sync_data())
            .map_err(|e| Error::io("create trim ledger", &p, e))?;
    }
    reserve_space(&f, len.max(LEDGER_HEADER_LEN as u64));
    Ok(())
}

/// Appends `entries` (one write, then fsync). Called by every trimmer, for each segment it
/// removes. Past [`MAX_ENTRIES`] the oldest half is dropped.
pub fn append(dir: &Path, entries: &[TrimEntry]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let p = path(dir);
    let mut f = open_locked(&p)?;
    let len = f
        .metadata()
        .map_err(|e| Error::io("stat trim ledger", &p, e))?
        .len();
    let mut buf = Vec::with_capacity(LEDGER_HEADER_LEN + entries.len() * ENTRY_LEN);
    let hdr = LEDGER_HEADER_LEN as u64;
    if len < hdr {
        // New, or a header cut by a crash: start over.
        f.set_len(0)
            .map_err(|e| Error::io("truncate trim ledger", &p, e))?;
        buf.extend_from_slice(&encode_header());
    } else if !(len - hdr).is_multiple_of(ENTRY_LEN as u64) {
        // An entry cut by a crash: drop it so the next ones stay aligned.
        f.set_len(len - (len - hdr) % ENTRY_LEN as u64)
            .map_err(|e| Error::io("truncate trim ledger", &p, e))?;
    }
    for e in entries {
        buf.extend_from_slice(&e.encode());
    }
    f.write_all(&buf)
        .and_then(|()| f.sync_data())
        .map_err(|e| Error::io("append to trim ledger", &p, e))?;
    reserve_space(&f, len + buf.len() as u64);
    if len > (LEDGER_HEADER_LEN + ENTRY_LEN * MAX_ENTRIES) as u64 {
        let l = read(dir)?;
        let drop_below = l
            .entries
            .keys()
            .nth(l.entries.len() / 2)
            .copied()
            .unwrap_or(0);
        rewrite(&p, &l, drop_below)?;
    }
    Ok(())
}

/// Space allocated past the end of the ledger for the next appends, so that a retention pass
/// on a full disk (the usual reason it runs) can still record what it removes.
const RESERVE: u64 = 16 << 10;

/// Allocates [`RESERVE`] bytes past `len` without changing the file size (best effort).
fn reserve_space(f: &File, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(n)) = (libc::off_t::try_from(len), libc::off_t::try_from(RESERVE)) else {
        return;
    };
    // SAFETY: the descriptor is valid for the call (borrowed from `f`); no pointers are
    // passed. The result is ignored: without the reserve an append may fail on a full disk.
    #[expect(
        unsafe_code,
        reason = "fallocate(FALLOC_FL_KEEP_SIZE) has no safe wrapper"
    )]
    unsafe {
        libc::fallocate(f.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, off, n);
    }
}

fn rewrite(p: &Path, l: &Ledger, keep_from: u64) -> Result<()> {
    let dir = p.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{LEDGER_FILE}.tmp"));
    let mut buf = encode_header().to_vec();
    for e in l.entries.range(keep_from..).map(|(_, e)| e) {
        buf.extend_from_slice(&e.encode());
    }
    let mut f = log_sharing(p)?
        .open(
            OpenOptions::new().write(true).create(true).truncate(true),
            &tmp,
        )
        .map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(&buf)
        .and_then(|()| f.sync_data())
        .map_err(|e| Error::io("write", &tmp, e))?;
    reserve_space(&f, buf.len() as u64);
    std::fs::rename(&tmp, p).map_err(|e| Error::io("replace trim ledger", p, e))?;
    crate::fs::sync_dir(dir)
}

/// Drops the entries of segments before `keep_from` (a consumer passed them), rewriting the
/// file only if there are any. Returns how many entries were dropped.
pub fn compact(dir: &Path, keep_from: u64) -> Result<usize> {
    let p = path(dir);
    if !p.exists() {
        return Ok(0);
    }
    let _f = open_locked(&p)?;
    let l = read(dir)?;
    let drop = l.entries.range(..keep_from).count();
    if drop == 0 && l.damaged == 0 && l.torn_tail == 0 {
        return Ok(0);
    }
    rewrite(&p, &l, keep_from)?;
    Ok(drop)
}

/// Entries a ledger holds before [`compact_if_large`] rewrites it.
pub const COMPACT_AT: u64 = 256;

/// [`compact`], but only once the file holds more than [`COMPACT_AT`] entries (a cheap
/// `stat` otherwise), so a consumer can call it after every acknowledgement.
pub fn compact_if_large(dir: &Path, keep_from: u64) -> Result<usize> {
    match std::fs::metadata(path(dir)) {
        Ok(m) if m.len() > LEDGER_HEADER_LEN as u64 + COMPACT_AT * ENTRY_LEN as u64 => {
            compact(dir, keep_from)
        }
        _ => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn entry(segment: u64, records: u64) -> TrimEntry {
        TrimEntry {
            segment,
            records,
            bytes: 65536,
            first_offset: if records > 0 { 280 } else { 0 },
            last_offset: if records > 0 {
                280 + 32 * (records - 1)
            } else {
                0
            },
            from_offset: 0,
            records_from: 0,
            wall_ns: 1_700_000_000_000_000_000,
            reason: TrimReason::Size,
        }
    }

    #[test]
    fn entries_round_trip_and_any_flipped_bit_is_rejected() {
        let e = entry(7, 12);
        let b = e.encode();
        assert_eq!(TrimEntry::decode(&b), Some(e));
        for bit in 0..ENTRY_LEN * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(TrimEntry::decode(&c), None, "bit {bit}");
        }
    }

    #[test]
    fn append_read_survive_a_torn_tail_and_compaction_drops_passed_segments() {
        let d = tempfile::tempdir().unwrap();
        append(d.path(), &[entry(1, 3), entry(2, 4)]).unwrap();
        // A crash cut the next append.
        let p = path(d.path());
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&entry(3, 5).encode()[..30]).unwrap();
        let l = read(d.path()).unwrap();
        assert_eq!((l.entries.len(), l.torn_tail), (2, 30));
        append(d.path(), &[entry(3, 5)]).unwrap();
        let l = read(d.path()).unwrap();
        assert_eq!((l.entries.len(), l.torn_tail, l.damaged), (3, 0, 0));
        assert_eq!(l.records_lost(0, 1, 3, None), Some(12));
        assert_eq!(
            l.records_lost(0, 1, 4, None),
            None,
            "segment 4 has no entry"
        );
        // From inside segment 2, after its first two records: 2 of 4 lost, plus segment 3.
        assert_eq!(l.records_lost(280 + 64, 2, 2, Some(2)), Some(7));
        assert_eq!(l.records_lost(280 + 64, 2, 2, None), None);
        assert_eq!(compact(d.path(), 3).unwrap(), 2);
        let l = read(d.path()).unwrap();
        assert_eq!(l.entries.keys().copied().collect::<Vec<_>>(), vec![3]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn decode_refuses_other_files_and_newer_versions_clearly() {
        assert_eq!(decode(b"short"), Err(LedgerError::BadMagic));
        let mut h = encode_header();
        h[8] = 2;
        assert_eq!(decode(&h), Err(LedgerError::UnsupportedVersion(2)));
        assert!(decode(&encode_header()).unwrap().entries.is_empty());
    }
}
