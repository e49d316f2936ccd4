//! Model test: random sequences of appends, batches, rotations, reopens, crashes with a torn
//! active segment, zeroed ranges, bit flips and retention, applied to a real log (several
//! `Log` handles standing in for writers) and to an in-memory model of what was
//! acknowledged, damaged and trimmed.
//!
//! Checked after the run (and at `Read` actions, with the writers alive):
//! - nothing corrupt is returned: every payload is one that was appended (writer, sequence
//!   number and content verified), at the position its append returned;
//! - every acknowledged record is read back exactly once, each writer's in order, unless it
//!   was hit by injected damage (and then a reported damaged range covers it) or it was in a
//!   segment retention removed;
//! - damage is only reported in segments that were damaged.
//!
//! Damage is injected with every writer closed (media damage found at the next start), since
//! truncating a file some process maps breaks the mmap contract.
//!
//! Format version 2: each writer appends from its own thread with per-writer chunks from its
//! first append (`Log::test_eager_chunks`), so writers fill chunks side by side; `Idle`
//! lets the closer pad idle chunks, `Kill` leaves a writer's open chunks as a killed process
//! would (zero rest, reported as an abandoned reservation and nothing else), and reads with
//! writers alive use a hole timeout well above the closer's period.
//!
//! 64 cases by default; `PROPTEST_CASES=N` for more. Shrunk failures are saved in
//! `segment-log/proptest-regressions/model.txt` and replayed first; commit them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use segment_log::format::{self, HEADER_LEN, OFF_RESERVED_END};
use segment_log::{
    DamageReason, FrameKind, Log, Options, Position, ReaderOptions, RetentionPolicy,
};
use tempfile::TempDir;

const WRITERS: usize = 3;
const SEGMENT: u64 = 16 << 10;

#[derive(Debug, Clone)]
enum Action {
    /// One record of (at least) `len` bytes from a writer.
    Append { writer: usize, len: usize },
    /// Several records in one reservation.
    AppendBatch { writer: usize, lens: Vec<usize> },
    /// Seal the active segment now.
    Rotate { writer: usize },
    /// Close and reopen one writer while the others stay open.
    Reopen { writer: usize },
    /// Close every writer and reopen them (the first open is alone: recovery runs).
    ReopenAll,
    /// Every writer dies; the newest segment is torn at a point `at`/65536 of its written
    /// part; writers restart.
    CrashTruncate { at: u16 },
    /// Zero `len` bytes of a segment from `at`/65536 of its written part.
    ZeroRange { segment: u8, at: u16, len: u16 },
    /// Flip bits (`at`/65536 of the written part, bit number) in one segment.
    FlipBits { segment: u8, bits: Vec<(u16, u8)> },
    /// Trim oldest segments down to this many bytes.
    Retention { max_bytes: u32 },
    /// Check the log now, with writers alive.
    Read,
    /// Nobody appends for a while: the closer pads idle chunks.
    Idle,
    /// A writer dies with its chunks open (no pads) and restarts.
    Kill { writer: usize },
}

fn action() -> impl Strategy<Value = Action> {
    let writer = 0..WRITERS;
    prop_oneof![
        12 => (writer.clone(), 0usize..400).prop_map(|(writer, len)| Action::Append { writer, len }),
        3 => (writer.clone(), prop::collection::vec(0usize..300, 1..6))
            .prop_map(|(writer, lens)| Action::AppendBatch { writer, lens }),
        2 => writer.clone().prop_map(|writer| Action::Rotate { writer }),
        2 => writer.prop_map(|writer| Action::Reopen { writer }),
        1 => Just(Action::ReopenAll),
        1 => any::<u16>().prop_map(|at| Action::CrashTruncate { at }),
        1 => (any::<u8>(), any::<u16>(), 1u16..600)
            .prop_map(|(segment, at, len)| Action::ZeroRange { segment, at, len }),
        1 => (any::<u8>(), prop::collection::vec((any::<u16>(), 0u8..8), 1..4))
            .prop_map(|(segment, bits)| Action::FlipBits { segment, bits }),
        1 => (0u32..(6 * SEGMENT as u32)).prop_map(|max_bytes| Action::Retention { max_bytes }),
        1 => Just(Action::Read),
        1 => Just(Action::Idle),
        1 => (0..WRITERS).prop_map(|writer| Action::Kill { writer }),
    ]
}

