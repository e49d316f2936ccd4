//! The on-disk format: segment header and frame encoding. Pure code, no I/O.
//!
//! FORMAT.md at the repository root is the specification; this module is its only
//! implementation. All integers are little-endian.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

/// Magic bytes at offset 0 of every segment file (PNG-style: a high byte, a name, a newline).
pub const SEGMENT_MAGIC: [u8; 8] = *b"\x89SEGLOG\n";
/// The newest format version this build reads and the one it writes.
pub const FORMAT_VERSION: u32 = 2;
/// Size of the segment header; the first frame starts here.
pub const HEADER_LEN: u64 = 256;
/// Size of a frame header; the payload follows it.
pub const FRAME_HEADER_LEN: u64 = 16;
/// Frames start at multiples of this.
pub const FRAME_ALIGN: u64 = 8;
/// The low 32 bits of every frame's first word. Bytes FE and FF never occur in UTF-8,
/// so text payloads can never contain a sync marker.
pub const FRAME_MARKER: u32 = u32::from_le_bytes([0xFE, b'S', b'G', 0xFF]);
/// The largest payload the format allows (a writer may configure less). Readers refuse
/// longer length fields without reading them, which bounds reader memory.
pub const MAX_PAYLOAD_LEN: u64 = 64 << 20;
/// The largest segment the format allows (1 TiB): bounds what a damaged header can claim.
pub const MAX_SEGMENT_CAPACITY: u64 = 1 << 40;

// Header field offsets (see FORMAT.md, "Segment header").
pub(crate) const OFF_MAGIC: usize = 0;
pub(crate) const OFF_VERSION: usize = 8;
pub(crate) const OFF_HEADER_LEN: usize = 12;
pub(crate) const OFF_SEGMENT: usize = 16;
pub(crate) const OFF_CAPACITY: usize = 24;
pub(crate) const OFF_CREATED_WALL: usize = 32;
pub(crate) const OFF_CREATED_BOOT: usize = 40;
pub(crate) const OFF_BOOT_ID: usize = 48;
pub(crate) const OFF_LOG_ID: usize = 64;
pub(crate) const OFF_HEADER_CRC: usize = 96;
/// The checksum covers bytes `0..OFF_HEADER_CRC`.
pub(crate) const HEADER_CRC_COVERS: usize = OFF_HEADER_CRC;
/// The shared reservation counter: the file offset of the next free byte. Not covered by
/// the header checksum (it changes on every append). 8-aligned for atomic access.
pub const OFF_RESERVED_END: usize = 128;

/// What a frame holds.
///
/// # Warning
/// On-disk values: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// An application record.
    Record = 1,
    /// A writer's preamble (its context), written before its first record in a segment.
    Preamble = 2,
    /// End of segment: nothing follows in this segment. Payload length is always 0.
    Seal = 3,
    /// Format version 2: the unused rest of a writer's chunk. Its checksum covers the
    /// position prefix only (segment, offset, length, kind); its payload is unwritten space
    /// and is never read. Readers skip it silently: it is neither a record nor damage.
    Pad = 4,
}

impl TryFrom<u8> for FrameKind {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            1 => Ok(FrameKind::Record),
            2 => Ok(FrameKind::Preamble),
            3 => Ok(FrameKind::Seal),
            4 => Ok(FrameKind::Pad),
            other => Err(other),
        }
    }
}

/// Format versions this build knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatVersion {
    /// The first format.
    V1 = 1,
    /// Per-writer chunks and the pad frame (this one; FORMAT.md, "Version 2").
    V2 = 2,
}

impl TryFrom<u32> for FormatVersion {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            1 => Ok(FormatVersion::V1),
            2 => Ok(FormatVersion::V2),
            other => Err(other),
        }
    }
}

