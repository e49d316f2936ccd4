//! Helpers shared by the integration tests: self-checking payloads, reading a whole log,
//! and checking a damaged copy against the original.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use segment_log::{
    Damage, DamageReason, FrameKind, OwnedEntry, OwnedFrame, Position, Reader, ReaderOptions,
};

/// FNV-1a, 64 bit: the payload's own checksum (independent of the log's crc32c).
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Smallest payload [`payload`] makes.
pub const MIN_PAYLOAD: usize = 20;

/// A self-describing payload of `len` bytes (at least [`MIN_PAYLOAD`]): writer id, sequence
/// number, a body derived from both, and an FNV checksum of everything before it.
pub fn payload(writer: u32, seq: u64, len: usize) -> Vec<u8> {
    let len = len.max(MIN_PAYLOAD);
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&writer.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    for i in 0..len - MIN_PAYLOAD {
        p.push(body_byte(writer, seq, i));
    }
    let sum = fnv(&p);
    p.extend_from_slice(&sum.to_le_bytes());
    p
}

fn body_byte(writer: u32, seq: u64, i: usize) -> u8 {
    (writer as u64)
        .wrapping_mul(131)
        .wrapping_add(seq.wrapping_mul(7))
        .wrapping_add(i as u64) as u8
}

/// Decodes and fully verifies a payload made by [`payload`]: `Some((writer, seq))` only if
/// every byte is exactly what `payload(writer, seq, len)` makes.
pub fn decode(p: &[u8]) -> Option<(u32, u64)> {
    if p.len() < MIN_PAYLOAD {
        return None;
    }
    let writer = u32::from_le_bytes(p[..4].try_into().ok()?);
    let seq = u64::from_le_bytes(p[4..12].try_into().ok()?);
    (payload(writer, seq, p.len()) == p).then_some((writer, seq))
}

/// Reader options for tests: a short hole timeout so a crashed writer's hole costs little.
pub fn quick() -> ReaderOptions {
    ReaderOptions {
        // Well above the chunk closer's 10-20 ms (format version 2): a live writer's idle
        // chunk is padded before this reader would call its rest abandoned.
        hole_timeout: Duration::from_millis(200),
        ..ReaderOptions::default()
    }
}

/// Every frame (preambles included) and every damage report, from the start.
pub fn read_all(dir: &Path) -> (Vec<OwnedFrame>, Vec<Damage>) {
    read_all_with(dir, quick())
}

/// Like [`read_all`] with explicit options.
pub fn read_all_with(dir: &Path, opts: ReaderOptions) -> (Vec<OwnedFrame>, Vec<Damage>) {
    let (mut frames, mut damage) = (Vec::new(), Vec::new());
    for e in Reader::open(dir, Position::default(), opts).expect("open reader") {
        match e.expect("read entry") {
            OwnedEntry::Frame(f) => frames.push(f),
            OwnedEntry::Damage(d) => damage.push(d),
        }
    }
    (frames, damage)
}

/// Record frames only.
pub fn records(frames: &[OwnedFrame]) -> Vec<&OwnedFrame> {
    frames
        .iter()
        .filter(|f| f.kind == FrameKind::Record)
        .collect()
}

/// Path of live segment `n`.
pub fn seg_file(dir: &Path, n: u64) -> PathBuf {
    dir.join("segments")
        .join(segment_log::fs::segment_file_name(n, "seg"))
}

/// Copies a log directory (files and sub-directories).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Whether `d` says the frame at `pos` may have been lost.
pub fn covers(d: &Damage, pos: Position) -> bool {
    match d.reason {
        DamageReason::MissingSegments { count } => {
            pos.segment >= d.segment && pos.segment < d.segment + count
        }
        DamageReason::BadHeader(_) | DamageReason::Unreadable(_) if d.len == 0 => {
            pos.segment == d.segment
        }
        _ => pos.segment == d.segment && pos.offset >= d.offset && pos.offset < d.offset + d.len,
    }
}

/// Checks what a reader returned from a damaged copy against the original frames:
/// every frame returned is an original one, byte for byte, at its original position, once,
/// in order; every original frame not returned lies inside a reported damaged range.
pub fn check_against(
    orig: &[OwnedFrame],
    got: &[OwnedFrame],
    damage: &[Damage],
) -> Result<(), String> {
    for w in got.windows(2) {
        if w[0].position >= w[1].position {
            return Err(format!(
                "positions not increasing: {} then {}",
                w[0].position, w[1].position
            ));
        }
    }
    let mut it = orig.iter().peekable();
    for g in got {
        loop {
            match it.next() {
                Some(o) if o.position == g.position => {
                    if o != g {
                        return Err(format!("frame at {} differs from the original", g.position));
                    }
                    break;
                }
                Some(o) if o.position < g.position => {
                    if !damage.iter().any(|d| covers(d, o.position)) {
                        return Err(format!(
                            "frame at {} lost without a damage report: {damage:?}",
                            o.position
                        ));
                    }
                }
                _ => {
                    return Err(format!(
                        "returned a frame at {} that was never written",
                        g.position
                    ))
                }
            }
        }
    }
    for o in it {
        if !damage.iter().any(|d| covers(d, o.position)) {
            return Err(format!(
                "frame at {} lost without a damage report: {damage:?}",
                o.position
            ));
        }
    }
    Ok(())
}
