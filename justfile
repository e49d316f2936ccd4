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
    RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo test -p segment-log --lib loom

bench:
    cargo bench -p seglog-benches

# Device footprint of the release binary (BENCHMARKS.md, "Device footprint"): idle wake-ups,
# slow-writer write amplification, one-shot record (hyperfine when installed).
footprint bin="target/release/seglog" idle="60" slow="60":
    cargo build --release -p seglog
    benches/device_footprint.sh {{bin}} {{idle}} {{slow}}

# Peer comparison (commitlog, SQLite WAL, okaywal, yaque); a separate crate.
bench-compare:
    cd benches/compare && cargo bench

# Long fuzz runs: every cargo-fuzz target for `seconds` each (on stable, cargo-fuzz needs
# RUSTC_BOOTSTRAP=1). The committed seed corpora (fuzz/corpus/<target>) are read, never
# written: new inputs go to target/fuzz-corpus/<target>, crashes to
# target/fuzz-artifacts/<target>/. Fails if any target crashed.
fuzz seconds="60":
    #!/usr/bin/env bash
    set -u
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    failed=""
    for t in $(RUSTC_BOOTSTRAP=1 cargo fuzz list); do
        mkdir -p target/fuzz-corpus/$t target/fuzz-artifacts/$t
        RUSTC_BOOTSTRAP=1 cargo fuzz run $t target/fuzz-corpus/$t fuzz/corpus/$t -- \
            -max_total_time={{seconds}} -artifact_prefix=target/fuzz-artifacts/$t/ \
            -print_final_stats=1 || failed="$failed $t"
    done
    if [ -n "$failed" ]; then
        echo "fuzz: crashed:$failed (inputs in target/fuzz-artifacts/)"
        exit 1
    fi

# The whole-pipeline torture harness alone, for `seconds` of faults (RELIABILITY.md).
torture seconds="300":
    SEGLOG_TORTURE_SECS={{seconds}} cargo test --release --test torture -- --ignored --nocapture torture_pipeline_soak

# Long soaks: crash torture, model tests with many more cases, and the whole-pipeline
# torture (tests/torture.rs) for SEGLOG_TORTURE_SECS seconds of faults (default 300).
soak:
    SEGLOG_SOAK_ITERS=5000 PROPTEST_CASES=2000 cargo test --workspace --release -- --include-ignored
