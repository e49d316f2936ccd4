# Recipes mirror the README and CI.
default: test

# The main job end to end on an embedded default.
demo:
    cargo run --release -- demo --exit

# The README's test command (what CI runs).
test:
    cargo test --workspace

# The device binary: no collector, the `device` profile (LTO, stripped). Checks its size
# against the 4 MiB budget (.ci/device-budget, also run by CI) and prints how many crates it
# links.
device:
    .ci/device-budget
    cargo tree -p seglog --no-default-features -e normal,no-proc-macro --prefix none | sed 's/ (\*)//' | sort -u | wc -l

# The C API, installed into PREFIX (lib/libseglog.so.0, include/seglog.h, lib/pkgconfig/seglog.pc).
install-capi prefix="/usr/local":
    cargo build --release -p capi
    capi/install.sh {{prefix}}

lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

ci:
    bash .ci/run

# MSRV (rust-version in the root Cargo.toml): no locked crate declares a newer Rust, our own
# std API use fits it (clippy's incompatible_msrv, tests included via clippy.toml), and the
# whole workspace type-checks with that exact toolchain (installed by rustup if it can reach
# its servers; skipped with a message if not). The last step is a full check build (~7 min
# on the 2-core machine, own target dir), which is why CI runs only the first.
msrv:
    #!/usr/bin/env bash
    set -euo pipefail
    python3 .ci/msrv-check
    cargo clippy --workspace --all-targets -- -D clippy::incompatible_msrv
    v=$(python3 .ci/msrv-check --print)
    if rustup run "$v" rustc --version >/dev/null 2>&1 \
        || rustup toolchain install "$v" --profile minimal; then
        CARGO_TARGET_DIR=target/msrv cargo "+$v" check --workspace --all-targets --locked
    else
        echo "msrv: Rust $v is not installed and rustup cannot install it: not built with it"
    fi

# Loom model of the reservation protocol.
loom:
    RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo test -p segment-log --lib loom

bench:
    cargo bench -p seglog-benches

# Every issue-14 performance target in one interleaved run; prints the tables of
# BENCHMARKS.md ("Targets") with the load average beside each (also written to
# target/seglog-bench/targets.md). Env: SEGLOG_TARGETS_ROUNDS (5), SEGLOG_TARGETS_RECORDS
# (1000000), SEGLOG_TARGETS_ONLY=append,loghub,record,threads,procs,rotation,scan.
# The upload row has its own harness: `just bench-upload`.
bench-targets:
    cargo bench -p seglog-benches --bench targets

# The upload pass to a loopback sink (MB/s of records per core, BENCHMARKS.md "Upload"):
# the filter matches no criterion row, so only the report (median of 5 passes) runs.
bench-upload:
    cargo bench -p seglog-benches --bench upload -- report-only

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
    SEGLOG_TORTURE_SECS={{seconds}} cargo test --release --test e2e -- --ignored --nocapture torture::torture_pipeline_soak

# Long soaks: crash torture, model tests with many more cases, and the whole-pipeline
# torture (tests/e2e/torture.rs) for SEGLOG_TORTURE_SECS seconds of faults (default 300).
soak:
    SEGLOG_SOAK_ITERS=5000 PROPTEST_CASES=2000 cargo test --workspace --release -- --include-ignored
