#!/usr/bin/env bash
# Device footprint of the `seglog` binary (BENCHMARKS.md, "Device footprint"):
#   1. wake-ups of an idle `seglog probe pipe` (input open, nothing written);
#   2. write amplification of a slow writer: `probe pipe` fed 10 lines/s of 100 bytes into a
#      log whose active segment is already 3 MiB full (a long-running device): bytes the process
#      made dirty for writeback over its whole life (/proc/PID/io write_bytes, counted when a
#      page is dirtied, so no need to wait for writeback), read just before its input ends,
#      per payload byte;
#   3. a one-shot `seglog record` (hyperfine, when installed).
#
# Usage: benches/device_footprint.sh [SEGLOG_BIN] [IDLE_SECS] [SLOW_SECS]
#   SEGLOG_BIN defaults to target/release/seglog (build it: cargo build --release -p seglog).
#   Run two binaries one after the other (e.g. a copy of an older build) to compare them; the
#   machine is shared and noisy, so compare runs made in the same session.
#   Logs go under $SEGLOG_BENCH_DIR (default: the system temp dir; must be a disk file
#   system, not tmpfs, for write_bytes to mean anything).
set -euo pipefail

BIN=$(realpath "${1:-target/release/seglog}")
IDLE_SECS=${2:-60}
SLOW_SECS=${3:-60}
BASE=${SEGLOG_BENCH_DIR:-${TMPDIR:-/tmp}}
WORK=$(mktemp -d "$BASE/seglog-footprint.XXXXXX")
HOLDERS=()
cleanup() {
    for p in "${HOLDERS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Sum of voluntary context switches over every thread of $1.
wakeups() {
    cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s + 0}'
}

echo "binary: $BIN"

# 1. Idle wake-ups.
mkfifo "$WORK/idle.in"
sleep 1000000 > "$WORK/idle.in" &
HOLDERS+=($!)
"$BIN" --dir "$WORK/idle" probe pipe -c org.example/idle/line < "$WORK/idle.in" 2>/dev/null &
PROBE=$!
sleep 2
threads=$(ls /proc/$PROBE/task | wc -l)
a=$(wakeups $PROBE)
sleep "$IDLE_SECS"
b=$(wakeups $PROBE)
kill "$PROBE" 2>/dev/null || true
wait "$PROBE" 2>/dev/null || true
echo "idle probe pipe: $((b - a)) voluntary context switches in ${IDLE_SECS} s ($threads threads)"

# 2. Write amplification of a slow writer.
LOG="$WORK/slow"
line=$(head -c 100 /dev/zero | tr '\0' 'x')
# Prefill: 3 MiB of lines, fast, then drop the segment prepared ahead (not live) so the
# measured process decides for itself.
for _ in $(seq 30000); do echo "$line"; done | "$BIN" --dir "$LOG" probe pipe -c org.example/slow/line 2>/dev/null
rm -f "$LOG"/segments/*.prep
sync
mkfifo "$WORK/slow.in"
"$BIN" --dir "$LOG" probe pipe -c org.example/slow/line < "$WORK/slow.in" 2>/dev/null &
PROBE=$!
exec 3> "$WORK/slow.in"
# From the process's start: a writer that prepares ahead does so right after it opens.
w0=0
d0=$(awk '/^nr_dirtied / {print $2}' /proc/vmstat)
n=$((SLOW_SECS * 10))
for _ in $(seq "$n"); do
    echo "$line" >&3
    sleep 0.1
done
sleep 2 # the last batch is flushed after --flush-after (200 ms)
w1=$(awk '/^write_bytes/ {print $2}' /proc/$PROBE/io)
d1=$(awk '/^nr_dirtied / {print $2}' /proc/vmstat)
exec 3>&-
wait "$PROBE" 2>/dev/null || true
payload=$((n * 100))
echo "slow writer: $n records of 100 bytes in ${SLOW_SECS} s: write_bytes $((w1 - w0)) for $payload payload bytes" \
    "= $(awk -v w=$((w1 - w0)) -v p=$payload 'BEGIN {printf "%.2f", w / p}')x" \
    "(system-wide nr_dirtied meanwhile: $((d1 - d0)) pages)"
ls -l "$LOG"/segments | awk 'NR > 1 {print "  " $5, $9}'

# 3. One-shot record.
if command -v hyperfine >/dev/null; then
    "$BIN" --dir "$WORK/one" record -c org.example/a/b -s 1 -p x >/dev/null
    hyperfine -N --warmup 10 --runs 300 --export-json "$WORK/one.json" \
        "$BIN --dir $WORK/one record -c org.example/a/b -s 1 -p x" | grep -E "Time|Range"
    python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))["results"][0]; print("one-shot record: median %.2f ms, min %.2f ms, user %.2f ms, system %.2f ms" % (r["median"] * 1e3, r["min"] * 1e3, r["user"] * 1e3, r["system"] * 1e3))' "$WORK/one.json"
else
    echo "one-shot record: install hyperfine (apt-get install -y hyperfine) to measure"
fi