/// The decoded fixed part of a segment header.
///
/// # Warning
/// Serialized field by field at the offsets above; do not add, remove, retype or reorder
/// fields without a new format version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version of the segment.
    pub version: u32,
    /// Segment number (u64, never reused; the file is named after it).
    pub segment: u64,
    /// Total file size in bytes, header included.
    pub capacity: u64,
    /// Wall-clock creation time, nanoseconds since the Unix epoch.
    pub created_wall_ns: i64,
    /// Boot-relative creation time (CLOCK_BOOTTIME), nanoseconds.
    pub created_boot_ns: u64,
    /// The kernel boot id at creation, so boot-relative times are only compared within a boot.
    pub boot_id: [u8; 16],
    /// The log's public id (sha256 of its private id).
    pub log_id: [u8; 32],
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than a header.
    Short(usize),
    /// Not a seglog segment.
    BadMagic,
    /// Written by a newer seglog.
    UnsupportedVersion {
        /// Version found in the file.
        found: u32,
        /// Newest version this build reads.
        max: u32,
    },
    /// A field fails validation or the checksum does not match.
    Corrupt(&'static str),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short(n) => write!(f, "file is {n} bytes, shorter than a segment header ({HEADER_LEN})"),
            HeaderError::BadMagic => write!(f, "not a seglog segment (bad magic)"),
            HeaderError::UnsupportedVersion { found, max } => write!(
                f,
                "segment format version {found} is newer than this seglog supports ({max}); upgrade seglog"
            ),
            HeaderError::Corrupt(what) => write!(f, "corrupt segment header: {what}"),
        }
    }
}

fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    if let Some(s) = b.get_mut(off..off + v.len()) {
        s.copy_from_slice(v);
    }
}

impl SegmentHeader {
    /// Encodes the header, with the reservation counter set to the first frame offset.
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut b = [0u8; HEADER_LEN as usize];
        put(&mut b, OFF_MAGIC, &SEGMENT_MAGIC);
        put(&mut b, OFF_VERSION, &self.version.to_le_bytes());
        put(&mut b, OFF_HEADER_LEN, &(HEADER_LEN as u32).to_le_bytes());
        put(&mut b, OFF_SEGMENT, &self.segment.to_le_bytes());
        put(&mut b, OFF_CAPACITY, &self.capacity.to_le_bytes());
        put(
            &mut b,
            OFF_CREATED_WALL,
            &self.created_wall_ns.to_le_bytes(),
        );
        put(
            &mut b,
            OFF_CREATED_BOOT,
            &self.created_boot_ns.to_le_bytes(),
        );
        put(&mut b, OFF_BOOT_ID, &self.boot_id);
        put(&mut b, OFF_LOG_ID, &self.log_id);
        let crc = crc32c::crc32c(b.get(..HEADER_CRC_COVERS).unwrap_or_default());
        put(&mut b, OFF_HEADER_CRC, &crc.to_le_bytes());
        put(&mut b, OFF_RESERVED_END, &HEADER_LEN.to_le_bytes());
        b
    }

    /// Decodes and validates a header from the first bytes of a segment file.
    pub fn decode(b: &[u8]) -> Result<Self, HeaderError> {
        if b.len() < HEADER_LEN as usize {
            return Err(HeaderError::Short(b.len()));
        }
        if b.get(OFF_MAGIC..OFF_MAGIC + 8) != Some(&SEGMENT_MAGIC[..]) {
            return Err(HeaderError::BadMagic);
        }
        let version = get_u32(b, OFF_VERSION);
        let stored_crc = get_u32(b, OFF_HEADER_CRC);
        let crc = crc32c::crc32c(b.get(..HEADER_CRC_COVERS).unwrap_or_default());
        // A newer version may have changed the layout, so the version is checked before the
        // checksum; but a bit flip in the version field must not read as "newer": require the
        // checksum to match for the version error too.
        if FormatVersion::try_from(version).is_err() {
            if crc == stored_crc && version > FORMAT_VERSION {
                return Err(HeaderError::UnsupportedVersion {
                    found: version,
                    max: FORMAT_VERSION,
                });
            }
            return Err(HeaderError::Corrupt("unknown version field"));
        }
        if crc != stored_crc {
            return Err(HeaderError::Corrupt("header checksum mismatch"));
        }
        if u64::from(get_u32(b, OFF_HEADER_LEN)) != HEADER_LEN {
            return Err(HeaderError::Corrupt("header length field"));
        }
        let capacity = get_u64(b, OFF_CAPACITY);
        if !(HEADER_LEN + FRAME_HEADER_LEN..=MAX_SEGMENT_CAPACITY).contains(&capacity)
            || !capacity.is_multiple_of(FRAME_ALIGN)
        {
            return Err(HeaderError::Corrupt("capacity out of range"));
        }
        let mut boot_id = [0u8; 16];
        boot_id.copy_from_slice(b.get(OFF_BOOT_ID..OFF_BOOT_ID + 16).unwrap_or(&[0u8; 16]));
        let mut log_id = [0u8; 32];
        log_id.copy_from_slice(b.get(OFF_LOG_ID..OFF_LOG_ID + 32).unwrap_or(&[0u8; 32]));
        Ok(SegmentHeader {
            version,
            segment: get_u64(b, OFF_SEGMENT),
            capacity,
            created_wall_ns: get_u64(b, OFF_CREATED_WALL) as i64,
            created_boot_ns: get_u64(b, OFF_CREATED_BOOT),
            boot_id,
            log_id,
        })
    }
}

