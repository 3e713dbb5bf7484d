#!/usr/bin/env bash
# Fuzzes everything edgecap parses from outside (tests/fuzz: segment, cursor, quarantine and cut
# files through recovery and `log verify`/`log dump`, the frame and payload decoder, ingest
# request lines, the config file, upstream MQTT commands) with cargo-fuzz and libFuzzer: each
# target for a fixed time from its seed corpus. Prints the executions per target and exits
# non-zero if any target crashed, hung (-timeout), or went over the memory limits.
#   EDGECAP_FUZZ_SECS     seconds per target                          (default 20; CI 15)
#   EDGECAP_FUZZ_RUNS     executions per target instead of a time     (tests/soak.sh: 10000000)
#   EDGECAP_FUZZ_TARGETS  the targets to run, space-separated         (default: all six)
# A crashing input is kept in target/fuzz-work/artifacts/TARGET/; replay one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz --target-dir target/fuzz TARGET FILE
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/common.sh
# libfuzzer-sys compiles libFuzzer (C++).
apt_need g++

# Pinned so every run fuzzes with the same tool.
CARGO_FUZZ_VERSION=0.13.2
secs=${EDGECAP_FUZZ_SECS:-20}
runs=${EDGECAP_FUZZ_RUNS:-}
if [ -n "$runs" ]; then
  budget=(-runs="$runs")
  budget_text="$runs executions"
else
  budget=(-max_total_time="$secs")
  budget_text="$secs s"
fi
read -r -a targets <<<"${EDGECAP_FUZZ_TARGETS:-segment_recovery frame_decode cursor_file ingest_line config upstream_command}"

# cargo-fuzz builds with -Zsanitizer=address (and cargo with other -Z flags); stable is the only
# toolchain here, and RUSTC_BOOTSTRAP=1 makes it accept them.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== cargo install cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
echo "== $(cargo fuzz --version)"

# Everything a run writes goes under target/ (git-ignored): libFuzzer adds the inputs it finds
# to the corpus directory it is given, so it gets a copy of the seeds, never tests/fuzz/corpus.
work=target/fuzz-work
rm -rf "$work"
mkdir -p "$work"
# The targets make thousands of temp data directories a second: in memory, and removed at the
# end with whatever a crashed run left behind.
tmp=$(mktemp -d /dev/shm/edgecap-fuzz.XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One cargo build for all targets (each `cargo fuzz run` below then finds them built), into
# target/fuzz: under the main target/ (so `cargo clean` removes it), apart from the main build
# (the sanitizer flags change every crate).
fuzz_dir=(--fuzz-dir tests/fuzz --target-dir target/fuzz)
echo "== cargo fuzz build"
cargo fuzz build "${fuzz_dir[@]}"

# final_stat NAME: VALUE of libFuzzer's `stat::NAME: VALUE` line (-print_final_stats=1) in
# $log, or ? when the run ended before printing it.
final_stat() {
  local value
  value=$(sed -n "s/^stat::$1: *//p" "$log" | tail -n 1)
  echo "${value:-?}"
}

results=()
failed=()
for target in "${targets[@]}"; do
  corpus=$work/corpus/$target
  artifacts=$work/artifacts/$target
  log=$work/$target.log
  mkdir -p "$corpus" "$artifacts"
  cp -R "tests/fuzz/corpus/$target/." "$corpus/"
  echo "== fuzz $target ($budget_text, $(find "$corpus" -type f | wc -l) seeds)"
  status=0
  # -rss_limit_mb and -malloc_limit_mb turn an unbounded allocation into a failure, -timeout
  # a hang; -artifact_prefix (the last one wins over cargo-fuzz's) keeps crashes out of the repo.
  TMPDIR=$tmp cargo fuzz run "${fuzz_dir[@]}" "$target" "$corpus" -- \
    "${budget[@]}" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1 || status=$?
  line=$(printf 'FIGURES fuzz %-18s %10s executions (%s/s, %s new inputs, peak %s MB)' "$target" \
    "$(final_stat number_of_executed_units)" "$(final_stat average_exec_per_sec)" \
    "$(final_stat new_units_added)" "$(final_stat peak_rss_mb)")
  if [ "$status" -eq 0 ]; then
    results+=("$line  ok")
  else
    # The end of libFuzzer's output holds the panic message or the sanitizer report.
    tail -n 80 "$log"
    results+=("$line  FAILED (exit $status; $log, $artifacts/)")
    failed+=("$target")
  fi
done

echo "== fuzz results ($budget_text per target)"
printf '%s\n' "${results[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAIL: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} passed, 0 failed"
