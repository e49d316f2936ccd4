#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
mod auth;
pub mod cli;
pub mod config;
mod connections;
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod fixtures;
pub mod forward;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod ingest;
pub mod metrics;
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod pg_server;
mod routes;
mod server;
mod state;
pub mod store;
pub mod ui;

pub use config::{CollectorSection, ConfigError, Limits, ServerConfig, TlsFiles};
pub use server::{RunningServer, Server, ServerError};
