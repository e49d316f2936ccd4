//! Decodes the sealed-count, clean-close mark and trim-ledger test vectors in FORMAT.md byte
//! for byte.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::ledger::{self, TrimEntry, TrimReason};
use crate::seal_count;

const SPEC: &str = include_str!("../../FORMAT.md");

/// The bytes of the `offset: hex ...` lines of the section under `heading` (up to the next
/// `## ` heading), placed at their offsets.
pub(crate) fn section_bytes(heading: &str) -> Vec<u8> {
    let section = SPEC
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("FORMAT.md has {heading}"));
    let section = section.split("\n## ").next().unwrap();
    let mut out = Vec::new();
    for line in section.lines() {
        let Some((off, hexes)) = line.split_once(": ") else {
            continue;
        };
        let Ok(off) = usize::from_str_radix(off.trim(), 16) else {
            continue;
        };
        for (i, h) in hexes.split_whitespace().enumerate() {
            if out.len() <= off + i {
                out.resize(off + i + 1, 0);
            }
            out[off + i] = u8::from_str_radix(h, 16).unwrap();
        }
    }
    out
}

#[test]
fn format_md_sealed_count_vector_decodes_exactly() {
    let b = section_bytes("## Sealed record count");
    assert_eq!(b.len(), 152);
    assert_eq!(seal_count::decode(&b, 1), Some(421));
    assert_eq!(seal_count::decode(&b, 2), None);
    assert_eq!(seal_count::encode(1, 421)[..], b[136..152]);
}

#[test]
fn format_md_trim_ledger_vector_decodes_exactly() {
    let b = section_bytes("## Trim ledger");
    assert_eq!(b.len(), 96);
    let l = ledger::decode(&b).unwrap();
    assert_eq!((l.damaged, l.torn_tail), (0, 0));
    let want = TrimEntry {
        segment: 7,
        records: 421,
        bytes: 65536,
        first_offset: 280,
        last_offset: 65400,
        from_offset: 30000,
        records_from: 200,
        wall_ns: 1_700_000_000_000_000_000,
        reason: TrimReason::Size,
    };
    assert_eq!(l.entries.values().collect::<Vec<_>>(), vec![&want]);
    let mut enc = ledger::encode_header().to_vec();
    enc.extend_from_slice(&want.encode());
    assert_eq!(enc, b);
    assert_eq!(l.records_lost(30000, 7, 1, None), Some(200));
}

#[test]
fn format_md_clean_close_mark_vector_decodes_exactly() {
    let b = section_bytes("## Clean-close mark");
    assert_eq!(b.len(), 168);
    assert_eq!(crate::close_mark::decode(&b, 1), Some(312));
    assert_eq!(crate::close_mark::decode(&b, 2), None);
    assert_eq!(crate::close_mark::encode(1, 312)[..], b[152..168]);
}
