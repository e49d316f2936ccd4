//! Replays the committed `config_parse` fuzz corpus (`fuzz/corpus/config_parse/`, including
//! every input a fuzzer run once crashed on) through the target's function on the stable
//! toolchain, so CI exercises the config decoder without libFuzzer. The other targets'
//! corpora are replayed by tests in their owning crates.

#[path = "../../fuzz/common/config_parse.rs"]
mod config_parse;

#[test]
fn config_parse_corpus_replays_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/config_parse");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("committed corpus") {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        config_parse::fuzz_config(&data);
        n += 1;
    }
    assert!(n >= 10, "only {n} corpus files in {}", dir.display());
}
