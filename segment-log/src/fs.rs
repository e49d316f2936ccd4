//! Directory layout, permissions, segment naming and listing, the log id, and clocks.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::perms::Sharing;

/// Sub-directory holding the segment files.
pub const SEGMENTS_DIR: &str = "segments";
/// File holding the private log id (hex), mode 0600 (0660 in a shared log).
pub const LOG_ID_FILE: &str = "log-id";
/// Extension of a live segment.
pub const SEG_EXT: &str = "seg";
/// Extension of a segment prepared ahead of need (allocated, header written, not yet live).
pub const PREP_EXT: &str = "prep";
/// Serialises rotation and retention across processes (an flock, `File::lock`).
pub(crate) const ROTATE_LOCK: &str = "rotate.lock";
/// Held exclusively while a process opens the log.
pub(crate) const OPEN_LOCK: &str = "open.lock";
/// Held shared by every open writer; exclusive success means no other writer is alive.
pub(crate) const WRITERS_LOCK: &str = "writers.lock";

/// File name of segment `n`: 20 digits so names sort in numeric order for any u64.
pub fn segment_file_name(n: u64, ext: &str) -> String {
    format!("{n:020}.{ext}")
}

/// Parses a segment file name back to its number and extension.
pub fn parse_segment_file_name(name: &str) -> Option<(u64, &str)> {
    let (num, ext) = name.split_once('.')?;
    if num.len() != 20 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((num.parse().ok()?, ext))
}

/// Creates `dir` if needed and forces the policy's mode (0700, or 2770 in a shared log)
/// whatever the umask.
pub(crate) fn ensure_dir(sharing: Sharing, dir: &Path) -> Result<()> {
    sharing
        .create_dir_all(dir)
        .map_err(|e| Error::io("create directory", dir, e))
}

/// Opens (creating with the policy's mode) a lock file.
pub(crate) fn open_lock_file(sharing: Sharing, path: &Path) -> Result<File> {
    sharing
        .open_or_create(OpenOptions::new().read(true).write(true), path)
        .map_err(|e| Error::io("open lock file", path, e))
}

/// One entry of a segment directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// Segment number.
    pub number: u64,
    /// Full path.
    pub path: PathBuf,
    /// Bytes allocated on disk (st_blocks * 512).
    pub disk_bytes: u64,
    /// Whether this is a prepared (not yet live) segment.
    pub prepared: bool,
}

/// Lists live and prepared segments, sorted by number (live before prepared for equal numbers).
pub fn list_segments(seg_dir: &Path) -> Result<Vec<SegmentFile>> {
    use std::os::unix::fs::MetadataExt;
    let rd = fs::read_dir(seg_dir).map_err(|e| Error::io("list", seg_dir, e))?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("list", seg_dir, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((number, ext)) = parse_segment_file_name(name) else {
            continue;
        };
        let prepared = match ext {
            SEG_EXT => false,
            PREP_EXT => true,
            _ => continue,
        };
        // A file deleted by retention between readdir and stat is simply gone.
        let Ok(meta) = ent.metadata() else { continue };
        out.push(SegmentFile {
            number,
            path: ent.path(),
            disk_bytes: meta.blocks() * 512,
            prepared,
        });
    }
    out.sort_by_key(|s| (s.number, s.prepared));
    Ok(out)
}

/// Removes temporary segment files (`.tmp-<segment>-<pid>-<seq>`, a segment being created
/// before it is linked into place) whose creating process is gone: a writer killed while
/// allocating a segment leaves one behind, and nothing else would ever remove it, so a long
/// run of crashes leaked disk past `max_bytes` (found by tests/e2e/torture.rs). A file whose
/// process is alive, or whose name does not parse, is left alone. Returns bytes freed.
pub(crate) fn remove_orphan_temp_files(seg_dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = fs::read_dir(seg_dir) else {
        return 0;
    };
    let mut freed = 0;
    for ent in rd.flatten() {
        let name = ent.file_name();
        let Some(pid) = name.to_str().and_then(temp_file_pid) else {
            continue;
        };
        if process_alive(pid) {
            continue;
        }
        let bytes = ent.metadata().map(|m| m.blocks() * 512).unwrap_or(0);
        if fs::remove_file(ent.path()).is_ok() {
            freed += bytes;
        }
    }
    freed
}

/// The creating pid in a temporary segment file name `.tmp-<segment>-<pid>-<seq>`.
fn temp_file_pid(name: &str) -> Option<i32> {
    let mut parts = name.strip_prefix(".tmp-")?.split('-');
    let (_segment, pid, _seq) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    pid.parse().ok().filter(|&p| p > 0)
}

/// Whether a process with this pid exists (`kill(pid, 0)`; EPERM means it exists).
fn process_alive(pid: i32) -> bool {
    #[expect(unsafe_code, reason = "libc kill(pid, 0) probes for a process")]
    // SAFETY: signal 0 sends nothing; kill only checks that the pid exists and that we may
    // signal it. No memory is passed.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Live segment numbers only, ascending.
pub fn live_segments(seg_dir: &Path) -> Result<Vec<u64>> {
    Ok(list_segments(seg_dir)?
        .into_iter()
        .filter(|s| !s.prepared)
        .map(|s| s.number)
        .collect())
}

/// Whether any writer holds `writers.lock` (shared) right now, probed with a non-blocking
/// exclusive flock that is released at once. A log no writer ever opened has no lock file.
pub(crate) fn writers_alive(lock_path: &Path) -> bool {
    let Ok(f) = File::open(lock_path) else {
        return false;
    };
    match f.try_lock() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(_) => true,
    }
}

