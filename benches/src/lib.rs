//! Shared helpers for the seglog benches: payloads (synthetic and real loghub lines), the two
//! baselines (a raw copy loop into a memory mapping, and a `BufWriter<File>`), page-cache
//! control for cold-cache runs, directory accounting and percentiles.
//!
//! Everything here runs *outside* the timed regions except the `append` methods of the
//! baselines, which are the baselines.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use memmap2::{Advice, MmapMut, MmapOptions};

/// Sync marker + length word, the same layout seglog uses (marker in the low 32 bits).
const MARKER: u32 = u32::from_le_bytes([0xFE, b'S', b'G', 0xFF]);

/// Bytes a baseline frame occupies: 16-byte header (marker+length, crc32c+pad), payload, padding
/// to 8. Identical to seglog's `format::frame_len`, so both write the same number of bytes.
#[inline]
pub const fn frame_len(payload_len: usize) -> usize {
    16 + ((payload_len + 7) & !7)
}

/// Base directory for bench temp dirs: `$SEGLOG_BENCH_DIR` or the system temp dir. It must be
/// a real disk file system (not tmpfs) for the numbers to mean anything.
pub fn bench_base_dir() -> PathBuf {
    std::env::var_os("SEGLOG_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// A fresh temp dir under [`bench_base_dir`].
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    let base = bench_base_dir();
    std::fs::create_dir_all(&base).expect("create bench base dir");
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .expect("create temp dir")
}

/// A log-like ASCII payload of exactly `len` bytes (synthetic; used where realism does not
/// change the cost, i.e. for fixed-size copies).
pub fn synthetic_payload(len: usize) -> Vec<u8> {
    let line = b"2024-05-01T12:00:00.123Z probe[1234]: cpu=17% mem=412MiB net_rx=1234567 net_tx=7654321 disk_io=42 temp=55C ";
    line.iter().copied().cycle().take(len).collect()
}

/// Where the loghub samples are: `$SEGLOG_LOGHUB`, else `<repo>/../shared/data/loghub`.
pub fn loghub_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("SEGLOG_LOGHUB") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/loghub")
}

