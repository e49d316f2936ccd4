//! # recorder
//!
//! seglog's probe library, the libtelemetry analogue: probes build records (classification,
//! severity, payload, optional event id), and [`Recorder::record`] validates them, applies
//! the cross-process rate limits and appends them to the local segment log. The writer's
//! context (machine id, boot id, OS, kernel, ...) is collected once per process and stored
//! as the log's per-segment preamble, so a record's own header stays a few bytes.
//!
//! ```
//! use recorder::{config::Config, RecordBuilder, Recorder};
//! let dir = tempfile::tempdir()?;
//! let recorder = Recorder::open(&Config::for_dir(dir.path()))?;
//! let id = recorder.record(&RecordBuilder::parse("org.example/hello/world", 1)?.payload(b"hello"))?;
//! assert_eq!(id.to_string().len(), 32);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules: [`record`] (formats, validation, decoding, reading back), [`config`] (the
//! layered TOML configuration every seglog crate uses), [`ratelimit`] (limits shared by
//! all processes, dropped counts), [`probes`] (built-in probes), [`cli`] (`seglog record`,
//! `seglog probe`), [`ffi`] (the C API of `include/seglog.h`).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod counters;
mod errors;
#[allow(unsafe_code)] // The C API: raw pointers from C; every block has a SAFETY comment.
pub mod ffi;
pub mod fuzzing;
pub mod ratelimit;
pub mod record;
pub mod system;
mod writer;

pub use record::{Classification, EventId, RecordId, Severity, ValidationError};
pub use writer::{OpenError, RecordBuilder, RecordError, Recorder, MAX_HEADER_LEN, MAX_SLOTS};
pub mod probes;
