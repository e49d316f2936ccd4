//! The `ledger_decode` fuzz target's entry point and its corpus replay test.

use crate::ledger::{self, TrimEntry, ENTRY_LEN, LEDGER_HEADER_LEN};
use crate::seal_count;

/// Decodes `data` as a trim ledger and as a sealed record count. Panics only if an invariant
/// breaks: an accepted entry that does not re-encode to its bytes, more entries than the
/// bytes hold, a count lookup that panics.
pub fn ledger_bytes(data: &[u8]) {
    let _ = seal_count::decode(data, 1);
    for chunk in data.chunks(ENTRY_LEN) {
        if let Some(e) = TrimEntry::decode(chunk) {
            assert_eq!(e.encode()[..], chunk[..], "canonical encoding");
        }
    }
    let Ok(l) = ledger::decode(data) else {
        return;
    };
    let body = data.len().min(ledger::MAX_LEDGER_BYTES) - LEDGER_HEADER_LEN;
    assert!(l.entries.len() as u64 + l.damaged <= (body / ENTRY_LEN) as u64);
    assert_eq!(l.torn_tail, (body % ENTRY_LEN) as u64);
    let _ = l.totals();
    // Lookups over ranges taken from the input itself (huge counts, overflowing ends).
    let word = |i: usize| {
        let mut a = [0u8; 8];
        if let Some(s) = data.get(i..i + 8) {
            a.copy_from_slice(s);
        }
        u64::from_le_bytes(a)
    };
    for e in l.entries.values() {
        assert_eq!(l.records_lost(0, e.segment, 1, None), Some(e.records));
        let _ = l.records_lost(word(0), e.segment, word(8), Some(word(16)));
        let _ = l.records_lost(e.from_offset, e.segment, 1, None);
    }
    let _ = l.records_lost(word(24), word(32), word(40), None);
}

#[cfg(test)]
mod tests {
    #[test]
    fn ledger_decode_corpus_replays_without_panics() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/ledger_decode");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).expect("committed corpus") {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            super::ledger_bytes(&data);
            n += 1;
        }
        assert!(n >= 6, "corpus has only {n} files");
    }
}