/// An acknowledged record.
#[derive(Debug, Clone)]
struct Rec {
    writer: u32,
    seq: u64,
    len: usize,
    pos: Position,
}

#[derive(Default)]
struct Model {
    recs: Vec<Rec>,
    next_seq: [u64; WRITERS],
    /// Byte ranges damaged, per segment (a truncation is `cut..u64::MAX`).
    damaged: BTreeMap<u64, Vec<Range<u64>>>,
    /// Segments retention removed.
    removed: BTreeSet<u64>,
    /// Segments a killed writer may have left an open chunk in (abandoned reservations).
    killed: BTreeSet<u64>,
}

impl Model {
    fn hit(&self, r: &Rec) -> bool {
        let frame = r.pos.offset..r.pos.offset + format::frame_len(r.len as u64);
        self.damaged.get(&r.pos.segment).is_some_and(|ranges| {
            ranges
                .iter()
                .any(|d| d.start < HEADER_LEN || (d.start < frame.end && frame.start < d.end))
        })
    }
}

fn preamble(w: usize) -> Vec<u8> {
    format!("model writer {w}").into_bytes()
}

type Job = Box<dyn FnOnce() + Send>;

/// A writer's own thread (its chunks are per thread): runs jobs one at a time.
struct WriterThread {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WriterThread {
    fn new() -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::spawn(move || {
            for job in rx {
                job();
            }
        });
        WriterThread {
            jobs: Some(tx),
            thread: Some(thread),
        }
    }

    /// Runs `f` on the writer's thread and waits for its result.
    fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.as_ref().unwrap().send(job).unwrap();
        rx.recv().unwrap()
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Harness {
    dir: TempDir,
    opts: Options,
    logs: Vec<Option<Arc<Log>>>,
    threads: Vec<WriterThread>,
    model: Model,
}

impl Harness {
    fn new() -> Harness {
        let opts = Options {
            segment_size: SEGMENT,
            max_record_size: 1024,
            prepare_ahead: false,
            ..Options::default()
        };
        let mut h = Harness {
            dir: tempfile::tempdir().unwrap(),
            opts,
            logs: Vec::new(),
            threads: (0..WRITERS).map(|_| WriterThread::new()).collect(),
            model: Model::default(),
        };
        for w in 0..WRITERS {
            let log = h.open(w);
            h.logs.push(Some(log));
        }
        h
    }

    fn open(&self, w: usize) -> Arc<Log> {
        let log = Log::open(self.dir.path(), self.opts.clone()).unwrap();
        log.set_preamble(Some(preamble(w))).unwrap();
        log.test_eager_chunks();
        Arc::new(log)
    }

    fn log(&self, w: usize) -> &Log {
        self.logs[w].as_ref().unwrap()
    }

    /// Appends `payloads` as one batch from writer `w`'s own thread.
    fn append_on_thread(&self, w: usize, payloads: Vec<Vec<u8>>) -> Result<Vec<Position>, String> {
        let log = self.logs[w].clone().unwrap();
        self.threads[w].run(move || {
            let r = if payloads.len() == 1 {
                log.append(&payloads[0]).map(|p| vec![p])
            } else {
                log.append_batch(&payloads)
            };
            r.map_err(|e| e.to_string())
        })
    }

    fn close_all(&mut self) {
        for l in &mut self.logs {
            *l = None;
        }
    }

    fn open_all(&mut self) {
        for w in 0..WRITERS {
            self.logs[w] = Some(self.open(w));
        }
    }

    fn live(&self) -> Vec<u64> {
        segment_log::fs::live_segments(&self.dir.path().join("segments")).unwrap()
    }

