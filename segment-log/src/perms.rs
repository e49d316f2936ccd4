//! Who may use a log's files: its owner alone (a private log) or every member of the log
//! directory's group (a shared log: the system mode, as journald has its `systemd-journal`
//! group).
//!
//! The log directory decides: a group-writable log directory (the `g+w` bit without `o+w`,
//! e.g. the system log `/var/lib/seglog`, mode 2770 `root:seglog`) makes a shared log,
//! anything else a private one. Every file and directory seglog makes in a log goes through [`Sharing`],
//! which forces its mode whatever the writer's umask:
//!
//! | | private log | shared log |
//! | --- | --- | --- |
//! | files | 0600 | 0660, group of the log directory |
//! | directories | 0700 | 2770 (setgid), group of the log directory |
//!
//! In a shared log a file that other users open as soon as it exists (a lock file, the rate
//! limit state) is made under a temporary name, given its mode and group, and only then
//! linked into place ([`Sharing::open_or_create`]), so nobody ever finds it with the mode the
//! umask left. Files this process did not create, and directories another member made, are
//! left as they are (only their owner or root may change them).

use std::ffi::{CStr, CString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Mode of every file of a private log.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of every directory of a private log.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of every file of a shared log.
pub const SHARED_FILE_MODE: u32 = 0o660;
/// Mode of every directory seglog makes in a shared log (setgid: what is made inside gets
/// the directory's group).
pub const SHARED_DIR_MODE: u32 = 0o2770;

/// The permission policy of one log, decided by its directory ([`Sharing::of_dir`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Files 0600, directories 0700: only the owner (and root) can use the log.
    Private,
    /// Files 0660, directories 2770, all of group `gid`: every member can append, read and
    /// trim.
    Group {
        /// The log directory's group.
        gid: u32,
    },
}

impl Sharing {
    /// The policy of a log (or of any directory seglog made in it): shared with the
    /// directory's group when the directory is group-writable and not world-writable (a
    /// directory anyone may write, such as `/tmp`, shares nothing with a group).
    pub fn of_dir(dir: &Path) -> io::Result<Sharing> {
        fs::metadata(dir).map(|m| Sharing::of_metadata(&m))
    }

    /// [`of_dir`](Self::of_dir) from a directory's metadata.
    pub fn of_metadata(m: &fs::Metadata) -> Sharing {
        if m.mode() & 0o022 == 0o020 {
            Sharing::Group { gid: m.gid() }
        } else {
            Sharing::Private
        }
    }

    /// Whether the log is shared with a group.
    pub fn is_shared(self) -> bool {
        matches!(self, Sharing::Group { .. })
    }

    /// The mode of the files (0600 or 0660).
    pub fn file_mode(self) -> u32 {
        match self {
            Sharing::Private => PRIVATE_FILE_MODE,
            Sharing::Group { .. } => SHARED_FILE_MODE,
        }
    }

    /// The mode of the directories (0700 or 2770).
    pub fn dir_mode(self) -> u32 {
        match self {
            Sharing::Private => PRIVATE_DIR_MODE,
            Sharing::Group { .. } => SHARED_DIR_MODE,
        }
    }

    fn gid(self) -> Option<u32> {
        match self {
            Sharing::Private => None,
            Sharing::Group { gid } => Some(gid),
        }
    }

    /// Opens `path` with `options` (this call sets the mode) and gives a file it created the
    /// policy's mode and group. For files no other process opens before they are renamed or
    /// linked into place (temporary files) or that one process alone uses; a file other
    /// users open as soon as it exists goes through [`open_or_create`](Self::open_or_create).
    pub fn open(self, options: &mut OpenOptions, path: &Path) -> io::Result<File> {
        let f = options.mode(self.file_mode()).open(path)?;
        self.fix_file(&f)?;
        Ok(f)
    }