/// fsync of a directory, so creates and renames in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Reads `n` bytes from the kernel's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::io("read", "/dev/urandom", e))?;
    Ok(b)
}

/// The log's identity: a private id (used only in upload URLs) and its public sha256.
#[derive(Clone, PartialEq, Eq)]
pub struct LogId {
    private: [u8; 32],
}

impl std::fmt::Debug for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogId(public {})", hex::encode(self.public()))
    }
}

impl LogId {
    /// Builds an id from private bytes.
    pub fn from_private(private: [u8; 32]) -> Self {
        LogId { private }
    }
    /// The private id. Keep it secret: it authorises writes to this log's upload stream.
    pub fn private(&self) -> [u8; 32] {
        self.private
    }
    /// sha256 of the private id: the only id the server stores or shows.
    pub fn public(&self) -> [u8; 32] {
        Sha256::digest(self.private).into()
    }

    /// Loads `<dir>/log-id`, creating it (with `sharing`'s mode, atomically) when missing.
    pub fn load_or_create(dir: &Path, sharing: Sharing) -> Result<Self> {
        let path = dir.join(LOG_ID_FILE);
        if let Some(id) = Self::load(dir)? {
            return Ok(id);
        }
        let private: [u8; 32] = random_bytes()?;
        let text = format!("{}\n", hex::encode(private));
        // The first process to create it wins; the others load theirs.
        if sharing
            .create_file_once(&path, text.as_bytes())
            .map_err(|e| Error::io("create", &path, e))?
        {
            return Ok(LogId { private });
        }
        Self::load(dir)?.ok_or_else(|| Error::NotALog {
            path: dir.to_path_buf(),
        })
    }

    /// Loads `<dir>/log-id` if present.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(LOG_ID_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let mut private = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut private).map_err(|_| Error::CorruptHeader {
            path: path.clone(),
            reason: "log-id must hold 64 hex characters".into(),
        })?;
        Ok(Some(LogId { private }))
    }
}

/// Time sources, injectable so tests can jump the clock.
pub trait Clock: Send + Sync {
    /// Wall-clock time, nanoseconds since the Unix epoch (may jump).
    fn wall_ns(&self) -> i64;
    /// Time since boot including suspend (CLOCK_BOOTTIME), nanoseconds; never jumps back
    /// within a thread.
    fn boot_ns(&self) -> u64;
    /// The kernel's boot id (16 bytes), so boot-relative times are compared only within a boot.
    fn boot_id(&self) -> [u8; 16];
}

/// The real clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall_ns(&self) -> i64 {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i64,
            Err(e) => -(e.duration().as_nanos() as i64),
        }
    }
    /// CLOCK_BOOTTIME, extrapolated with the TSC between kernel reads at most 100 ms
    /// apart per thread where the machine allows ([`crate::clock`] says when and what a
    /// suspend does to it).
    #[inline]
    fn boot_ns(&self) -> u64 {
        crate::clock::boot_ns()
    }
    fn boot_id(&self) -> [u8; 16] {
        static BOOT_ID: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
        *BOOT_ID.get_or_init(|| {
            let mut id = [0u8; 16];
            if let Ok(s) = fs::read_to_string("/proc/sys/kernel/random/boot_id") {
                let hexs: String = s.trim().chars().filter(|c| *c != '-').collect();
                let _ = hex::decode_to_slice(hexs, &mut id);
            }
            id
        })
    }
}

/// CLOCK_BOOTTIME in nanoseconds, read from the kernel (vDSO) on every call.
pub fn boot_time_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call;
    // clock_gettime only writes to it.
    #[expect(unsafe_code, reason = "libc clock_gettime(CLOCK_BOOTTIME)")]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn segment_names_sort_numerically_and_parse_back() {
        let a = segment_file_name(9, SEG_EXT);
        let b = segment_file_name(10, SEG_EXT);
        assert!(a < b);
        assert_eq!(parse_segment_file_name(&b), Some((10, "seg")));
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX, "prep")),
            Some((u64::MAX, "prep"))
        );
        assert_eq!(parse_segment_file_name("12.seg"), None);
        assert_eq!(parse_segment_file_name("abcdefghijabcdefghij.seg"), None);
    }

    #[test]
    fn log_id_is_created_once_and_private() {
        let d = tempfile::tempdir().unwrap();
        let a = LogId::load_or_create(d.path(), Sharing::Private).unwrap();
        let b = LogId::load_or_create(d.path(), Sharing::Private).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.public(), a.private());
        let mode = fs::metadata(d.path().join(LOG_ID_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn boot_clock_moves_forward() {
        let a = boot_time_ns();
        let b = boot_time_ns();
        assert!(a > 0 && b >= a);
    }
}
