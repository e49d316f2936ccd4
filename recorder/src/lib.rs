#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod counters;
mod errors;
#[allow(unsafe_code)] // The C API: raw pointers from C; every block has a SAFETY comment.
pub mod ffi;
pub mod ratelimit;
/// The record types and codec (the `records` crate), under their historical path.
pub use records as record;
pub mod system;
mod writer;

pub use record::{Classification, EventId, Receipt, RecordId, Severity, ValidationError};
pub use writer::{OpenError, RecordBuilder, RecordError, Recorder, MAX_HEADER_LEN, MAX_SLOTS};
pub mod probes;