/// Reads the reservation counter out of raw header bytes (0 when too short).
pub fn reserved_end(header: &[u8]) -> u64 {
    get_u64(header, OFF_RESERVED_END)
}

/// Bytes a frame with `payload_len` bytes of payload occupies, padding included.
#[inline]
pub const fn frame_len(payload_len: u64) -> u64 {
    FRAME_HEADER_LEN + ((payload_len + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1))
}

/// The first 8 bytes of a frame, stored last (release) to publish it.
#[inline]
pub const fn word0(payload_len: u32) -> u64 {
    FRAME_MARKER as u64 | ((payload_len as u64) << 32)
}

/// The checksum of a frame: crc32c over segment number, frame offset, length, kind and flags,
/// then the payload. Binding the position in means a frame copied elsewhere does not verify.
#[inline]
pub fn frame_crc(segment: u64, offset: u64, len: u32, kind: FrameKind, payload: &[u8]) -> u32 {
    crate::crc::frame_crc(segment, offset, len, kind as u8, payload)
}

/// Bytes 8..16 of a frame header: checksum, kind, flags (0), reserved (0).
#[inline]
pub fn word1(crc: u32, kind: FrameKind) -> [u8; 8] {
    let c = crc.to_le_bytes();
    [c[0], c[1], c[2], c[3], kind as u8, 0, 0, 0]
}

/// The checksum of a pad frame covering `len` payload bytes at `offset`: the position
/// prefix only (no payload), so a pad is written and checked in O(1) whatever its length.
#[inline]
pub fn pad_crc(segment: u64, offset: u64, len: u32) -> u32 {
    crate::crc::frame_crc(segment, offset, len, FrameKind::Pad as u8, &[])
}

/// The 16-byte header of a pad frame filling `offset..end` (`end - offset >= 16`, both
/// 8-aligned). The payload bytes after it are left as they are (unwritten zeroes).
pub fn encode_pad(segment: u64, offset: u64, end: u64) -> [u8; 16] {
    let len = (end - offset - FRAME_HEADER_LEN) as u32;
    let mut h = [0u8; 16];
    put(&mut h, 0, &word0(len).to_le_bytes());
    put(
        &mut h,
        8,
        &word1(pad_crc(segment, offset, len), FrameKind::Pad),
    );
    h
}

/// Encodes a whole frame into a vector (tests, fixtures, tools; the writer encodes in place).
pub fn encode_frame(segment: u64, offset: u64, kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut v = Vec::with_capacity(frame_len(payload.len() as u64) as usize);
    v.extend_from_slice(&word0(len).to_le_bytes());
    v.extend_from_slice(&word1(frame_crc(segment, offset, len, kind, payload), kind));
    v.extend_from_slice(payload);
    v.resize(frame_len(payload.len() as u64) as usize, 0);
    v
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameError {
    /// The first word is not zero and does not carry the sync marker.
    BadMarker,
    /// The length field runs past the segment or the format's maximum.
    BadLength,
    /// Unknown kind, non-zero reserved bits, or a seal with a payload.
    BadKind,
    /// The checksum does not match.
    Checksum,
}

impl FrameError {
    /// A stable name for counters and reports.
    pub fn code(self) -> &'static str {
        match self {
            FrameError::BadMarker => "bad_marker",
            FrameError::BadLength => "bad_length",
            FrameError::BadKind => "bad_kind",
            FrameError::Checksum => "checksum",
        }
    }
}

