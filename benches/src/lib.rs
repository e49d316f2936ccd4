//! Shared helpers for the seglog benches.