    /// Opens `path` with `options` (which must not create or truncate, and must write or
    /// append), creating the file when it is missing. In a shared log the file is made under
    /// a temporary name, given its mode and group, then linked into place: another user
    /// never sees it with the mode the creator's umask left.
    pub fn open_or_create(self, options: &OpenOptions, path: &Path) -> io::Result<File> {
        if !self.is_shared() {
            return options
                .clone()
                .create(true)
                .truncate(false)
                .mode(PRIVATE_FILE_MODE)
                .open(path);
        }
        let f = match options.open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.link_new_file(path)?;
                options.open(path)?
            }
            other => other?,
        };
        self.fix_file(&f)?;
        Ok(f)
    }

    /// Makes an empty file at `path` unless one exists, through a temporary name.
    fn link_new_file(self, path: &Path) -> io::Result<()> {
        self.create_file_once(path, b"").map(|_| ())
    }

    /// Creates `path` holding `bytes` unless it exists, atomically: a temporary file with the
    /// policy's mode and group, synced, then hard-linked into place (a link never replaces).
    /// Returns whether this call made it; `false` means another process's file was there
    /// first, and theirs is the one to use.
    pub fn create_file_once(self, path: &Path, bytes: &[u8]) -> io::Result<bool> {
        let tmp = temp_path(path);
        let made = self
            .open(OpenOptions::new().write(true).create_new(true), &tmp)
            .and_then(|mut f| {
                io::Write::write_all(&mut f, bytes)?;
                f.sync_all()
            });
        let linked = made.and_then(|()| fs::hard_link(&tmp, path));
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_parent(path)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Replaces `path` with `bytes` atomically: `.<name>.tmp` beside it (the policy's mode
    /// and group whatever the umask), then a rename. With `durable`, the data and the new
    /// directory entry are synced before it returns. The temporary name is fixed, so the
    /// caller must be the only writer of `path` at a time (it holds a lock): a writer
    /// killed half-way leaves one stale temporary, which the next write reuses.
    pub fn replace_file(self, path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(".{}.tmp", name.unwrap_or_default()));
        {
            let mut f = self.open(
                OpenOptions::new().write(true).create(true).truncate(true),
                &tmp,
            )?;
            io::Write::write_all(&mut f, bytes)?;
            if durable {
                f.sync_data()?;
            }
        }
        fs::rename(&tmp, path)?;
        if durable {
            sync_parent(path)?;
        }
        Ok(())
    }

    /// Creates or replaces `path` with `bytes`, with the policy's mode whatever the umask (a
    /// private file that existed with another mode is set back to 0600).
    pub fn write_file(self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut f = self.open(
            OpenOptions::new().write(true).create(true).truncate(true),
            path,
        )?;
        if !self.is_shared() {
            f.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
        }
        io::Write::write_all(&mut f, bytes)
    }

    /// Creates `dir` and each missing parent with the policy's mode and group whatever the
    /// umask, and forces them on `dir` when it existed with others. In a shared log a
    /// directory another member made is left alone.
    pub fn create_dir_all(self, dir: &Path) -> io::Result<()> {
        create_dirs(dir, self.dir_mode(), self.gid())
    }

    /// Gives an open file the policy's mode and group when they differ and this process may
    /// change them (it owns the file, or is root). Nothing to do in a private log, whose
    /// files are created 0600.
    pub fn fix_file(self, f: &File) -> io::Result<()> {
        let Sharing::Group { gid } = self else {
            return Ok(());
        };
        let m = f.metadata()?;
        if !may_change(&m) {
            return Ok(());
        }
        if m.gid() != gid {
            allowed(std::os::unix::fs::fchown(f, None, Some(gid)))?;
        }
        if m.mode() & 0o7777 != SHARED_FILE_MODE {
            f.set_permissions(fs::Permissions::from_mode(SHARED_FILE_MODE))?;
        }
        Ok(())
    }

    /// [`fix_file`](Self::fix_file) by path, for what cannot be opened (a Unix socket).
    pub fn fix_path(self, p: &Path) -> io::Result<()> {
        let m = fs::metadata(p)?;
        if !may_change(&m) {
            return Ok(());
        }
        if let Some(gid) = self.gid().filter(|&g| g != m.gid()) {
            allowed(std::os::unix::fs::chown(p, None, Some(gid)))?;
        }
        if m.mode() & 0o7777 != self.file_mode() {
            fs::set_permissions(p, fs::Permissions::from_mode(self.file_mode()))?;
        }
        Ok(())
    }
}

/// Whether this process may change an inode's mode and group: it owns it, or is root.
fn may_change(m: &fs::Metadata) -> bool {
    let me = effective_uid();
    me == 0 || m.uid() == me
}

/// A group change is made when allowed: a user outside the group (who can write the log
/// directory only through its "other" bits) keeps its own group.
fn allowed(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
        other => other,
    }
}

