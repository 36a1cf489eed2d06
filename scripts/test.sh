#!/usr/bin/env bash
# The test command (README): release build + every test, then an ASan+UBSan build + the tests
# not labelled "slow", then a short coverage-guided fuzzing run of every parser (PISO_FUZZ_SECONDS,
# default 60, in all). Needs the Debian packages from scripts/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc)
# llama.cpp (npm node-llama-cpp) for the GGUF interop test, installed under .tools/
if [ -f scripts/setup-llamacpp.sh ]; then bash scripts/setup-llamacpp.sh; fi
# intact copies of llama.cpp's vocab test files, from the same package
bash scripts/setup-llamacpp-vocab.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$JOBS"
(cd build && ctest --output-on-failure -j"$JOBS")
cmake -S . -B build-asan -DPISO_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$JOBS"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j"$JOBS" -LE slow)
# libFuzzer + ASan + UBSan on every parser, a minute in all (scripts/fuzz.sh; longer runs: README)
bash scripts/fuzz.sh "${PISO_FUZZ_SECONDS:-60}"
