//! Built-in probes: `hello`, `netstat`, `events-dir` and `pipe`.
use crate::{Receipt, RecordBuilder, RecordError, Recorder};

pub mod events_dir;
pub mod full_disk;
pub mod netstat;
pub mod pipe;

/// Classification of the hello probe's record.
pub const HELLO_CLASS: &str = "org.seglog/hello/world";

/// The hprobe equivalent: one record `org.seglog/hello/world`, severity 1, payload "hello".
/// Returns its receipt ([`Receipt::id`] derives the record id).
pub fn hello(rec: &Recorder) -> Result<Receipt, RecordError> {
    rec.record(&RecordBuilder::parse(HELLO_CLASS, 1)?.payload(b"hello"))
}
