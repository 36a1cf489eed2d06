#!/usr/bin/env bash
# Installs the Debian packages piso needs to build and test. Safe to run twice.
set -euo pipefail
PKGS=(build-essential cmake pkg-config
      libopenblas-openmp-dev liblapacke-dev   # BLAS (GEMM/SYRK) and LAPACK (Cholesky), OpenMP flavour
      libpcre2-dev                            # Unicode pre-tokenizer regexes
      libcjson-dev                            # JSON parsing (config.json, tokenizer.json, headers)
      python3 python3-numpy                   # the independent GPTQ / compressed-tensors unpacker test
      clang libclang-rt-dev libomp-dev llvm)  # fuzzing: libFuzzer + ASan/UBSan, OpenMP for clang, llvm-cov
# node + npm run llama.cpp (npm package node-llama-cpp) in the interop test; keep an existing install.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "install-deps: ok"
