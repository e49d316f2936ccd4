//! Loom model of per-writer chunks (format version 2, `crate::chunk`): the owner fills its
//! chunk with `take` while the closer races it with `close` (an idle close), a second
//! writer reserves exactly as in version 1, and an ideal reader scans concurrently.
//!
//! Checked in every interleaving: exactly one of owner and closer closes the chunk; the
//! records, the pad and the other writer's frames tile the reserved area with no gap and no
//! overlap (so no record is ever written where a pad was, nor a pad over a record); every
//! record the owner committed is found by a scan after the fact, in the owner's order; a
//! concurrent scan saw a prefix of that; a chunk never ends in an 8-byte remainder.

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;

use super::{payload, scan, LoomMem, SEGMENT};
use crate::chunk::{close, take, Cursor, Take, CLOSED};
use crate::format::{self, FrameKind, HEADER_LEN};
use crate::reserve::{reserve, write_frame, FrameMem, Reservation};

impl Cursor for AtomicU64 {
    fn current(&self) -> u64 {
        self.load(Ordering::Acquire)
    }
    fn advance(&self, from: u64, to: u64) -> bool {
        self.compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// What the owner did: its records (offset, len, seq), and the range it padded if it closed.
#[derive(Debug, Default)]
struct OwnerLog {
    frames: Vec<(u64, u64, u8)>,
    closed: Option<(u64, u64)>,
}

/// The owner: reserves a chunk of `chunk` bytes, places `n` records in it with `take`;
/// a record that does not fit closes the chunk (owner pads), one after the closer closed it
/// is reserved exactly (as `chunk::Chunks::reserve` does).
fn owner(mem: &LoomMem, cursor: &AtomicU64, end_at: &AtomicU64, chunk: u64, n: u8) -> OwnerLog {
    let mut log = OwnerLog::default();
    let Reservation::At(start) = reserve(mem, chunk) else {
        panic!("the chunk fits the model's segment");
    };
    let end = start + chunk;
    // What the real owner puts in its slot for the closer, before the cursor.
    end_at.store(end, Ordering::Relaxed);
    cursor.store(start, Ordering::Release);
    let mut open = true;
    for seq in 0..n {
        let p = payload(0, seq);
        let len = format::frame_len(p.len() as u64);
        let at = if open {
            match take(cursor, end, len) {
                Take::At(o) => Some(o),
                Take::NoRoom(c) => {
                    if close(cursor, c, end, mem, SEGMENT) {
                        log.closed = Some((c, end));
                    }
                    open = false;
                    None
                }
                Take::Closed => {
                    open = false;
                    None
                }
            }
        } else {
            None
        };
        let at = at.unwrap_or_else(|| match reserve(mem, len) {
            Reservation::At(o) => o,
            full => panic!("the model's segment has room: {full:?}"),
        });
        assert_eq!(
            write_frame(mem, SEGMENT, at, FrameKind::Record, &p),
            at + len
        );
        log.frames.push((at, len, seq));
    }
    if open {
        // Done with the chunk (the thread exits): the owner closes what is left.
        let c = cursor.current();
        if close(cursor, c, end, mem, SEGMENT) {
            log.closed = Some((c, end));
        }
    }
    log
}

/// The closer's idle close: one look at the cursor, then the compare-and-swap.
fn closer(mem: &LoomMem, cursor: &AtomicU64, end_at: &AtomicU64) -> Option<(u64, u64)> {
    let c = cursor.current();
    if c == CLOSED || c == 0 {
        return None; // no chunk open (yet): nothing to close
    }
    let end = end_at.load(Ordering::Relaxed);
    close(cursor, c, end, mem, SEGMENT).then_some((c, end))
}

/// A version-1 style writer: exact reservations.
fn exact_writer(mem: &LoomMem, n: u8) -> Vec<(u64, u64, u8)> {
    (0..n)
        .map(|seq| {
            let p = payload(1, seq);
            let len = format::frame_len(p.len() as u64);
            let Reservation::At(o) = reserve(mem, len) else {
                panic!("room");
            };
            write_frame(mem, SEGMENT, o, FrameKind::Record, &p);
            (o, len, seq)
        })
        .collect()
}

fn model(chunk: u64, records: u8, with_exact: bool, with_reader: bool) {
    loom::model(move || {
        let mem = Arc::new(LoomMem::new(384, Ordering::Release));
        // 0: not opened yet (the real slot's `Open` tells the closer; here the chunk is the
        // first reservation, so it starts at the header and ends `chunk` later).
        let cursor = Arc::new(AtomicU64::new(0));
        let end_at = Arc::new(AtomicU64::new(0));
        let o = {
            let (mem, cursor, end_at) = (mem.clone(), cursor.clone(), end_at.clone());
            loom::thread::spawn(move || owner(&mem, &cursor, &end_at, chunk, records))
        };
        let c = {
            let (mem, cursor, end_at) = (mem.clone(), cursor.clone(), end_at.clone());
            loom::thread::spawn(move || closer(&mem, &cursor, &end_at))
        };
        let x = with_exact.then(|| {
            let mem = mem.clone();
            loom::thread::spawn(move || exact_writer(&mem, 1))
        });
        let reader = with_reader.then(|| {
            let mem = mem.clone();
            loom::thread::spawn(move || scan(&mem))
        });
        let owner_log = o.join().unwrap();
        let closer_closed = c.join().unwrap();
        let exact = x.map(|x| x.join().unwrap()).unwrap_or_default();
        let concurrent = reader.map(|r| r.join().unwrap());

        // Exactly one closes the chunk.
        let closes: Vec<(u64, u64)> = owner_log
            .closed
            .iter()
            .chain(&closer_closed)
            .copied()
            .collect();
        assert_eq!(
            closes.len(),
            1,
            "owner {owner_log:?}, closer {closer_closed:?}"
        );
        let (pad_at, pad_end) = closes[0];
        assert_ne!(pad_end - pad_at, 8, "a chunk left 8 bytes");

        // Records, pad and exact frames tile the reserved area.
        let mut ranges: Vec<(u64, u64)> = owner_log
            .frames
            .iter()
            .chain(&exact)
            .map(|&(o, len, _)| (o, o + len))
            .collect();
        if pad_end > pad_at {
            ranges.push((pad_at, pad_end));
        }
        ranges.sort_unstable();
        let mut tiled = HEADER_LEN;
        for &(s, e) in &ranges {
            assert_eq!(s, tiled, "gap or overlap at {s}: {ranges:?}");
            tiled = e;
        }
        assert_eq!(
            tiled,
            mem.load_reserved(),
            "reserved area not tiled: {ranges:?}"
        );

        // Every committed record is found, the owner's in order; the pad too.
        let done = scan(&mem);
        let mut written: Vec<(u64, u8, u8)> = owner_log
            .frames
            .iter()
            .map(|&(o, _, s)| (o, 0, s))
            .chain(exact.iter().map(|&(o, _, s)| (o, 1, s)))
            .collect();
        written.sort_unstable();
        assert_eq!(done.records, written);
        let seqs: Vec<u8> = done
            .records
            .iter()
            .filter(|r| r.1 == 0)
            .map(|r| r.2)
            .collect();
        assert!(
            seqs.windows(2).all(|p| p[0] + 1 == p[1]),
            "owner out of order: {seqs:?}"
        );
        let pads: Vec<(u64, u64)> = if pad_end - pad_at >= 16 {
            vec![(pad_at, pad_end)]
        } else {
            Vec::new()
        };
        assert_eq!(done.pads, pads);
        if let Some(seen) = concurrent {
            assert_eq!(seen.records[..], done.records[..seen.records.len()]);
        }
    });
}

/// A 64-byte chunk and 24-byte records: two fit (48), the third would leave none and not
/// fill it: the owner pads 16 bytes, unless the closer closed the chunk first.
#[test]
fn loom_chunk_owner_and_closer_close_once_and_tile() {
    model(64, 3, false, true);
}

/// A 56-byte chunk: after two 24-byte records 8 bytes would remain, so the second record
/// does not go in (pad of 32 bytes at 280), whoever closes.
#[test]
fn loom_chunk_never_leaves_eight_bytes() {
    model(56, 2, false, false);
}

/// An exact-reserving writer racing the chunk's reservation: its frame lands before or after
/// the chunk, never inside.
#[test]
fn loom_chunk_and_an_exact_writer_tile() {
    model(48, 2, true, false);
}
