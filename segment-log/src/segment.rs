//! Mapped segment files: the only module that touches memory maps.
//!
//! # The mmap contract
//!
//! Other processes write the same pages at the same time, so this module never makes a
//! slice (`&[u8]`, `&mut [u8]`) over the mapping: it is a [`memmap2::MmapRaw`] (no `Deref` to
//! a slice) and every access goes through a raw pointer, either as an atomic on one 8-aligned
//! word (the only references made are `&AtomicU64`, which permit shared mutation) or as a
//! plain copy into bytes this writer reserved. What makes that sound, split by who
//! guarantees it:
//!
//! The language model (what Rust's aliasing and data-race rules need):
//! - no reference to the mapped bytes exists, so the compiler may assume nothing about them
//!   staying unchanged or unaliased; what other processes do is outside the abstract machine
//!   and is seen like device memory through raw pointers;
//! - within this process, no two threads access the same bytes concurrently unless both use
//!   atomics: writers copy only into ranges [`crate::reserve::reserve`] handed to them alone
//!   (one `fetch_add`, validated), and the shared words (the counter, a frame's first word)
//!   are only accessed as `AtomicU64`;
//! - every atomic is naturally aligned: the mapping is page-aligned, the counter is at 128,
//!   and `reserve` hands out only 8-aligned offsets (it checks the counter, which is outside
//!   data, before trusting it).
//!
//! The hardware and the kernel (what no Rust rule covers):
//! - a segment file is fully allocated (`fallocate(2)`) *before* it is mapped and is never
//!   truncated while any process may map it, so no access within `capacity` can SIGBUS (a
//!   full disk surfaces as an allocation error, not a signal);
//! - the fallback prefault ([`MappedSegment::prefault`] on kernels without
//!   `MADV_POPULATE_WRITE`) does an atomic `fetch_add(0)` on one word per page, a page that
//!   another *process* may already be writing with plain stores. In the language model that
//!   would be a data race; it is sound because the hardware executes an aligned 8-byte atomic
//!   read-modify-write indivisibly with respect to every other store to that word (x86
//!   `lock xadd`, arm64 `ldadd`/LL-SC), and adding zero writes back exactly the value it read,
//!   so no other writer's bytes are lost. Within this process a segment is prefaulted before
//!   it is published to appending threads, so no thread of ours races with it;
//! - 8-byte aligned stores are single-copy atomic, so a reader never sees half a first word;
//! - `reserve` loads the first and last word of a reservation before using it (to catch a
//!   damaged counter). In a correct log those words are unwritten; under a damaged counter
//!   they may be bytes another writer is copying with plain stores, which the language model
//!   calls a race and the hardware resolves as an ordinary aligned load (the value is only
//!   compared with zero).
//!
//! Readers read files with `pread`, never through these mappings. Someone else truncating a
//! segment file behind our back breaks the contract (the next touch of a page past the new end
//! is a SIGBUS); the log directory's permissions exist to prevent that: only the owner of a
//! private log, or a member of a shared log's group, may write its segments (README.md,
//! "Security").

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Advice, MmapOptions, MmapRaw};

use crate::close_mark;
use crate::error::{Error, Result};
use crate::format::{self, SegmentHeader, FRAME_ALIGN, HEADER_LEN, OFF_RESERVED_END};
use crate::perms::Sharing;
use crate::reserve::FrameMem;

/// One segment file mapped read-write. `Send + Sync` because [`MmapRaw`] is: all access to
/// the mapped bytes is through raw pointers under the contract in the module docs.
pub(crate) struct MappedSegment {
    pub(crate) number: u64,
    pub(crate) capacity: u64,
    /// The segment's format version: writers use chunks (and pad frames) only in version 2.
    pub(crate) version: u32,
    /// The path the segment was mapped under (a prepared segment's `.prep` name).
    mapped_path: PathBuf,
    /// The path after the rename that made a prepared segment live (set once).
    live_path: std::sync::OnceLock<PathBuf>,
    /// Identity of the file, to recognise a prepared segment after a rename.
    pub(crate) ino: (u64, u64),
    /// The reservation end at or past which this handle's next append wakes its preparer
    /// (`u64::MAX`: none). Armed when the segment becomes active, disarmed by the append that
    /// reaches it, so exactly one append of this handle notifies (see `writer.rs`).
    pub(crate) prepare_at: AtomicU64,
    /// Set by the preparer once its pre-fault pass over this segment is done (tests wait
    /// for it; a rotation does not: it takes the mapping as it is).
    pub(crate) prefaulted: std::sync::atomic::AtomicBool,
    /// End of the pages [`release_written`](Self::release_written) has unmapped (the
    /// syncer's; 0: none).
    released: AtomicU64,
    map: MmapRaw,
    file: File,
}