/// All non-empty lines of `loghub/*.log` (without the newline), read at run time. `None` (and a
/// message on stderr) when the directory is absent or empty, so callers can skip.
pub fn loghub_lines() -> Option<Vec<Vec<u8>>> {
    let dir = loghub_dir();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        eprintln!(
            "note: {} not found: skipping the loghub (real payload) benches",
            dir.display()
        );
        return None;
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    let mut lines = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read(&f) else {
            continue;
        };
        lines.extend(
            text.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    if lines.is_empty() {
        eprintln!(
            "note: no lines in {}/*.log: skipping the loghub (real payload) benches",
            dir.display()
        );
        return None;
    }
    Some(lines)
}

/// Mean length of a set of payloads.
pub fn mean_len(payloads: &[Vec<u8>]) -> f64 {
    payloads.iter().map(Vec::len).sum::<usize>() as f64 / payloads.len().max(1) as f64
}

/// Writes one baseline frame (marker+length, crc32c of the payload, payload, zero padding) at
/// the start of `dst`, which must be at least `frame_len(payload.len())` long.
#[inline]
pub fn encode_frame_into(dst: &mut [u8], payload: &[u8]) {
    let total = frame_len(payload.len());
    let (head, rest) = dst[..total].split_at_mut(16);
    let word0 = u64::from(MARKER) | ((payload.len() as u64) << 32);
    head[..8].copy_from_slice(&word0.to_le_bytes());
    head[8..12].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    head[12..16].copy_from_slice(&[0; 4]);
    let (body, pad) = rest.split_at_mut(payload.len());
    body.copy_from_slice(payload);
    pad.fill(0);
}

/// Creates a file of `len` bytes, allocated on disk (`fallocate(2)`, as seglog does), and
/// maps it read-write. Nothing is touched: the first write to each page faults.
pub fn preallocated_mapping(path: &Path, len: u64) -> MmapMut {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .expect("create baseline segment");
    let flen = libc::off_t::try_from(len).expect("baseline segment length");
    // SAFETY: the descriptor is valid for the call (borrowed from `file`, alive until the end
    // of this function); fallocate takes no pointers.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, flen) };
    assert_eq!(
        rc,
        0,
        "allocate baseline segment: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the file was just created by this process in a private temp dir and allocated to
    // `len` bytes; nothing truncates it while it is mapped, so no access below `len` can fault
    // with SIGBUS. The mapping is only accessed through the `MmapMut` slice API.
    unsafe { MmapOptions::new().len(len as usize).map_mut(&file) }.expect("map baseline segment")
}

/// The practical limit: a loop copying length + crc32c + payload into mappings of
/// preallocated files, rotating to the next file when one is full. No reservation protocol, no
/// atomics, no multi-writer safety: one thread, plain stores.
pub struct RawMmapSink {
    maps: Vec<MmapMut>,
    cur: usize,
    off: usize,
}

impl RawMmapSink {
    /// Prepares enough `seg_size` files in `dir` to take `records` frames of `max_payload`
    /// bytes. With `prefault`, every page is faulted in first (`MADV_POPULATE_WRITE`), which
    /// gives the "already-faulted pages" figure; without, the mappings are fresh.
    pub fn prepare(
        dir: &Path,
        records: u64,
        max_payload: usize,
        seg_size: u64,
        prefault: bool,
    ) -> Self {
        let per_seg = (seg_size as usize) / frame_len(max_payload);
        let segs = (records as usize).div_ceil(per_seg.max(1)).max(1);
        let maps = (0..segs)
            .map(|i| {
                let m = preallocated_mapping(&dir.join(format!("raw-{i:06}.seg")), seg_size);
                if prefault {
                    m.advise(Advice::PopulateWrite)
                        .expect("MADV_POPULATE_WRITE");
                }
                m
            })
            .collect();
        RawMmapSink {
            maps,
            cur: 0,
            off: 0,
        }
    }

    /// Appends one frame.
    #[inline]
    pub fn append(&mut self, payload: &[u8]) {
        let need = frame_len(payload.len());
        if self.off + need > self.maps[self.cur].len() {
            self.cur += 1;
            self.off = 0;
        }
        let off = self.off;
        encode_frame_into(&mut self.maps[self.cur][off..], payload);
        self.off = off + need;
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.maps
            .iter()
            .take(self.cur)
            .map(|m| m.len() as u64)
            .sum::<u64>()
            + self.off as u64
    }
}

/// The naive file writer: the same frames through a `BufWriter<File>` (8 KiB buffer, one
/// `write(2)` per buffer). Neither crash- nor multi-process-safe.
pub struct BufWriterSink {
    out: BufWriter<File>,
    scratch: Vec<u8>,
}

impl BufWriterSink {
    /// Creates `path` (must not exist).
    pub fn create(path: &Path) -> Self {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .expect("create bufwriter file");
        BufWriterSink {
            out: BufWriter::new(file),
            scratch: Vec::with_capacity(1 << 16),
        }
    }

    /// Appends one frame.
    #[inline]
    pub fn append(&mut self, payload: &[u8]) {
        let total = frame_len(payload.len());
        if self.scratch.len() < total {
            self.scratch.resize(total, 0);
        }
        encode_frame_into(&mut self.scratch, payload);
        self.out.write_all(&self.scratch[..total]).expect("write");
    }

    /// Flushes the buffer to the kernel (no fsync).
    pub fn finish(mut self) {
        self.out.flush().expect("flush");
    }
}

/// `fdatasync` then `posix_fadvise(POSIX_FADV_DONTNEED)` on every regular file under `dir`
/// (recursively), so the next read comes from the disk, not the page cache. Returns the
/// number of files dropped.
pub fn drop_page_cache(dir: &Path) -> usize {
    let mut n = 0;
    for path in files_under(dir) {
        let Ok(f) = File::open(&path) else { continue };
        let _ = f.sync_data();
        // SAFETY: plain syscall on a file descriptor we own for the duration of the call; it
        // only advises the kernel and touches no memory of ours.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc == 0 {
            n += 1;
        }
    }
    n
}

/// Fraction (0..=1) of the pages of the files under `dir` that are in the page cache
/// (`mincore` on a read-only mapping), to check that a cold-cache run really is cold.
pub fn cached_fraction(dir: &Path) -> f64 {
    let (resident, total) = files_under(dir)
        .iter()
        .map(|p| resident_pages(p))
        .fold((0, 0), |(r, t), (a, b)| (r + a, t + b));
    if total == 0 {
        0.0
    } else {
        resident as f64 / total as f64
    }
}

/// (resident pages, total pages) of one file, from `mincore`.
pub fn resident_pages(path: &Path) -> (usize, usize) {
    let page = 4096usize;
    let Ok(f) = File::open(path) else {
        return (0, 0);
    };
    let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
    if len == 0 {
        return (0, 0);
    }
    // SAFETY: read-only mapping of a file nobody truncates during the call; we never read
    // through it, only ask `mincore` which of its pages are resident.
    let Ok(map) = (unsafe { memmap2::Mmap::map(&f) }) else {
        return (0, 0);
    };
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: `map` is a live mapping of `len` bytes starting at a page-aligned address and
    // `vec` has one byte per page of it, as mincore requires.
    let rc = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if rc != 0 {
        return (0, 0);
    }
    (vec.iter().filter(|&&b| b & 1 == 1).count(), pages)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Page faults taken so far by the calling thread: (minor, major), from
/// `getrusage(RUSAGE_THREAD)`. Used to check that appends run on pre-faulted pages.
pub fn thread_faults() -> (u64, u64) {
    // SAFETY: `rusage` is plain old data; an all-zero value is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage` for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    if rc != 0 {
        return (0, 0);
    }
    (ru.ru_minflt as u64, ru.ru_majflt as u64)
}

/// CPU time consumed so far by the calling thread (`CLOCK_THREAD_CPUTIME_ID`) and by the
/// whole process, all threads (`CLOCK_PROCESS_CPUTIME_ID`). On a shared, loaded machine wall
/// time includes time spent descheduled; CPU time does not, and process time also counts
/// the background threads (seglog's preparer) that do work on the appender's behalf.
pub fn cpu_times() -> (Duration, Duration) {
    fn clock(id: libc::clockid_t) -> Duration {
        // SAFETY: `timespec` is plain old data; an all-zero value is valid.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: `ts` is a valid, writable `timespec` for the duration of the call.
        if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
            return Duration::ZERO;
        }
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
    (
        clock(libc::CLOCK_THREAD_CPUTIME_ID),
        clock(libc::CLOCK_PROCESS_CPUTIME_ID),
    )
}

/// Disk usage of the files under `dir`: (apparent bytes, allocated bytes = st_blocks * 512).
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    files_under(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .fold((0, 0), |(a, b), m| (a + m.len(), b + m.blocks() * 512))
}

/// Seglog's segment files under a log dir: (number, path, is_prepared).
pub fn seglog_segments(log_dir: &Path) -> Vec<(u64, PathBuf, bool)> {
    let seg_dir = log_dir.join(segment_log::fs::SEGMENTS_DIR);
    let Ok(rd) = std::fs::read_dir(&seg_dir) else {
        return Vec::new();
    };
    let mut v: Vec<_> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let (n, ext) = segment_log::fs::parse_segment_file_name(name.to_str()?)?;
            Some((n, e.path(), ext == segment_log::fs::PREP_EXT))
        })
        .collect();
    v.sort();
    v
}

