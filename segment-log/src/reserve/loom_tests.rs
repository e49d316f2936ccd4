//! Loom model of the reservation protocol (`reserve`, `write_frame`, `seal`).
//!
//! Loom cannot see an mmap, so [`LoomMem`] implements [`FrameMem`] over a vector of loom
//! atomics standing in for the mapped segment: payload words are stored `Relaxed` by
//! `write_body`, the frame's first word is stored `Release` by `publish`. The `scan` below is
//! an idealised reader of the mapping that loads the first word `Acquire` before the rest
//! `Relaxed`; it checks the writers' side of the protocol: a missing release edge would let
//! loom hand it stale payload words, which the checksum check turns into a failure (see
//! `a_relaxed_publish_is_caught_by_the_model`). The real readers use `pread`, which has no
//! acquire at all; [`reader`] models them (words read in any order, crc, re-read).
//!
//! Run (as `.ci/run` does): `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo test -p segment-log --lib loom`
#![allow(clippy::indexing_slicing, clippy::unwrap_used)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;

mod chunks;
mod reader;

use super::{reserve, seal, write_frame, FrameMem, Reservation};
use crate::format::{self, FrameCheck, FrameKind, FRAME_HEADER_LEN, HEADER_LEN};

const SEGMENT: u64 = 7;

/// An in-memory segment: the reservation counter plus the frame area as 8-byte words.
struct LoomMem {
    capacity: u64,
    reserved: AtomicU64,
    words: Vec<AtomicU64>,
    /// Store ordering used by `publish` (Release in the real protocol).
    publish_order: Ordering,
}

impl LoomMem {
    fn new(frame_area: u64, publish_order: Ordering) -> Self {
        assert_eq!(frame_area % 8, 0);
        LoomMem {
            capacity: HEADER_LEN + frame_area,
            reserved: AtomicU64::new(HEADER_LEN),
            words: (0..frame_area / 8).map(|_| AtomicU64::new(0)).collect(),
            publish_order,
        }
    }

    fn word(&self, offset: u64) -> &AtomicU64 {
        assert!(
            offset >= HEADER_LEN && offset % 8 == 0,
            "unaligned word {offset}"
        );
        let i = ((offset - HEADER_LEN) / 8) as usize;
        assert!(
            i < self.words.len(),
            "word at {offset} is outside the segment"
        );
        &self.words[i]
    }
}

impl FrameMem for LoomMem {
    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn fetch_add_reserved(&self, n: u64) -> u64 {
        self.reserved.fetch_add(n, Ordering::AcqRel)
    }

    fn load_reserved(&self) -> u64 {
        self.reserved.load(Ordering::Acquire)
    }

    fn force_full(&self) {
        self.reserved.fetch_max(self.capacity, Ordering::AcqRel);
    }

    fn load_word(&self, offset: u64) -> u64 {
        self.word(offset).load(Ordering::Relaxed)
    }

    fn write_body(&self, offset: u64, word1: [u8; 8], head: &[u8], body: &[u8]) {
        let joined: Vec<u8> = head.iter().chain(body).copied().collect();
        let payload = &joined[..];
        let total = format::frame_len(payload.len() as u64);
        assert!(
            offset >= HEADER_LEN && offset + total <= self.capacity,
            "frame outside segment"
        );
        self.word(offset + 8)
            .store(u64::from_le_bytes(word1), Ordering::Relaxed);
        // Payload packed into little-endian words, zero padded to the frame's end.
        let mut off = offset + FRAME_HEADER_LEN;
        for chunk in payload.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.word(off)
                .store(u64::from_le_bytes(w), Ordering::Relaxed);
            off += 8;
        }
        while off < offset + total {
            self.word(off).store(0, Ordering::Relaxed);
            off += 8;
        }
    }

    fn publish(&self, offset: u64, word0: u64) {
        self.word(offset).store(word0, self.publish_order);
    }
}

/// The payload writer `w` writes as its `seq`-th record: distinct lengths per writer so that
/// padding is exercised, and content derived from (writer, seq) so any mix-up shows.
fn payload(w: u8, seq: u8) -> Vec<u8> {
    let len = if w == 0 { 8 } else { 13 };
    (0..len)
        .map(|i| w.wrapping_mul(31) ^ seq.wrapping_mul(7) ^ (i as u8))
        .collect()
}