/// The result of looking at the bytes where a frame should start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCheck {
    /// A whole, verified frame. `payload` is the byte range of the payload within the buffer.
    Valid {
        /// What the frame holds.
        kind: FrameKind,
        /// Payload start within the buffer given to [`check_frame`].
        payload_start: usize,
        /// Payload length.
        payload_len: usize,
        /// Total bytes the frame occupies (header, payload, padding).
        total: u64,
    },
    /// The first word is zero: unwritten space, or a reservation not (yet) committed.
    Empty,
    /// More bytes are needed to decide: the frame claims `need` bytes in all.
    NeedMore {
        /// Bytes needed from the frame start.
        need: u64,
    },
    /// Damage at this offset.
    Bad(FrameError),
}

/// Checks the frame starting at `buf[0]`, which sits at `offset` in segment `segment` whose
/// file is `capacity` bytes long. Never reads outside `buf`; never trusts a length before it
/// is bounded by the segment and [`MAX_PAYLOAD_LEN`].
pub fn check_frame(buf: &[u8], segment: u64, offset: u64, capacity: u64) -> FrameCheck {
    if buf.len() < 8 {
        return FrameCheck::NeedMore {
            need: FRAME_HEADER_LEN,
        };
    }
    let w0 = get_u64(buf, 0);
    if w0 == 0 {
        return FrameCheck::Empty;
    }
    if w0 as u32 != FRAME_MARKER {
        return FrameCheck::Bad(FrameError::BadMarker);
    }
    let len = (w0 >> 32) as u32;
    let total = frame_len(u64::from(len));
    if u64::from(len) > MAX_PAYLOAD_LEN || offset.saturating_add(total) > capacity {
        return FrameCheck::Bad(FrameError::BadLength);
    }
    if buf.len() < FRAME_HEADER_LEN as usize {
        return FrameCheck::NeedMore {
            need: FRAME_HEADER_LEN,
        };
    }
    if buf.get(12).copied() == Some(FrameKind::Pad as u8) {
        // A pad's checksum covers its prefix only: its payload (unwritten space) is never
        // read, so a reader needs just the 16-byte header whatever the pad's length.
        if buf.get(13..16) != Some(&[0u8, 0, 0][..]) {
            return FrameCheck::Bad(FrameError::BadKind);
        }
        if pad_crc(segment, offset, len) != get_u32(buf, 8) {
            return FrameCheck::Bad(FrameError::Checksum);
        }
        return FrameCheck::Valid {
            kind: FrameKind::Pad,
            payload_start: FRAME_HEADER_LEN as usize,
            payload_len: 0,
            total,
        };
    }
    if (buf.len() as u64) < total {
        return FrameCheck::NeedMore { need: total };
    }
    let kind_byte = buf.get(12).copied().unwrap_or(0);
    let Ok(kind) = FrameKind::try_from(kind_byte) else {
        return FrameCheck::Bad(FrameError::BadKind);
    };
    if buf.get(13..16) != Some(&[0u8, 0, 0][..]) || (kind == FrameKind::Seal && len != 0) {
        return FrameCheck::Bad(FrameError::BadKind);
    }
    let stored = get_u32(buf, 8);
    let payload = buf.get(16..16 + len as usize).unwrap_or_default();
    if frame_crc(segment, offset, len, kind, payload) != stored {
        return FrameCheck::Bad(FrameError::Checksum);
    }
    FrameCheck::Valid {
        kind,
        payload_start: 16,
        payload_len: len as usize,
        total,
    }
}

