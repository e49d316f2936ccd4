#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod counters;
mod errors;
pub mod ratelimit;
/// The record types and codec (the `records` crate), under their historical path.
pub use records as record;
pub mod system;
mod writer;

pub use record::{Classification, EventId, Receipt, RecordId, Severity, ValidationError};
pub use writer::{OpenError, RecordBuilder, RecordError, Recorder, MAX_HEADER_LEN, MAX_SLOTS};
pub mod probes;

// Readers keep the contexts of slots below `records::MAX_SLOTS` in a table indexed by slot
// (`records::SlotContexts`) and any other slot in a map: the slots this recorder hands out
// must be the ones readers index directly.
const _: () = assert!(MAX_SLOTS == record::MAX_SLOTS);