/// Syncs the directory holding `path`, so a new or renamed entry survives power loss.
fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// `.<name>.<pid>-<seq>.tmp` next to `path`.
fn temp_path(path: &Path) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(
        ".{}.{}-{}.tmp",
        name.unwrap_or_default(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Creates `dir` and each missing parent with exactly `mode` (and group `gid` when given)
/// whatever the umask: each is made under a temporary name, chown-ed and chmod-ed, then
/// renamed into place, so it is never seen with another mode. When `dir` existed with
/// another mode or group they are forced on it (a `chmod` that changes nothing still
/// dirties the inode, a metadata write for every one-shot writer, so it is skipped then);
/// with a group, a directory this process may not change is left alone. Parents that
/// existed are left alone.
pub(crate) fn create_dirs(dir: &Path, mode: u32, gid: Option<u32>) -> io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .take_while(|p| fs::symlink_metadata(p).is_err())
        .collect();
    for p in missing.iter().rev() {
        create_dir_in_place(p, mode, gid)?;
    }
    let m = fs::metadata(dir)?;
    if m.mode() & 0o7777 == mode && gid.is_none_or(|g| g == m.gid()) {
        return Ok(());
    }
    if gid.is_some() && !may_change(&m) {
        return Ok(());
    }
    set_dir_mode(dir, &m, mode, gid)
}

/// Makes the missing directory `p` appear with its final mode and group at once: a temporary
/// directory next to it gets them, then is renamed into place. A plain `mkdir` shows the
/// directory for an instant with the umask's mode (2750 for 2770), and another member of the
/// group whose writer finds it then cannot create anything in it (EACCES on `recorder/slots`
/// while three users' writers opened a new shared log at once). When another process placed
/// its own first, theirs is used (the leaf is checked by the caller; parents are theirs).
fn create_dir_in_place(p: &Path, mode: u32, gid: Option<u32>) -> io::Result<()> {
    let tmp = temp_path(p);
    fs::DirBuilder::new().mode(mode).create(&tmp)?;
    let placed = fs::metadata(&tmp)
        .and_then(|m| set_dir_mode(&tmp, &m, mode, gid))
        .and_then(|()| rename_noreplace(&tmp, p));
    let Err(e) = placed else {
        return Ok(());
    };
    let _ = fs::remove_dir(&tmp);
    // Another process's directory is there first (EEXIST): theirs is used. It is never
    // replaced, even empty: that process may be about to create a file in it, which fails
    // with ENOENT in a directory renamed over.
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Ok(()),
        _ => Err(e),
    }
}

/// `rename(from, to)` that fails with EEXIST instead of replacing an existing `to`
/// (`renameat2` with `RENAME_NOREPLACE`). On a file system without it (EINVAL) a directory is
/// moved with `rename`, which replaces only an empty directory: the race this avoids then
/// remains there.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (Ok(f), Ok(t)) = (
        CString::new(from.as_os_str().as_bytes()),
        CString::new(to.as_os_str().as_bytes()),
    ) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    #[expect(unsafe_code, reason = "renameat2(2) with RENAME_NOREPLACE")]
    // SAFETY: both are NUL-terminated strings that outlive the call, which only reads them;
    // AT_FDCWD resolves relative paths as `fs::rename` does.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => fs::rename(from, to),
        _ => Err(e),
    }
}

fn set_dir_mode(p: &Path, m: &fs::Metadata, mode: u32, gid: Option<u32>) -> io::Result<()> {
    if let Some(g) = gid.filter(|&g| g != m.gid()) {
        allowed(std::os::unix::fs::chown(p, None, Some(g)))?;
    }
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

/// Readies the log directory of a writer and returns its policy: an existing directory must
/// be writable by this process ([`check_access`]); a shared one is used as it is; a missing
/// one is created with `mode` and `group` (the log is shared if `mode` is group-writable);
/// an existing private one is given `mode` (as every private directory is).
pub(crate) fn prepare_log_dir(dir: &Path, mode: u32, group: Option<u32>) -> Result<Sharing> {
    let existing = fs::metadata(dir).ok();
    if existing.is_some() {
        check_access(dir, true)?;
    }
    match existing.map(|m| Sharing::of_metadata(&m)) {
        Some(s) if s.is_shared() => Ok(s),
        _ => {
            create_dirs(dir, mode, group).map_err(|e| Error::io("create directory", dir, e))?;
            Sharing::of_dir(dir).map_err(|e| Error::io("stat", dir, e))
        }
    }
}

/// Fails with [`Error::NoAccess`], a sentence that names the group to join, when this
/// process may not write in (with `write`) or read the log directory `dir`. Any other
/// outcome (the directory is missing, its parent cannot be searched) is left to the
/// operation that follows to report.
pub fn check_access(dir: &Path, write: bool) -> Result<()> {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return Ok(());
    };
    let want = libc::X_OK | if write { libc::W_OK } else { libc::R_OK };
    // SAFETY: `c` is a NUL-terminated string that outlives the call, which only reads it;
    // AT_FDCWD makes a relative path relative to the working directory as everywhere else.
    #[expect(
        unsafe_code,
        reason = "faccessat(2) with AT_EACCESS: the effective ids, as the kernel checks them"
    )]
    let rc = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), want, libc::AT_EACCESS) };
    if rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EACCES) {
        return Ok(());
    }
    let Ok(m) = fs::metadata(dir) else {
        return Ok(());
    };
    Err(no_access(dir, &m, write))
}