pub(crate) fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open segment", path, e))
}

/// Creates a fully allocated segment file with its header at `tmp`, then renames it to
/// `dest` so nobody ever sees a half-written header. Fails with `NoSpace` on a full disk.
pub(crate) fn create_file(
    sharing: Sharing,
    tmp: &Path,
    dest: &Path,
    header: &SegmentHeader,
) -> Result<File> {
    let file = create_temp(sharing, tmp, header)?;
    if let Err(e) = rename_noreplace(tmp, dest) {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    Ok(file)
}

/// The first half of [`create_file`]: a fully allocated segment file with its header at
/// `tmp` (removed again on failure), not yet renamed.
pub(crate) fn create_temp(sharing: Sharing, tmp: &Path, header: &SegmentHeader) -> Result<File> {
    let file = sharing
        .open(
            OpenOptions::new().read(true).write(true).create_new(true),
            tmp,
        )
        .map_err(|e| Error::io("create segment", tmp, e))?;
    let result = (|| {
        allocate(&file, header.capacity).map_err(|e| allocation_error(tmp, e))?;
        std::os::unix::fs::FileExt::write_all_at(&file, &header.encode(), 0)
            .map_err(|e| Error::io("write segment header", tmp, e))
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

/// Allocates `len` bytes of disk for `file` with `fallocate(2)` (mode 0: the blocks are
/// reserved, the file size is `len`). Called directly rather than through glibc's
/// `posix_fallocate`, which on a file system that cannot reserve space (EOPNOTSUPP) falls back
/// to writing a zero into every block: slow, 16 MiB of writes per segment, and on some file
/// systems (copy-on-write, compressed, sparse network shares) no guarantee that later writes
/// through the mapping find space, which would be a SIGBUS instead of an error. Here that
/// case is an error that says so ([`Error::AllocationUnsupported`]).
fn allocate(file: &File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len =
        libc::off_t::try_from(len).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    loop {
        // SAFETY: the descriptor is valid for the call (borrowed from `file`, which outlives
        // it); fallocate takes no pointers and only changes the file's allocation.
        #[expect(
            unsafe_code,
            reason = "fallocate(2) has no safe wrapper in std; called directly so EOPNOTSUPP is not emulated by writing zeros"
        )]
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The error for a failed segment allocation: `NoSpace` for a full disk, a clear
/// `AllocationUnsupported` when the file system cannot reserve space at all.
pub(crate) fn allocation_error(path: &Path, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => Error::AllocationUnsupported {
            path: path.to_path_buf(),
            source: e,
        },
        _ => Error::io("allocate segment", path, e),
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
        // Safe in memmap2 (`MmapRaw` hands out no slice). The file is allocated to at least
        // `capacity` bytes (checked just above) and never truncated while mapped (module
        // contract), so every access below `len` is backed by allocated file space.
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(|e| Error::io("mmap segment", &path, e))?;
        Ok(MappedSegment {
            number: header.segment,
            capacity: header.capacity,
            version: header.version,
            mapped_path: path,
            live_path: std::sync::OnceLock::new(),
            ino: (meta.dev(), meta.ino()),
            prepare_at: AtomicU64::new(u64::MAX),
            prefaulted: std::sync::atomic::AtomicBool::new(false),
            released: AtomicU64::new(0),
            map,
            file,
        })
    }

    /// The mapped file (for `pread`: recovery reads through the file, not the mapping).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Records the file's new path after a rename (a prepared segment made live). The
    /// mapping may be shared (the preparer may still be pre-faulting it), so this takes
    /// `&self`; only the first call counts.
    pub(crate) fn renamed(&self, path: PathBuf) {
        let _ = self.live_path.set(path);
    }

    /// The segment file's current path.
    pub(crate) fn path(&self) -> &Path {
        self.live_path.get().unwrap_or(&self.mapped_path)
    }

    /// The shared word at `offset` as an atomic. Callers pass an 8-aligned offset with
    /// `offset + 8 <= capacity` (checked here: a wrong offset is a bug, never UB).
    #[inline]
    fn word(&self, offset: u64) -> &AtomicU64 {
        assert!(
            offset.is_multiple_of(FRAME_ALIGN) && offset + FRAME_ALIGN <= self.capacity,
            "word {offset} outside the segment or unaligned"
        );
        // SAFETY: language model: `offset` is 8-aligned (asserted) inside the page-aligned
        // mapping (asserted against `capacity`, its length), so the pointer is aligned and
        // in bounds for an `AtomicU64`, valid as long as `self` (the mapping is never
        // remapped). The reference is to an atomic, which permits concurrent mutation; every
        // thread and process accesses these words only atomically (module contract), except
        // the hardware-guaranteed prefault touch documented there.
        #[expect(unsafe_code, reason = "atomic view of a word of the shared mapping")]
        unsafe {
            &*(self
                .map
                .as_mut_ptr()
                .add(offset as usize)
                .cast::<AtomicU64>())
        }
    }

    fn counter(&self) -> &AtomicU64 {
        self.word(OFF_RESERVED_END as u64)
    }

    /// Raises the reservation counter to at least `to` (recovery, no other writer alive).
    pub(crate) fn raise_counter(&self, to: u64) {
        self.counter().fetch_max(to, Ordering::AcqRel);
    }

    /// Forces the reservation counter to at least `capacity`, so no writer reserves here
    /// again (used when recovery distrusts the counter).
    pub(crate) fn seal_counter(&self) {
        self.counter().fetch_max(self.capacity, Ordering::AcqRel);
    }

    /// The counter value of the valid clean-close mark (FORMAT.md, "Clean-close mark"), if
    /// the header holds one for this segment.
    pub(crate) fn close_mark(&self) -> Option<u64> {
        let tag = self
            .word(close_mark::OFF_TAG as u64)
            .load(Ordering::Acquire);
        let counter = self
            .word(close_mark::OFF_COUNTER as u64)
            .load(Ordering::Relaxed);
        (tag == close_mark::tag(self.number, counter)).then_some(counter)
    }

    /// Writes the clean-close mark for `counter`: the counter word first, then the tag that
    /// validates it (release), so a crash in between leaves no valid mark. Called only by
    /// the last writer to close, holding `writers.lock` exclusively.
    pub(crate) fn set_close_mark(&self, counter: u64) {
        self.word(close_mark::OFF_COUNTER as u64)
            .store(counter, Ordering::Relaxed);
        self.word(close_mark::OFF_TAG as u64)
            .store(close_mark::tag(self.number, counter), Ordering::Release);
    }

    /// Invalidates the clean-close mark (a writer opened the log: the counter may move and
    /// the next opener must not trust an old mark). Stores only when a tag is present, so an
    /// open of a log without one dirties nothing.
    pub(crate) fn clear_close_mark(&self) {
        let tag = self.word(close_mark::OFF_TAG as u64);
        if tag.load(Ordering::Relaxed) != 0 {
            tag.store(0, Ordering::Release);
        }
    }

    /// Faults the first `len` bytes (rounded up to pages, at most the capacity) in for
    /// writing, ahead of use, so appends there take no page faults. Uses
    /// `MADV_POPULATE_WRITE`; on kernels without it, touches each page with an atomic no-op
    /// (`fetch_add(0)`), which cannot clobber a concurrent writer's bytes.
    ///
    /// Every page faulted in for writing is dirty: if appends do not overwrite it before the
    /// kernel writes it back, zeros go to disk. The writer sizes `len` by how fast the log
    /// fills (see `writer::prefault_len`).
    pub(crate) fn prefault(&self, len: u64) {
        // In 256 KiB steps: each `madvise` holds the process's mmap lock (shared), and a
        // writer that maps a segment meanwhile (mmap takes it exclusively) waits for at most
        // one step (~64 page allocations), not a whole segment's populate.
        const STEP: u64 = 256 << 10;
        let end = len.next_multiple_of(4096).min(self.capacity);
        let mut off = 0u64;
        while off < end {
            let n = STEP.min(end - off);
            if self
                .map
                .advise_range(Advice::PopulateWrite, off as usize, n as usize)
                .is_err()
            {
                self.prefault_by_touch(off, end);
                return;
            }
            off += n;
        }
    }

    /// Sets up a segment the preparer pre-faults whole for a fast writer
    /// (`writer::huge_folios` decides), before the mapping is published (the advice changes
    /// the mapping's flags under the process's mmap lock, which no appender may wait for):
    ///
    /// - 2 MiB page-cache folios mapped by one page-table entry each (`MADV_HUGEPAGE`).
    ///   Measured on the machine of BENCHMARKS.md (issue 14): pre-faulting 16 MiB costs
    ///   ~4.5 ms of CPU instead of ~18 with 4 KiB folios, so the preparer keeps ahead of an
    ///   appender at full speed, and an appender that overtakes it takes one fault per 2 MiB
    ///   instead of 512.
    /// - No read-ahead (`MADV_RANDOM`). A write fault on a page not yet in the page cache
    ///   otherwise starts a read-around of the file's whole read-ahead window
    ///   (`read_ahead_kb`, 8 MiB on that machine; with huge folios, two of them): thousands of
    ///   pages allocated and zero-filled on the faulting thread, 1.6-3.5 ms for one append
    ///   (`perf record -g`: `filemap_fault` -> `page_cache_ra_unbounded` ->
    ///   `ext4_mpage_readpages` -> `memset`), at fixed spots: ~31 records into a segment and
    ///   again at the window's async marker 6 MiB in. With it off, a fault brings in the one
    ///   folio it needs.
    ///
    /// Not for slow writers: a fault would dirty 2 MiB at once, which writeback would write
    /// as zeros long before records overwrite them (the reason for `prefault_len`), and a
    /// sync writes a partly written folio whole; and their page-by-page faults are cheaper
    /// with read-ahead's batched allocation (~4.4 µs a page against ~7 without). A kernel
    /// without transparent huge pages for files ignores or refuses the first advice; either
    /// way the mapping works as before.
    pub(crate) fn for_fast_writer(&self) {
        let _ = self.map.advise(Advice::HugePage);
        self.no_readahead();
    }

    /// No read-ahead on this mapping (`MADV_RANDOM`; see
    /// [`for_fast_writer`](Self::for_fast_writer)). Not used for a segment the rotating
    /// thread maps itself when the preparer is late: its appender faults in every page, and
    /// without read-ahead's batched allocation that cost 15-40 % more appender CPU in the
    /// interleaved append benchmark (issue 14), for a case that is slow anyway.
    pub(crate) fn no_readahead(&self) {
        let _ = self.map.advise(Advice::Random);
    }

    /// Fallback for kernels without `MADV_POPULATE_WRITE` (before 5.14): an atomic no-op
    /// (`fetch_add(0)`) on one word per page. Sound only by the hardware guarantee in the
    /// module docs: another process may be writing that page with plain stores.
    fn prefault_by_touch(&self, from: u64, to: u64) {
        let page = 4096u64;
        let mut off = from.max(HEADER_LEN).next_multiple_of(page);
        while off + FRAME_ALIGN <= to.min(self.capacity) {
            self.word(off).fetch_add(0, Ordering::Relaxed);
            off += page;
        }
    }

    /// Drops this process's page-table entries for the whole pages of `..to` past the header
    /// page that it has not dropped before, keeping the file's pages and their contents in
    /// the page cache (`MADV_DONTNEED` on a shared file mapping). The syncer calls it before
    /// its `msync` with the reserved end: writeback write-protects every page it cleans that
    /// is still mapped, one TLB-shootdown interrupt of the appending CPU per page; pages no
    /// longer mapped cost one batched flush here instead (BENCHMARKS.md, "sync=interval").
    /// A writer still filling a frame in that range faults the same page back in.
    pub(crate) fn release_written(&self, to: u64) {
        let start = self.released.load(Ordering::Relaxed).max(4096);
        let end = (to & !4095).min(self.capacity & !4095);
        if end <= start {
            return;
        }
        #[expect(unsafe_code, reason = "MADV_DONTNEED on the shared file mapping")]
        // SAFETY: the mapping is a shared mapping of the segment file (`map_raw`), so
        // MADV_DONTNEED only unmaps: the pages stay in the page cache with their contents and
        // dirty state, and the next access (a late writer's store, the publish of its first
        // word) maps the same page again. No reference into the mapping exists (raw pointers
        // and per-access `&AtomicU64` only, module docs), so nothing observes a stale view;
        // the range is page-aligned and inside the mapping (checked above).
        let r = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                start as usize,
                (end - start) as usize,
            )
        };
        if r.is_ok() {
            self.released.store(end, Ordering::Relaxed);
        }
    }

    /// msync of a byte range (rounded out to pages).
    pub(crate) fn flush_range(&self, offset: u64, len: u64) -> std::io::Result<()> {
        let start = offset & !4095;
        let end = (offset + len).min(self.capacity);
        self.map.flush_range(start as usize, (end - start) as usize)
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
        self.word(offset).load(Ordering::Relaxed)
    }

    #[inline]
    fn write_body(&self, offset: u64, word1: [u8; 8], head: &[u8], body: &[u8]) {
        let len = head.len() + body.len();
        let total = format::frame_len(len as u64);
        // Guaranteed by `reserve` (which validates the counter); checked again because a
        // violation would be a write outside the mapping.
        assert!(
            offset >= HEADER_LEN
                && offset.is_multiple_of(FRAME_ALIGN)
                && offset + total <= self.capacity,
            "frame outside segment"
        );
        // SAFETY: language model: the range offset..offset+total lies inside the mapping
        // (asserted above) and was reserved by this writer alone (reservation protocol; in a
        // version 2 chunk, by the compare-and-swap of the chunk's cursor, `chunk.rs`), so
        // no other thread of this process touches these bytes until the release store in
        // `publish` (no data race); no reference to the mapping is made (raw pointers only),
        // and the source slices are process memory that cannot overlap the mapping.
        #[expect(unsafe_code, reason = "copy into a reserved range of the mapping")]
        unsafe {
            let dst = self.map.as_mut_ptr().add(offset as usize);
            std::ptr::copy_nonoverlapping(word1.as_ptr(), dst.add(8), 8);
            std::ptr::copy_nonoverlapping(head.as_ptr(), dst.add(16), head.len());
            std::ptr::copy_nonoverlapping(body.as_ptr(), dst.add(16 + head.len()), body.len());
            let pad = (total - 16) as usize - len;
            std::ptr::write_bytes(dst.add(16 + len), 0, pad);
        }
    }

    #[inline]
    fn publish(&self, offset: u64, word0: u64) {
        // `word` checks alignment and bounds (it used to be only a debug assertion).
        self.word(offset).store(word0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::MappedSegment;

    /// Issue 11 item 14: `MmapMut` derefs to a `&mut [u8]` over bytes other processes write.
    /// The segment holds an `MmapRaw` and needs no `unsafe impl Send/Sync` of its own.
    #[test]
    fn the_mapping_is_raw_and_no_slice_is_made_over_it() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<MappedSegment>();
        let src = include_str!("segment.rs");
        let code = src.split("#[cfg(test)]").next().unwrap_or_default();
        for banned in [
            "MmapMut",
            "from_raw_parts",
            "unsafe impl Send",
            "unsafe impl Sync",
        ] {
            assert!(!code.contains(banned), "segment.rs uses {banned}");
        }
    }
}
