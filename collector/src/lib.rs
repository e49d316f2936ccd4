#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
pub mod cli;
pub mod config;
mod connections;
#[doc(hidden)]
pub mod fixtures;
#[doc(hidden)]
pub mod fuzzing;
pub mod ingest;
pub mod metrics;
mod server;
pub mod store;
mod ui;

pub use config::{CollectorSection, Limits, ServerConfig, TlsFiles};
pub use server::{RunningServer, Server};
