#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser (fuzz/fuzz_*.c): libFuzzer + ASan + UBSan (+ LSan), Debian clang.
#   scripts/fuzz.sh [SECONDS]     SECONDS in all (default 60), split evenly over the targets, one job
# Seeds: fuzz/corpus/<target>/ (kept in the repo); inputs found on the way go to build-fuzz/corpus/<target>/;
# a failing input is saved as build-fuzz/artifacts/<target>-crash-* and the script exits 1. A failing input,
# once fixed, goes to fuzz/regressions/<target>/ so that ctest (corpus_<target>) replays it.
# Prints executions per target and in all (also written to build-fuzz/fuzz-summary.tsv).
# Longer run (documented in the README): scripts/fuzz.sh 1800
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL=${1:-60}
export PISO_DATA=${PISO_DATA:-$(pwd)/../shared}
CC=${FUZZ_CC:-clang} cmake -S . -B build-fuzz -DPISO_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-fuzz -j"$(nproc)" >/dev/null
targets=()
for src in fuzz/fuzz_*.c; do targets+=("$(basename "$src" .c)"); done
n=${#targets[@]}
per=$(( TOTAL / n )); (( per >= 1 )) || per=1
mkdir -p build-fuzz/artifacts
summary=build-fuzz/fuzz-summary.tsv
printf "target\tseconds\texecutions\texec_per_s\tcorpus\tresult\n" > "$summary"
total=0 failed=0
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t"
  dict=fuzz/dict/${t#fuzz_}.dict
  args=(-max_total_time="$per" -print_final_stats=1 -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=20
        -max_len=65536 -artifact_prefix="build-fuzz/artifacts/$t-")
  [ -f "$dict" ] && args+=(-dict="$dict")
  # CI: a fixed mutation seed, so a red run can be replayed (FUZZ_SEED overrides; 0 = from the clock)
  seed=${FUZZ_SEED:-$([ "${CI:-}" = true ] && echo 1 || echo 0)}
  (( seed )) && args+=(-seed="$seed")
  log=build-fuzz/$t.log
  set +e
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "build-fuzz/$t" "${args[@]}" "build-fuzz/corpus/$t" "fuzz/corpus/$t" > "$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(ls "build-fuzz/corpus/$t" | wc -l)
  result=ok
  if (( rc != 0 )) && grep -q "skipped: no tokenizer" "$log" && [ "${CI:-}" != true ]; then
    result="skipped (no shared data; set PISO_DATA)"
  elif (( rc != 0 )); then
    result="FAILED (exit $rc, see $log)"; failed=$((failed + 1))
  fi
  total=$(( total + ${execs:-0} ))
  printf "%s\t%s\t%s\t%s\t%s\t%s\n" "$t" "$per" "${execs:-0}" "${rate:-0}" "$corpus" "$result" >> "$summary"
done
column -t -s $'\t' "$summary"
echo "total executions: $total ($n targets, $per s each)"
if (( failed )); then
  echo "fuzz: $failed target(s) failed; inputs in build-fuzz/artifacts/" >&2
  grep -h -A12 -E "ERROR|invariant failed|runtime error" build-fuzz/fuzz_*.log | head -60 >&2 || true
  exit 1
fi