/// What a scan of the segment saw.
#[derive(Debug, Default)]
struct Scan {
    /// (offset, writer, seq) of each record frame, in offset order.
    records: Vec<(u64, u8, u8)>,
    /// Offset of a seal frame, if one was seen.
    seal: Option<u64>,
    /// (offset, end) of each pad frame (format version 2 chunks).
    pads: Vec<(u64, u64)>,
}

/// Scans published frames like an ideal reader of the mapping (the real one is modelled in
/// [`reader`]): loads the counter, then each frame's first word with acquire; stops at the first unpublished frame (a live writer will commit it).
/// Panics if a published frame fails its checks or carries a payload nobody wrote.
fn scan(mem: &LoomMem) -> Scan {
    let mut out = Scan::default();
    let limit = mem.load_reserved().min(mem.capacity);
    let mut off = HEADER_LEN;
    while off + FRAME_HEADER_LEN <= mem.capacity && off < limit {
        let w0 = mem.word(off).load(Ordering::Acquire);
        if w0 == 0 {
            break; // reserved, not yet published
        }
        let len = w0 >> 32;
        let total = format::frame_len(len);
        assert!(
            off + total <= mem.capacity,
            "published frame at {off} runs past the segment"
        );
        let mut bytes = Vec::with_capacity(total as usize);
        bytes.extend_from_slice(&w0.to_le_bytes());
        let mut o = off + 8;
        while o < off + total {
            bytes.extend_from_slice(&mem.word(o).load(Ordering::Relaxed).to_le_bytes());
            o += 8;
        }
        match format::check_frame(&bytes, SEGMENT, off, mem.capacity) {
            FrameCheck::Valid {
                kind: FrameKind::Seal,
                ..
            } => {
                out.seal = Some(off);
                break;
            }
            FrameCheck::Valid {
                kind: FrameKind::Pad,
                ..
            } => out.pads.push((off, off + total)),
            FrameCheck::Valid {
                kind: FrameKind::Record,
                payload_start,
                payload_len,
                ..
            } => {
                let p = &bytes[payload_start..payload_start + payload_len];
                let (w, seq) = (0..2u8)
                    .flat_map(|w| (0..4u8).map(move |s| (w, s)))
                    .find(|&(w, s)| payload(w, s) == p)
                    .unwrap_or_else(|| {
                        panic!("frame at {off} carries a payload nobody wrote: {p:?}")
                    });
                out.records.push((off, w, seq));
            }
            other => panic!("published frame at {off} does not verify: {other:?} ({bytes:?})"),
        }
        off += total;
    }
    out
}

/// What one writer did.
#[derive(Debug, Default)]
struct WriterLog {
    /// (offset, reserved length, seq) of each frame written.
    frames: Vec<(u64, u64, u8)>,
    /// Every `Full` outcome's `seal_at`.
    full: Vec<Option<u64>>,
}

/// Appends up to `n` records like `Log::append_with`, stopping at the first `Full` (where
/// the real writer would rotate).
fn writer(mem: &LoomMem, w: u8, n: u8) -> WriterLog {
    let mut log = WriterLog::default();
    for seq in 0..n {
        let p = payload(w, seq);
        let len = format::frame_len(p.len() as u64);
        match reserve(mem, len) {
            Reservation::At(off) => {
                let end = write_frame(mem, SEGMENT, off, FrameKind::Record, &p);
                assert_eq!(end, off + len);
                log.frames.push((off, len, seq));
            }
            Reservation::Full { seal_at } => {
                if let Some(at) = seal_at {
                    seal(mem, SEGMENT, at);
                }
                log.full.push(seal_at);
                break;
            }
        }
    }
    log
}

