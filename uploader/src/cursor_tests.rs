//! Cursor file tests: round trips, every truncation, every bit flip, and the fallback between
//! the two copies.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]
use super::*;

fn sample() -> CursorState {
    CursorState {
        seq: 7,
        public_log_id: [9; 32],
        position: Position {
            segment: 12,
            offset: 4096,
        },
        inflight: Some((
            Position {
                segment: 12,
                offset: 4096,
            },
            Position {
                segment: 13,
                offset: 512,
            },
        )),
        written_wall_ms: 1_700_000_000_000,
    }
}

#[test]
fn cursor_round_trips_with_and_without_inflight_batch() {
    let s = sample();
    assert_eq!(CursorState::decode(&s.encode()).unwrap(), s);
    let s = CursorState {
        inflight: None,
        ..sample()
    };
    assert_eq!(CursorState::decode(&s.encode()).unwrap(), s);
}

#[test]
fn cursor_truncated_at_every_length_is_rejected() {
    let b = sample().encode();
    for n in 0..b.len() {
        assert!(
            matches!(CursorState::decode(&b[..n]), Err(CursorError::Length { len }) if len == n)
        );
    }
    let mut long = b.to_vec();
    long.push(0);
    assert!(CursorState::decode(&long).is_err());
}

#[test]
fn every_single_bit_flip_is_detected() {
    let b = sample().encode();
    for i in 0..b.len() * 8 {
        let mut m = b;
        m[i / 8] ^= 1 << (i % 8);
        assert!(
            CursorState::decode(&m).is_err(),
            "flip of bit {i} went unnoticed"
        );
    }
}

#[test]
fn newer_version_is_refused_by_name() {
    let mut b = sample().encode();
    b[8] = 2;
    assert_eq!(
        CursorState::decode(&b),
        Err(CursorError::UnsupportedVersion { found: 2, max: 1 })
    );
}

fn store_states(dir: &Path, n: u64) -> Vec<CursorState> {
    let mut store = CursorStore::open(dir).unwrap();
    store.load(&[9; 32]).unwrap();
    (0..n)
        .map(|i| {
            let mut s = CursorState {
                public_log_id: [9; 32],
                position: Position {
                    segment: 1,
                    offset: 256 + i * 8,
                },
                ..Default::default()
            };
            store.store(&mut s).unwrap();
            s
        })
        .collect()
}

#[test]
fn load_picks_the_newest_copy_and_new_writes_continue_the_sequence() {
    let d = tempfile::tempdir().unwrap();
    let states = store_states(d.path(), 5);
    let mut store = CursorStore::open(d.path()).unwrap();
    let l = store.load(&[9; 32]).unwrap();
    assert!(l.existed && l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(l.state, states[4]);
    let mut s = l.state;
    store.store(&mut s).unwrap();
    assert_eq!(s.seq, 6);
    assert_eq!(
        CursorStore::open(d.path())
            .unwrap()
            .load(&[9; 32])
            .unwrap()
            .state
            .seq,
        6
    );
}

#[test]
fn damaged_newest_copy_falls_back_to_the_previous_state_and_says_so() {
    for damage in 0..3 {
        let d = tempfile::tempdir().unwrap();
        let states = store_states(d.path(), 4);
        let newest = d.path().join(COPIES[(states[3].seq % 2) as usize]);
        let mut b = fs::read(&newest).unwrap();
        match damage {
            0 => b.truncate(37),
            1 => b[60] ^= 0x10,
            _ => b = Vec::new(),
        }
        fs::write(&newest, &b).unwrap();
        let l = CursorStore::open(d.path()).unwrap().load(&[9; 32]).unwrap();
        assert_eq!(l.state, states[2], "damage {damage}");
        assert!(
            l.warnings.iter().any(|w| w.contains("unusable")),
            "{:?}",
            l.warnings
        );
        assert!(
            l.warnings.iter().any(|w| w.contains("other copy")),
            "{:?}",
            l.warnings
        );
    }
}

#[test]
fn both_copies_damaged_starts_from_the_oldest_segment_without_failing() {
    let d = tempfile::tempdir().unwrap();
    store_states(d.path(), 2);
    for name in COPIES {
        fs::write(d.path().join(name), b"garbage").unwrap();
    }
    let l = CursorStore::open(d.path()).unwrap().load(&[9; 32]).unwrap();
    assert_eq!(l.state.position, Position::default());
    assert!(
        l.warnings.iter().any(|w| w.contains("oldest segment")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn every_truncation_and_bit_flip_of_the_newest_file_on_disk_loads() {
    let d = tempfile::tempdir().unwrap();
    let states = store_states(d.path(), 3);
    let newest = d.path().join(COPIES[(states[2].seq % 2) as usize]);
    let good = fs::read(&newest).unwrap();
    let mut variants: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
    variants.extend((0..good.len() * 8).step_by(7).map(|i| {
        let mut m = good.clone();
        m[i / 8] ^= 1 << (i % 8);
        m
    }));
    for v in variants {
        fs::write(&newest, &v).unwrap();
        let l = CursorStore::open(d.path()).unwrap().load(&[9; 32]).unwrap();
        assert_eq!(l.state, states[1]);
    }
}

#[test]
fn cursor_of_another_log_is_ignored() {
    let d = tempfile::tempdir().unwrap();
    store_states(d.path(), 2);
    let l = CursorStore::open(d.path()).unwrap().load(&[1; 32]).unwrap();
    assert_eq!(l.state.position, Position::default());
    assert_eq!(l.state.public_log_id, [1; 32]);
    assert!(l.warnings.iter().any(|w| w.contains("another log")));
}

#[test]
fn cursor_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    store_states(d.path(), 2);
    for name in COPIES {
        let mode = fs::metadata(d.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