/// Finds the first offset at or after `from` (relative to `buf`, 8-aligned steps) whose
/// first word carries the sync marker. The caller verifies the candidate with
/// [`check_frame`] and keeps searching past it if it fails.
pub fn find_marker(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(w) = buf.get(i..i + 4) {
        if get_u32(w, 0) == FRAME_MARKER {
            return Some(i);
        }
        i += FRAME_ALIGN as usize;
    }
    None
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn header() -> SegmentHeader {
        SegmentHeader {
            version: 1,
            segment: 42,
            capacity: 1 << 20,
            created_wall_ns: 1_700_000_000_000_000_000,
            created_boot_ns: 5_000_000_000,
            boot_id: [7; 16],
            log_id: [9; 32],
        }
    }

    #[test]
    fn header_round_trips() {
        let h = header();
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
        assert_eq!(reserved_end(&b), HEADER_LEN);
    }

    #[test]
    fn header_refuses_newer_version_with_clear_error() {
        let mut h = header();
        h.version = 3;
        let b = h.encode();
        assert_eq!(
            SegmentHeader::decode(&b),
            Err(HeaderError::UnsupportedVersion { found: 3, max: 2 })
        );
        assert!(SegmentHeader::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("upgrade seglog"));
    }

    #[test]
    fn header_detects_every_bit_flip_in_covered_bytes() {
        let b = header().encode();
        for byte in 0..(OFF_HEADER_CRC + 4) {
            for bit in 0..8 {
                let mut c = b;
                c[byte] ^= 1 << bit;
                assert!(
                    SegmentHeader::decode(&c).is_err(),
                    "flip {byte}:{bit} not detected"
                );
            }
        }
    }

    #[test]
    fn header_refuses_short_and_garbage() {
        assert_eq!(
            SegmentHeader::decode(&[0u8; 10]),
            Err(HeaderError::Short(10))
        );
        assert_eq!(
            SegmentHeader::decode(&[0xAB; 256]),
            Err(HeaderError::BadMagic)
        );
    }

    #[test]
    fn frame_round_trips_and_pads() {
        let f = encode_frame(3, 256, FrameKind::Record, b"hello");
        assert_eq!(f.len(), 24);
        match check_frame(&f, 3, 256, 4096) {
            FrameCheck::Valid {
                kind,
                payload_start,
                payload_len,
                total,
            } => {
                assert_eq!(kind, FrameKind::Record);
                assert_eq!(&f[payload_start..payload_start + payload_len], b"hello");
                assert_eq!(total, 24);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn frame_is_bound_to_its_position() {
        let f = encode_frame(3, 256, FrameKind::Record, b"hello");
        assert_eq!(
            check_frame(&f, 3, 264, 4096),
            FrameCheck::Bad(FrameError::Checksum)
        );
        assert_eq!(
            check_frame(&f, 4, 256, 4096),
            FrameCheck::Bad(FrameError::Checksum)
        );
    }

    #[test]
    fn frame_checks_are_bounded() {
        assert_eq!(check_frame(&[0; 16], 1, 256, 4096), FrameCheck::Empty);
        assert_eq!(
            check_frame(&[1; 16], 1, 256, 4096),
            FrameCheck::Bad(FrameError::BadMarker)
        );
        let mut huge = word0(u32::MAX).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 8]);
        assert_eq!(
            check_frame(&huge, 1, 256, 1 << 40),
            FrameCheck::Bad(FrameError::BadLength)
        );
        let f = encode_frame(1, 4000, FrameKind::Record, &[1; 200]);
        assert_eq!(
            check_frame(&f, 1, 4000, 4096),
            FrameCheck::Bad(FrameError::BadLength)
        );
        assert_eq!(
            check_frame(&f[..20], 1, 256, 4096),
            FrameCheck::NeedMore { need: 216 }
        );
    }

    #[test]
    fn marker_never_appears_in_utf8() {
        let m = FRAME_MARKER.to_le_bytes();
        assert!(std::str::from_utf8(&m).is_err());
        assert!(m.contains(&0xFE) && m.contains(&0xFF));
    }

    #[test]
    fn find_marker_steps_by_alignment() {
        let mut buf = vec![0u8; 64];
        buf[40..44].copy_from_slice(&FRAME_MARKER.to_le_bytes());
        assert_eq!(find_marker(&buf, 0), Some(40));
        assert_eq!(find_marker(&buf, 48), None);
        buf[41..45].copy_from_slice(&FRAME_MARKER.to_le_bytes());
        assert_eq!(
            find_marker(&buf, 0),
            None,
            "unaligned marker must be ignored"
        );
    }
}
