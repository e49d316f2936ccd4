//! The collector's integration tests, one binary (one link instead of six): each module is
//! one area, and its tests keep their names under it (`cargo test -p collector --test it
//! ingest_http::`). They start real collectors on 127.0.0.1 with temporary data directories.

mod common;

mod api_http;
mod availability;
mod extreme_values;
mod ingest_http;
mod tls;
mod ui_browser;