/// What a retention policy would do, done by the bench between samples so long runs do not
/// fill the disk or the dirty page cache: unlinks live segments numbered below `keep_from`.
/// Unlinking a mapped file is safe (no truncation); its pages are freed without writeback.
pub fn remove_segments_below(log_dir: &Path, keep_from: u64) -> usize {
    let mut n = 0;
    for (num, path, prepared) in seglog_segments(log_dir) {
        if !prepared && num < keep_from && std::fs::remove_file(&path).is_ok() {
            n += 1;
        }
    }
    n
}

/// Summary of a latency sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// 99.99th percentile.
    pub p9999: Duration,
    /// Maximum.
    pub max: Duration,
    /// Mean.
    pub mean: Duration,
}

/// Percentiles of nanosecond samples (sorts `ns` in place; nearest-rank method).
pub fn percentiles(ns: &mut [u64]) -> Percentiles {
    if ns.is_empty() {
        return Percentiles::default();
    }
    ns.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * ns.len() as f64).ceil() as usize).clamp(1, ns.len());
        Duration::from_nanos(ns[rank - 1])
    };
    let sum: u128 = ns.iter().map(|&v| u128::from(v)).sum();
    Percentiles {
        n: ns.len(),
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        p9999: at(0.9999),
        max: Duration::from_nanos(ns[ns.len() - 1]),
        mean: Duration::from_nanos((sum / ns.len() as u128) as u64),
    }
}

/// Median of a list of floats (sorts in place).
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The `target/` directory benches write their extra reports to (`$CARGO_TARGET_DIR` if set).
pub fn report_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("seglog-bench");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout_matches_seglog() {
        for len in [0usize, 1, 7, 8, 100, 4096] {
            assert_eq!(
                frame_len(len) as u64,
                segment_log::format::frame_len(len as u64)
            );
        }
        let p = synthetic_payload(100);
        let mut buf = vec![0xAAu8; frame_len(100)];
        encode_frame_into(&mut buf, &p);
        assert_eq!(&buf[16..116], &p[..]);
        assert!(buf[116..].iter().all(|&b| b == 0));
    }

    #[test]
    fn percentiles_nearest_rank() {
        let mut v: Vec<u64> = (1..=1000).collect();
        let p = percentiles(&mut v);
        assert_eq!(p.p50, Duration::from_nanos(500));
        assert_eq!(p.p99, Duration::from_nanos(990));
        assert_eq!(p.p999, Duration::from_nanos(999));
        assert_eq!(p.max, Duration::from_nanos(1000));
    }
}
