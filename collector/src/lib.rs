//! The reference collector (skeleton; being built).
#![forbid(unsafe_code)]
pub mod cli;
