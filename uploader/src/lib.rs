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
#[doc(hidden)]
pub mod fuzzing;
pub mod policy;
pub mod protocol;
pub mod state;
pub mod status;
#[doc(hidden)]
pub mod testing;
pub mod transport;
mod wire;

#[cfg(test)]
mod testutil;