    /// The segment `pick` selects and the span of it worth damaging (header, frames and a
    /// little of the free space after them).
    fn target(&self, pick: Option<u8>) -> Option<(u64, std::path::PathBuf, u64)> {
        let live = self.live();
        let n = match pick {
            Some(p) => *live.get(p as usize % live.len().max(1))?,
            None => *live.last()?,
        };
        let path = seg_file(self.dir.path(), n);
        let len = std::fs::metadata(&path).ok()?.len();
        let mut b = [0u8; 8];
        let reserved = match std::fs::File::open(&path)
            .ok()?
            .read_exact_at(&mut b, OFF_RESERVED_END as u64)
        {
            Ok(()) => u64::from_le_bytes(b).min(SEGMENT),
            Err(_) => HEADER_LEN,
        };
        Some((n, path, len.min(reserved.max(HEADER_LEN) + 64)))
    }

    fn damage(&mut self, segment: u64, range: Range<u64>) {
        self.model.damaged.entry(segment).or_default().push(range);
    }

    fn acked(&mut self, writer: usize, lens: &[usize], positions: &[Position]) {
        assert_eq!(lens.len(), positions.len());
        for (&len, &pos) in lens.iter().zip(positions) {
            let seq = self.model.next_seq[writer];
            self.model.next_seq[writer] += 1;
            self.model.recs.push(Rec {
                writer: writer as u32,
                seq,
                len: len.max(MIN_PAYLOAD),
                pos,
            });
        }
    }

