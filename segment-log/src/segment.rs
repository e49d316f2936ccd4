//! Mapped segment files: the only module that touches memory maps.
//!
//! # The mmap contract
//!
//! Writing through a shared mapping is sound here because:
//! - the log directory is ours (0700) and every writer follows this protocol; files are
//!   created 0600;
//! - a segment file is fully allocated (`fs2::FileExt::allocate`) *before* it is mapped and is
//!   never truncated while any process may map it, so no access within `capacity` can SIGBUS
//!   (a full disk surfaces as an allocation error, not a signal);
//! - the mapping is page-aligned, so the reservation counter at header offset 128 and every
//!   frame's first word (8-aligned offsets) are naturally aligned for `AtomicU64`;
//! - writers only write inside ranges they reserved with `fetch_add` (see [`crate::reserve`]),
//!   so no two threads or processes write the same bytes, and readers read files with
//!   `pread`, never through these mappings.
//!
//! Someone else truncating a segment file behind our back breaks the contract; the log
//! directory's permissions exist to prevent that.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Advice, MmapMut, MmapOptions};

use crate::error::{Error, Result};
use crate::format::{self, SegmentHeader, FRAME_ALIGN, HEADER_LEN, OFF_RESERVED_END};
use crate::reserve::FrameMem;

/// One segment file mapped read-write.
pub(crate) struct MappedSegment {
    pub(crate) number: u64,
    pub(crate) capacity: u64,
    pub(crate) path: PathBuf,
    /// Identity of the file, to recognise a prepared segment after a rename.
    pub(crate) ino: (u64, u64),
    map: MmapMut,
    base: *mut u8,
    _file: File,
}

// SAFETY: `base` points into `map`, which lives as long as `self` and is never remapped.
// All writes through `base` target ranges that the reservation protocol hands to exactly one
// writer, and shared words are accessed only as atomics, so sharing across threads is sound.
#[expect(
    unsafe_code,
    reason = "raw pointer into a shared mapping; see the module docs"
)]
unsafe impl Send for MappedSegment {}
// SAFETY: see the `Send` impl above: disjoint reserved writes plus atomic shared words.
#[expect(
    unsafe_code,
    reason = "raw pointer into a shared mapping; see the module docs"
)]
unsafe impl Sync for MappedSegment {}

pub(crate) fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open segment", path, e))
}

/// Creates a fully allocated segment file with its header at `tmp`, then renames it to
/// `dest` so nobody ever sees a half-written header. Fails with `NoSpace` on a full disk.
pub(crate) fn create_file(tmp: &Path, dest: &Path, header: &SegmentHeader) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| Error::io("create segment", tmp, e))?;
    let result = (|| {
        allocate(&file, header.capacity).map_err(|e| Error::io("allocate segment", tmp, e))?;
        std::os::unix::fs::FileExt::write_all_at(&file, &header.encode(), 0)
            .map_err(|e| Error::io("write segment header", tmp, e))?;
        rename_noreplace(tmp, dest)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    Ok(file)
}

/// Renames `from` to `to`, failing (AlreadyExists) instead of replacing an existing `to`: a
/// live segment must never be replaced, whatever a racing or confused writer does. A hard
/// link cannot overwrite; the old name is removed after.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    std::fs::hard_link(from, to).map_err(|e| Error::io("link segment", to, e))?;
    std::fs::remove_file(from).map_err(|e| Error::io("remove", from, e))
}

/// Allocates `len` bytes of disk for `file`. Not `fs2::FileExt::allocate`: it calls
/// `posix_fallocate`, which returns its error number instead of setting errno, and then
/// reports errno, so a full disk (ENOSPC, EFBIG) came back as "Success (os error 0)" or a
/// stale error and was not recognised as `NoSpace`.
fn allocate(file: &File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len =
        libc::off_t::try_from(len).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: the descriptor is valid for the call (borrowed from `file`); posix_fallocate
    // takes no pointers.
    #[expect(
        unsafe_code,
        reason = "posix_fallocate, to keep the error code fs2 loses"
    )]
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 => Ok(()),
        code => Err(std::io::Error::from_raw_os_error(code)),
    }
}

