//! The uploader (being built).
#![forbid(unsafe_code)]
pub mod cli;
#[doc(hidden)]
pub mod fuzzing;
pub mod protocol;
mod wire;
