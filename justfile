# Recipes mirror the README and CI.
default: test

# The main job end to end on an embedded default.
demo:
    cargo run --release -- demo --exit

# The README's test command (what CI runs).
test:
    cargo test --workspace

lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

ci:
    bash .ci/run

# Loom model of the reservation protocol.
loom:
    RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p segment-log --release --lib loom

bench:
    cargo bench -p seglog-benches

# Peer comparison (commitlog, SQLite WAL, okaywal, yaque); a separate crate.
bench-compare:
    cd benches/compare && cargo bench

# Long fuzz runs (cargo-fuzz on stable needs RUSTC_BOOTSTRAP=1).
fuzz seconds="60":
    cargo install cargo-fuzz --locked || true
    cd fuzz && for t in $(RUSTC_BOOTSTRAP=1 cargo fuzz list); do RUSTC_BOOTSTRAP=1 cargo fuzz run $t -- -max_total_time={{seconds}}; done

# Long soaks: crash torture and model tests with many more cases.
soak:
    SEGLOG_SOAK_ITERS=5000 PROPTEST_CASES=2000 cargo test --workspace --release -- --include-ignored