/// Two writers and a concurrent reader on a segment with room for `frame_area` bytes.
fn model(frame_area: u64, per_writer: u8, publish_order: Ordering) {
    loom::model(move || {
        let mem = Arc::new(LoomMem::new(frame_area, publish_order));
        let handles: Vec<_> = (0..2u8)
            .map(|w| {
                let mem = mem.clone();
                loom::thread::spawn(move || writer(&mem, w, per_writer))
            })
            .collect();
        let reader = {
            let mem = mem.clone();
            loom::thread::spawn(move || scan(&mem))
        };
        let logs: Vec<WriterLog> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let concurrent = reader.join().unwrap();

        // No overlap: every reservation is inside the segment and disjoint from all others.
        let mut ranges: Vec<(u64, u64)> = logs
            .iter()
            .flat_map(|l| l.frames.iter().map(|&(o, len, _)| (o, o + len)))
            .collect();
        let seals: Vec<u64> = logs
            .iter()
            .flat_map(|l| l.full.iter().flatten().copied())
            .collect();
        ranges.extend(
            seals
                .iter()
                .map(|&s| (s, mem.capacity.min(s + FRAME_HEADER_LEN))),
        );
        ranges.sort_unstable();
        for r in &ranges {
            assert!(
                r.0 >= HEADER_LEN && r.1 <= mem.capacity,
                "range {r:?} outside the segment"
            );
        }
        for pair in ranges.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "overlapping reservations {pair:?}");
        }

        // The records' reservations tile the segment from the header to some offset F.
        // Exactly one writer is told to seal, at F, when the segment ended with free space
        // (a reservation crossed the end); nobody when the records filled it exactly or
        // nothing overflowed.
        let mut frames: Vec<(u64, u64)> = logs
            .iter()
            .flat_map(|l| l.frames.iter().map(|&(o, len, _)| (o, o + len)))
            .collect();
        frames.sort_unstable();
        let mut tiled = HEADER_LEN;
        for &(start, end) in &frames {
            assert_eq!(start, tiled, "gap or overlap before {start}: {frames:?}");
            tiled = end;
        }
        let end = mem.load_reserved();
        match seals[..] {
            [at] => assert!(
                at == tiled && at < mem.capacity && end > mem.capacity,
                "seal at {at}"
            ),
            [] => assert_eq!(
                tiled,
                end.min(mem.capacity),
                "nobody sealed a partly filled segment"
            ),
            _ => panic!("more than one writer was told to seal: {seals:?}"),
        }

        // The concurrent reader saw a prefix of the final contents (checked in `scan`:
        // everything it saw verified). After all writers finished, a scan sees every frame
        // written, in offset order, each writer's in sequence, then the seal.
        let done = scan(&mem);
        let mut written: Vec<(u64, u8, u8)> = logs
            .iter()
            .enumerate()
            .flat_map(|(w, l)| l.frames.iter().map(move |&(o, _, s)| (o, w as u8, s)))
            .collect();
        written.sort_unstable();
        assert_eq!(done.records, written);
        assert_eq!(
            concurrent.records[..],
            done.records[..concurrent.records.len()]
        );
        for w in 0..2u8 {
            let seqs: Vec<u8> = done
                .records
                .iter()
                .filter(|r| r.1 == w)
                .map(|r| r.2)
                .collect();
            assert!(
                seqs.windows(2).all(|p| p[0] + 1 == p[1]),
                "writer {w} out of order: {seqs:?}"
            );
        }
        let seal_fits = seals
            .first()
            .filter(|&&s| s + FRAME_HEADER_LEN <= mem.capacity)
            .copied();
        assert_eq!(done.seal, seal_fits);
    });
}

/// 24-byte and 32-byte frames in 72 bytes: the third reservation crosses the end at 56,
/// where a 16-byte seal fits exactly.
#[test]
fn loom_two_writers_and_a_reader_never_overlap_and_one_writer_seals() {
    model(72, 2, Ordering::Release);
}

/// 64 bytes: writer 1's two 32-byte frames fill it exactly (nobody seals), or a crossing
/// reservation starts at 56, too close to the end for a seal frame, or at 48 where one fits.
#[test]
fn loom_a_crossing_reservation_without_room_for_a_seal_writes_none() {
    model(64, 2, Ordering::Release);
}

/// Room for everything: nobody is told to seal.
#[test]
fn loom_writers_that_fit_are_never_told_to_seal() {
    model(128, 2, Ordering::Release);
}

/// The model is strong enough to catch a publish without release ordering: a reader can
/// then see the first word before the payload words.
#[test]
#[should_panic(expected = "does not verify")]
fn loom_a_relaxed_publish_is_caught_by_the_model() {
    model(128, 1, Ordering::Relaxed);
}
