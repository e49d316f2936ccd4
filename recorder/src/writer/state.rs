//! A writer's slot lock and its in-memory state (context and classification index).
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use segment_log::Sharing;

use super::{MAX_SLOTS, SLOTS_DIR};
use crate::errors::OpenError;
use crate::record::{Classification, Context};

pub(super) fn acquire_slot(state_dir: &Path, sharing: Sharing) -> Result<(u32, File), OpenError> {
    let dir = state_dir.join(SLOTS_DIR);
    let err = |path: &Path, source| OpenError::State {
        path: path.to_path_buf(),
        source,
    };
    sharing.create_dir_all(&dir).map_err(|e| err(&dir, e))?;
    for n in 0..MAX_SLOTS {
        let path = dir.join(format!("{n}.lock"));
        let f = sharing
            .open_or_create(std::fs::OpenOptions::new().write(true), &path)
            .map_err(|e| err(&path, e))?;
        if f.try_lock().is_ok() {
            return Ok((n, f));
        }
    }
    Err(err(
        &dir,
        std::io::Error::other(format!("all {MAX_SLOTS} writer slots are in use")),
    ))
}

/// FxHash-style hasher for the classification index (keys are local, not attacker-chosen
/// across a network boundary, and SipHash cost more than the rest of the lookup).
#[derive(Default, Clone, Copy)]
pub(super) struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(super) type ClassIndex = HashMap<Classification, u32, std::hash::BuildHasherDefault<FxHasher>>;

/// Tables up to this size are searched by pointer first (a builder cloned from the one that
/// was interned shares its allocation), before hashing the text.
const PTR_SCAN_MAX: usize = 16;

pub(super) struct WriterState {
    pub(super) ctx: Context,
    pub(super) index: ClassIndex,
    pub(super) machine_valid_until_ms: i64,
    pub(super) base_segment: u64,
}

impl WriterState {
    pub(super) fn class_index(&self, c: &Classification) -> Option<u32> {
        if self.ctx.classifications.len() <= PTR_SCAN_MAX {
            if let Some(i) = self.ctx.classifications.iter().position(|k| k.ptr_eq(c)) {
                return Some(i as u32);
            }
        }
        self.index.get(c).copied()
    }
}