    fn apply(&mut self, a: &Action) -> Result<(), TestCaseError> {
        match a {
            Action::Append { writer, len } => {
                let seq = self.model.next_seq[*writer];
                let pos = self.append_on_thread(*writer, vec![payload(*writer as u32, seq, *len)]);
                let pos = pos.map_err(|e| TestCaseError::fail(format!("append: {e}")))?;
                self.acked(*writer, &[*len], &pos);
            }
            Action::AppendBatch { writer, lens } => {
                let first = self.model.next_seq[*writer];
                let batch: Vec<_> = lens
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| payload(*writer as u32, first + i as u64, l))
                    .collect();
                let positions = self.append_on_thread(*writer, batch);
                let positions =
                    positions.map_err(|e| TestCaseError::fail(format!("append_batch: {e}")))?;
                prop_assert!(
                    positions.iter().all(|p| p.segment == positions[0].segment),
                    "a batch spans segments: {positions:?}"
                );
                self.acked(*writer, lens, &positions);
            }
            Action::Rotate { writer } => {
                self.log(*writer)
                    .rotate()
                    .map_err(|e| TestCaseError::fail(format!("rotate: {e}")))?;
            }
            Action::Reopen { writer } => {
                self.logs[*writer] = None;
                self.logs[*writer] = Some(self.open(*writer));
            }
            Action::ReopenAll => {
                self.close_all();
                self.open_all();
            }
            Action::CrashTruncate { at } => {
                self.close_all();
                if let Some((n, path, span)) = self.target(None) {
                    let cut = span * u64::from(*at) / 65536;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .unwrap()
                        .set_len(cut)
                        .unwrap();
                    self.damage(n, cut..u64::MAX);
                }
                self.open_all();
            }
            Action::ZeroRange { segment, at, len } => {
                self.close_all();
                if let Some((n, path, span)) = self.target(Some(*segment)) {
                    let start = span * u64::from(*at) / 65536;
                    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                    let file_len = f.metadata().unwrap().len();
                    let end = (start + u64::from(*len)).min(file_len);
                    if start < end {
                        f.write_all_at(&vec![0u8; (end - start) as usize], start)
                            .unwrap();
                        self.damage(n, start..end);
                    }
                }
                self.open_all();
            }
            Action::FlipBits { segment, bits } => {
                self.close_all();
                if let Some((n, path, span)) = self.target(Some(*segment)) {
                    let f = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&path)
                        .unwrap();
                    for &(at, bit) in bits {
                        let at = span * u64::from(at) / 65536;
                        let mut b = [0u8; 1];
                        if f.read_exact_at(&mut b, at).is_ok() {
                            f.write_all_at(&[b[0] ^ (1 << bit)], at).unwrap();
                            self.damage(n, at..at + 1);
                        }
                    }
                }
                self.open_all();
            }
            Action::Retention { max_bytes } => {
                let newest = self.live().last().copied();
                let policy = RetentionPolicy {
                    max_bytes: Some(u64::from(*max_bytes)),
                    max_age: None,
                };
                let r = self.log(0).enforce_retention(&policy, None);
                let r = r.map_err(|e| TestCaseError::fail(format!("retention: {e}")))?;
                prop_assert!(
                    !r.removed.contains(&newest.unwrap()),
                    "retention removed the newest segment"
                );
                prop_assert!(
                    r.bytes_after <= u64::from(*max_bytes) || self.live().len() == 1,
                    "over budget after retention: {r:?}"
                );
                self.model.removed.extend(r.removed);
            }
            Action::Read => self.check(quick())?,
            Action::Idle => std::thread::sleep(Duration::from_millis(30)),
            Action::Kill { writer } => {
                let log = self.logs[*writer].take().unwrap();
                log.test_abandon_chunks();
                self.model.killed.extend(self.live());
                drop(log);
                self.logs[*writer] = Some(self.open(*writer));
            }
        }
        Ok(())
    }

    fn check(&self, opts: ReaderOptions) -> Result<(), TestCaseError> {
        let (frames, damage) = read_all_with(self.dir.path(), opts);
        let m = &self.model;
        let by_id: BTreeMap<(u32, u64), &Rec> =
            m.recs.iter().map(|r| ((r.writer, r.seq), r)).collect();
        let mut seen = BTreeSet::new();
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        for w in frames.windows(2) {
            prop_assert!(w[0].position < w[1].position, "positions not increasing");
        }
        for f in &frames {
            if f.kind == FrameKind::Preamble {
                prop_assert!(
                    (0..WRITERS).any(|w| preamble(w) == f.payload),
                    "unknown preamble at {}",
                    f.position
                );
                continue;
            }
            let Some(id) = decode(&f.payload) else {
                return Err(TestCaseError::fail(format!(
                    "corrupt record returned at {}",
                    f.position
                )));
            };
            let Some(rec) = by_id.get(&id) else {
                return Err(TestCaseError::fail(format!(
                    "record {id:?} at {} was never acknowledged",
                    f.position
                )));
            };
            prop_assert_eq!(
                rec.pos,
                f.position,
                "record {:?} returned at the wrong position",
                id
            );
            prop_assert!(seen.insert(id), "record {:?} returned twice", id);
            if let Some(&prev) = last.get(&id.0) {
                prop_assert!(
                    prev < id.1,
                    "writer {} out of order: {} after {}",
                    id.0,
                    id.1,
                    prev
                );
            }
            last.insert(id.0, id.1);
        }
        for r in &m.recs {
            if seen.contains(&(r.writer, r.seq)) || m.removed.contains(&r.pos.segment) {
                continue;
            }
            prop_assert!(
                m.hit(r),
                "record {}:{} at {} lost though nothing damaged it; damage {:?}",
                r.writer,
                r.seq,
                r.pos,
                damage
            );
            prop_assert!(
                damage.iter().any(|d| covers(d, r.pos)),
                "record {}:{} at {} lost without a damage report: {:?}",
                r.writer,
                r.seq,
                r.pos,
                damage
            );
        }
        for d in &damage {
            let explained = match d.reason {
                DamageReason::MissingSegments { count } => {
                    (d.segment..d.segment + count).all(|s| m.removed.contains(&s))
                }
                DamageReason::AbandonedReservation if m.killed.contains(&d.segment) => true,
                _ => m.damaged.contains_key(&d.segment),
            };
            prop_assert!(explained, "damage reported where none was made: {d}");
        }
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // Relative to the package root (cargo's working directory for tests).
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/model.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_log_matches_the_model_under_appends_rotations_reopens_damage_and_retention(
        actions in prop::collection::vec(action(), 1..80)
    ) {
        let mut h = Harness::new();
        for a in &actions {
            h.apply(a)?;
        }
        h.check(quick())?;
        h.close_all();
        h.check(quick())?;
    }
}
