//! The forwarder's persistent cursor: `<data_dir>/forward/cursor`, one line
//! `<segment> <offset>`, replaced atomically (temp file, fsync, rename, fsync of the
//! directory) after each acknowledged batch.
use std::io::Write;
use std::path::{Path, PathBuf};

use segment_log::Position;

pub(super) const FILE: &str = "cursor";

pub(super) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The saved cursor; `Ok(None)` when there is none yet. A file that does not parse is an
/// error for the caller to report (it restarts from the queue's start: at least once).
pub(super) fn load(dir: &Path) -> std::io::Result<Option<Position>> {
    let text = match std::fs::read_to_string(path(dir)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(segment)), Some(Ok(offset)), None) => Ok(Some(Position { segment, offset })),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{:?} is not \"<segment> <offset>\"", text.trim()),
        )),
    }
}

pub(super) fn save(dir: &Path, p: Position) -> std::io::Result<()> {
    let tmp = dir.join(".cursor.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{} {}", p.segment, p.offset)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path(dir))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load(d.path()).unwrap(), None);
        let p = Position {
            segment: 3,
            offset: 4096,
        };
        save(d.path(), p).unwrap();
        assert_eq!(load(d.path()).unwrap(), Some(p));
        std::fs::write(path(d.path()), "3 x").unwrap();
        assert!(load(d.path()).is_err());
    }
}
