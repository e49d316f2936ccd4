#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backlog;
pub mod batch;
pub mod cli;
pub mod config;
pub mod control;
pub mod cursor;
pub mod daemon;
pub mod deadletter;
pub mod engine;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod policy;
pub mod retry;
pub mod scheme;
/// The wire protocol (the `protocol` crate), under its historical path.
pub use protocol;
pub mod state;
pub mod status;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
pub mod transport;

#[cfg(test)]
mod testutil;