impl MappedSegment {
    /// Maps an existing segment file after validating its header and size.
    pub(crate) fn map(file: File, path: PathBuf) -> Result<Self> {
        let mut head = [0u8; HEADER_LEN as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0)
            .map_err(|e| Error::io("read segment header", &path, e))?;
        let header = SegmentHeader::decode(&head).map_err(|e| match e {
            format::HeaderError::UnsupportedVersion { found, max } => Error::UnsupportedVersion {
                path: path.clone(),
                found,
                max,
            },
            other => Error::CorruptHeader {
                path: path.clone(),
                reason: other.to_string(),
            },
        })?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io("stat segment", &path, e))?;
        if meta.len() < header.capacity {
            return Err(Error::CorruptHeader {
                path,
                reason: format!(
                    "file is {} bytes but its header claims {}; it was truncated",
                    meta.len(),
                    header.capacity
                ),
            });
        }
        let len = usize::try_from(header.capacity).map_err(|_| Error::CorruptHeader {
            path: path.clone(),
            reason: "capacity".into(),
        })?;
        // SAFETY: the file is allocated to at least `capacity` bytes (checked just above) and
        // is never truncated while mapped (module contract), so every access below `len`
        // is backed by allocated file space.
        #[expect(
            unsafe_code,
            reason = "memory map of an allocated segment; see module docs"
        )]
        let mut map = unsafe { MmapOptions::new().len(len).map_mut(&file) }
            .map_err(|e| Error::io("mmap segment", &path, e))?;
        let base = map.as_mut_ptr();
        Ok(MappedSegment {
            number: header.segment,
            capacity: header.capacity,
            path,
            ino: (meta.dev(), meta.ino()),
            map,
            base,
            _file: file,
        })
    }

    /// The same mapping under a new path (after a rename of the file).
    pub(crate) fn renamed(mut self, path: PathBuf) -> Self {
        self.path = path;
        self
    }

    fn counter(&self) -> &AtomicU64 {
        // SAFETY: OFF_RESERVED_END (128) is 8-aligned inside the page-aligned mapping, which
        // is at least HEADER_LEN bytes long and lives as long as `self`; all processes access
        // this word only atomically.
        #[expect(unsafe_code, reason = "atomic view of the shared reservation counter")]
        unsafe {
            &*(self.base.add(OFF_RESERVED_END).cast::<AtomicU64>())
        }
    }

    /// Forces the reservation counter to at least `capacity`, so no writer reserves here
    /// again (used when recovery distrusts the counter).
    pub(crate) fn seal_counter(&self) {
        self.counter().fetch_max(self.capacity, Ordering::AcqRel);
    }

    /// Faults every page in for writing, ahead of use, so appends do not take page faults.
    /// Uses `MADV_POPULATE_WRITE`; on kernels without it, touches each page with an atomic
    /// no-op (`fetch_add(0)`), which cannot clobber a concurrent writer's bytes.
    pub(crate) fn prefault(&self) {
        // In 2 MiB steps: each `madvise` holds the process's mmap lock, and a writer rotating
        // meanwhile (mmap/munmap) must not wait for a whole segment's populate.
        const STEP: u64 = 2 << 20;
        let mut off = 0u64;
        while off < self.capacity {
            let len = STEP.min(self.capacity - off);
            if self
                .map
                .advise_range(Advice::PopulateWrite, off as usize, len as usize)
                .is_err()
            {
                self.prefault_by_touch(off);
                return;
            }
            off += len;
        }
    }

    /// Fallback for kernels without `MADV_POPULATE_WRITE` (before 5.14).
    fn prefault_by_touch(&self, from: u64) {
        let page = 4096u64;
        let mut off = from.max(HEADER_LEN).next_multiple_of(page);
        while off + FRAME_ALIGN <= self.capacity {
            // SAFETY: `off` is page-aligned (so 8-aligned) and below capacity, inside the
            // mapping; the word is accessed atomically, so concurrent writers are unaffected.
            #[expect(unsafe_code, reason = "atomic no-op write to fault a page in")]
            unsafe {
                (*self.base.add(off as usize).cast::<AtomicU64>()).fetch_add(0, Ordering::Relaxed);
            }
            off += page;
        }
    }

    /// msync of a byte range (rounded out to pages).
    pub(crate) fn flush_range(&self, offset: u64, len: u64) -> std::io::Result<()> {
        let start = offset & !4095;
        let end = (offset + len).min(self.capacity);
        self.map.flush_range(start as usize, (end - start) as usize)
    }

    /// msync of the whole mapping.
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        self.map.flush()
    }
}

impl FrameMem for MappedSegment {
    #[inline]
    fn capacity(&self) -> u64 {
        self.capacity
    }

    #[inline]
    fn fetch_add_reserved(&self, n: u64) -> u64 {
        self.counter().fetch_add(n, Ordering::AcqRel)
    }

    #[inline]
    fn load_reserved(&self) -> u64 {
        self.counter().load(Ordering::Acquire)
    }

    #[inline]
    fn force_full(&self) {
        self.seal_counter();
    }

    #[inline]
    fn load_word(&self, offset: u64) -> u64 {
        assert!(
            offset >= HEADER_LEN
                && offset % FRAME_ALIGN == 0
                && offset + FRAME_ALIGN <= self.capacity,
            "word outside the frame area"
        );
        // SAFETY: `offset` is 8-aligned and inside the mapping (asserted above); shared
        // words are only accessed atomically.
        #[expect(unsafe_code, reason = "atomic load of a word of the shared mapping")]
        unsafe {
            (*self.base.add(offset as usize).cast::<AtomicU64>()).load(Ordering::Relaxed)
        }
    }

    #[inline]
    fn write_body(&self, offset: u64, word1: [u8; 8], payload: &[u8]) {
        let total = format::frame_len(payload.len() as u64);
        assert!(
            offset >= HEADER_LEN && offset + total <= self.capacity,
            "frame outside segment"
        );
        // SAFETY: the range offset..offset+total lies inside the mapping (asserted above) and
        // was reserved by this writer alone (reservation protocol), so no one else writes it;
        // the source slices do not overlap the mapping's reserved range.
        #[expect(unsafe_code, reason = "copy into a reserved range of the mapping")]
        unsafe {
            let dst = self.base.add(offset as usize);
            std::ptr::copy_nonoverlapping(word1.as_ptr(), dst.add(8), 8);
            std::ptr::copy_nonoverlapping(payload.as_ptr(), dst.add(16), payload.len());
            let pad = (total - 16) as usize - payload.len();
            std::ptr::write_bytes(dst.add(16 + payload.len()), 0, pad);
        }
    }

    #[inline]
    fn publish(&self, offset: u64, word0: u64) {
        debug_assert!(offset % 8 == 0 && offset + 8 <= self.capacity);
        // SAFETY: `offset` is 8-aligned (frames are aligned) and inside the mapping; the
        // word belongs to this writer's reservation and readers load it atomically.
        #[expect(unsafe_code, reason = "release store of a frame's first word")]
        unsafe {
            (*self.base.add(offset as usize).cast::<AtomicU64>()).store(word0, Ordering::Release);
        }
    }
}