fn no_access(dir: &Path, m: &fs::Metadata, write: bool) -> Error {
    let verb = if write { "write" } else { "read" };
    let mode = m.mode() & 0o7777;
    let group = group_name(m.gid()).unwrap_or_else(|| m.gid().to_string());
    let shared = Sharing::of_metadata(m).is_shared();
    let d = dir.display();
    let message = if shared && !in_group(m.gid()) {
        format!(
            "cannot {verb} the shared log {d} (owned by group {group}, mode {mode:04o}): your \
             user is not in group {group}. Join it (sudo usermod -aG {group} $USER, then log \
             in again) or use a per-user log with --dir or SEGLOG_DIR"
        )
    } else if shared {
        format!(
            "cannot {verb} the shared log {d} (group {group}, mode {mode:04o}) although your \
             user is in group {group}; check the permissions and ACLs of {d}"
        )
    } else {
        let owner = match m.uid() {
            0 => "root".to_string(),
            uid => format!("uid {uid}"),
        };
        format!(
            "cannot {verb} the log {d} (owned by {owner}, mode {mode:04o}): it is private to \
             its owner. Use a per-user log with --dir or SEGLOG_DIR, or have the administrator \
             make it a shared log (group-writable: chgrp GROUP {d}; chmod 2770 {d}; see \
             \"System mode\" in the README)"
        )
    };
    Error::NoAccess {
        path: dir.to_path_buf(),
        group: shared.then_some(group),
        message,
    }
}

/// The effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes nothing, cannot fail and touches no memory of ours.
    #[expect(unsafe_code, reason = "libc geteuid()")]
    unsafe {
        libc::geteuid()
    }
}

/// Whether the process has group `gid` (effective or supplementary): what the kernel checks
/// group permissions against, so a user added to a group since logging in is not in it yet.
fn in_group(gid: u32) -> bool {
    // SAFETY: getegid takes nothing and cannot fail.
    #[expect(unsafe_code, reason = "libc getegid()")]
    let egid = unsafe { libc::getegid() };
    if egid == gid {
        return true;
    }
    let mut groups: Vec<libc::gid_t> = vec![0; 256];
    loop {
        let len = libc::c_int::try_from(groups.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `groups` is writable for `len` entries for the call; getgroups writes at
        // most that many and returns how many it wrote (or fails with EINVAL when too few).
        #[expect(unsafe_code, reason = "libc getgroups()")]
        let n = unsafe { libc::getgroups(len, groups.as_mut_ptr()) };
        match usize::try_from(n) {
            Ok(n) => return groups.get(..n).is_some_and(|g| g.contains(&gid)),
            Err(_) if groups.len() < 1 << 16 => groups.resize(groups.len() * 4, 0),
            Err(_) => return false,
        }
    }
}

/// The name of group `gid` (`getgrgid_r`: /etc/group or whatever NSS serves).
pub fn group_name(gid: u32) -> Option<String> {
    lookup_group(|grp, buf, len, result| {
        // SAFETY: `grp`, `buf` (writable for `len` bytes) and `result` are valid for the
        // call, which writes the entry into them.
        #[expect(unsafe_code, reason = "libc getgrgid_r()")]
        unsafe {
            libc::getgrgid_r(gid, grp, buf, len, result)
        }
    })
    .map(|(name, _)| name)
}

/// The id of group `name`, if it exists (`getgrnam_r`).
pub fn group_id(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    lookup_group(|grp, buf, len, result| {
        // SAFETY: `c` is NUL-terminated and outlives the call; `grp`, `buf` (writable for
        // `len` bytes) and `result` are valid for the call, which writes the entry into them.
        #[expect(unsafe_code, reason = "libc getgrnam_r()")]
        unsafe {
            libc::getgrnam_r(c.as_ptr(), grp, buf, len, result)
        }
    })
    .map(|(_, gid)| gid)
}

/// Runs a `getgr*_r` call with a growing buffer; the entry's name and gid.
fn lookup_group(
    mut call: impl FnMut(
        *mut libc::group,
        *mut libc::c_char,
        libc::size_t,
        *mut *mut libc::group,
    ) -> libc::c_int,
) -> Option<(String, u32)> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = call(grp.as_mut_ptr(), buf.as_mut_ptr(), buf.len(), &mut result);
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        // SAFETY: on success `result` points at `grp`, filled by the call; its `gr_name`
        // points at a NUL-terminated string inside `buf`, alive until the end of this scope.
        #[expect(unsafe_code, reason = "reading the entry getgr*_r filled in")]
        let (name, gid) = unsafe {
            let g = &*result;
            (
                CStr::from_ptr(g.gr_name).to_string_lossy().into_owned(),
                g.gr_gid,
            )
        };
        return Some((name, gid));
    }
}

#[cfg(test)]
#[path = "perms_tests.rs"]
mod tests;
