#!/usr/bin/env bash
# Line coverage of the parser files reached by the fuzz corpora (clang source-based coverage):
# builds build-cov (PISO_FUZZ + PISO_COVERAGE: the targets with a plain main), runs every target once
# over its seeds (fuzz/corpus), the inputs found by scripts/fuzz.sh (build-fuzz/corpus) and the
# regression inputs (fuzz/regressions), and prints llvm-cov's report for the parser sources.
#   scripts/fuzz-coverage.sh        (run scripts/fuzz.sh first for a grown corpus)
set -euo pipefail
cd "$(dirname "$0")/.."
export PISO_DATA=${PISO_DATA:-$(pwd)/../shared}
CC=${FUZZ_CC:-clang} cmake -S . -B build-cov -DPISO_FUZZ=ON -DPISO_COVERAGE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-cov -j"$(nproc)" >/dev/null
rm -rf build-cov/prof && mkdir -p build-cov/prof
objects=()
for src in fuzz/fuzz_*.c; do
  t=$(basename "$src" .c)
  dirs=()
  for d in fuzz/corpus/$t build-fuzz/corpus/$t fuzz/regressions/$t; do [ -d "$d" ] && dirs+=("$d"); done
  LLVM_PROFILE_FILE=build-cov/prof/$t.profraw "build-cov/$t" "${dirs[@]}" >/dev/null 2>&1 || true
  objects+=(-object "build-cov/$t")
done
llvm-profdata merge -sparse -o build-cov/fuzz.profdata build-cov/prof/*.profraw
PARSERS=(src/formats/safetensors.c src/formats/gguf_read.c src/model/load_hf.c src/model/load_gguf.c
         src/model/load_llama2c.c src/tokenizer/load_hf_json.c src/tokenizer/load_gguf_vocab.c
         src/tokenizer/load_llama2c.c src/tokenizer/tok_common.c src/tokenizer/spm.c src/tokenizer/bpe_merge.c
         src/tokenizer/bpe_bytelevel.c src/tokenizer/detok.c src/tokenizer/nfc.c src/calib/imatrix.c src/quant/problem.c
         src/common/files.c)
llvm-cov report "${objects[@]:1}" -instr-profile=build-cov/fuzz.profdata "${PARSERS[@]}" | tee build-cov/coverage.txt
