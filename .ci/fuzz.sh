#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/) for a bounded time: PICOCACHE_FUZZ_SECONDS
# each (60 by default; 0 skips), starting from the committed corpus
# (fuzz/corpus/<target>, which engine/tests/fuzz_corpus.rs also replays as an
# ordinary test). New inputs go to fuzz/target/corpus-<target>, crashes to
# fuzz/artifacts/<target>. Prints the executions of each target.
#
# cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them. cargo-fuzz itself is installed if missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${PICOCACHE_FUZZ_SECONDS:-60}
if [ "$secs" -le 0 ]; then
  echo "fuzz: skipped (PICOCACHE_FUZZ_SECONDS=$secs)"
  exit 0
fi
if ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
status=0
for t in open_bytes ops_model; do
  mkdir -p "target/corpus-$t"
  log="target/fuzz-$t.log"
  echo "fuzz: $t for ${secs}s"
  # -timeout: one input running 30 s counts as a hang (a failure).
  if cargo fuzz run "$t" "target/corpus-$t" "corpus/$t" -- \
      -max_total_time="$secs" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
      >"$log" 2>&1; then
    runs=$(grep -oE "Done [0-9]+ runs in [0-9]+ second" "$log" | tail -1 | grep -oE "[0-9]+" | head -1)
    echo "fuzz: $t: ok, ${runs:-?} executions in ${secs}s, no crash, hang or leak"
  else
    echo "fuzz: $t FAILED (log: fuzz/$log)"
    # The cause (a panic's message, a sanitizer's report) comes first in the
    # log; the tail has the input and how to reproduce it.
    grep -m1 -E "^INFO: Seed:" "$log" || true
    grep -m8 -E "panicked at|^ERROR: |^SUMMARY: |assertion" "$log" || true
    tail -40 "$log"
    status=1
  fi
done
exit $status
