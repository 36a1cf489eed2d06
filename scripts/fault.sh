#!/usr/bin/env bash
# Fault injection over small runs of every command (issue 15): the n-th allocation fails, the n-th
# write is short with ENOSPC, the n-th rename fails. Builds build-fault (ASan + UBSan + LSan, the CLI
# linked with tests/fault/fault_inject.c) and checks after every injected fault: the command exits
# 0 or 1 (never a crash, a sanitizer or leak report), a failure prints "piso <cmd>: error: ...",
# and no partial or temporary output is left behind.
#   scripts/fault.sh [STRIDE]   allocation n = 1..64, then every STRIDE-th (default 1: all of them)
#   FAULT_ONLY="layer quantize-hf" scripts/fault.sh 1   only the named commands (names as in CMDS below)
# Prints faults injected / survived per command and kind; failures are listed in build-fault/fault-failures.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
STRIDE=${1:-1}
export PISO_DATA=${PISO_DATA:-$(pwd)/../shared}
D=$PISO_DATA
cmake -S . -B build-fault -DPISO_SANITIZE=ON -DPISO_FAULT=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null || exit 1
cmake --build build-fault -j"$(nproc)" --target piso >/dev/null || exit 1
P=$(pwd)/build-fault/piso
W=$(mktemp -d /tmp/piso-fault.XXXXXX)
trap 'rm -rf "$W"' EXIT
export OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
M=$D/models/stories260K/stories260K.bin
CAL=$D/data/tinystories/TinyStories-valid.small30KB.txt
head -c 3000 "$D/data/tinystories/tinystories_sample.cs336.txt" > "$W/text.txt"
python3 - "$W/p.safetensors" <<'PY'
import json, struct, sys
N, D = 4, 8
W = [((i * 37) % 17) / 17 - 0.5 for i in range(N * D)]
H = [float(1 + i) if i == j else 0.0 for i in range(D) for j in range(D)]
hdr = {"weight": {"dtype": "F32", "shape": [N, D], "data_offsets": [0, 4 * N * D]},
       "hessian": {"dtype": "F32", "shape": [D, D], "data_offsets": [4 * N * D, 4 * N * D + 4 * D * D]}}
h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + struct.pack("<%df" % (N * D + D * D), *W, *H))
PY
# name | arguments (OUT is the output path inside a fresh directory)
CMDS=(
  "tokenize-spm|tokenize --tokenizer $D/models/stories260K/tok512.bin --text 'Once upon a time'"
  "tokenize-hf|tokenize --tokenizer $D/models/stories260K-hf/tokenizer.json --text 'Once upon a time'"
  "perplexity|perplexity --model $M --text $W/text.txt --ctx 64"
  "layer|layer --problem $W/p.safetensors --format int3 --out OUT.safetensors"
  "quantize-gguf|quantize --model $M --type Q4_0 --out OUT.gguf"
  "quantize-hf|quantize --model $M --format int4 --rounding rtn --scale absmax --out OUT"
  "imatrix|imatrix --model $M --calib $CAL --ctx 64 --chunks 1 -o OUT.gguf"
)
failures=build-fault/fault-failures.txt
: > "$failures"
printf "%-14s %-7s %9s %9s\n" command kind injected survived
grand=0 grand_ok=0
run_one() { # name args env -> 0 if the run survived
  local name=$1 args=$2 env=$3 out=$W/out
  rm -rf "$out"; mkdir -p "$out"
  local a=${args//OUT/$out\/o}
  env $env PISO_FAULT_REPORT="$W/report" timeout 60 bash -c "$P $a --quiet" >/dev/null 2>"$W/err"
  local rc=$? why=""
  if (( rc != 0 && rc != 1 )); then why="exit $rc"; fi
  if grep -qE "AddressSanitizer|LeakSanitizer|runtime error" "$W/err"; then why="$why sanitizer: $(grep -m1 -E 'SUMMARY|runtime error' "$W/err")"; fi
  if (( rc == 1 )) && ! grep -q "error:" "$W/err"; then why="$why no error message"; fi
  if ls -a "$out" | grep -qE '\.tmp\.|\.piso-tmp-|\.piso-old-'; then why="$why temporary left: $(ls -a "$out" | tr '\n' ' ')"; fi
  if (( rc != 0 )) && ls "$out" | grep -q .; then why="$why partial output: $(ls "$out" | tr '\n' ' ')"; fi
  if [ -n "$why" ]; then echo "$name $env: $why" >> "$failures"; return 1; fi
  return 0
}
for entry in "${CMDS[@]}"; do
  name=${entry%%|*} args=${entry#*|}
  if [ -n "${FAULT_ONLY:-}" ] && [[ " $FAULT_ONLY " != *" $name "* ]]; then continue; fi
  run_one "$name" "$args" "" || { echo "$name: fails without a fault (see $failures)"; continue; }
  read -r _ allocs _ writes _ renames _ < "$W/report"
  for kind in alloc write rename; do
    case $kind in alloc) total=$allocs ;; write) total=$writes ;; rename) total=$renames ;; esac
    injected=0 ok=0
    for ((n = 1; n <= total; n++)); do
      if [ "$kind" = alloc ] && (( n > 64 && (n - 64) % STRIDE != 0 )); then continue; fi
      injected=$((injected + 1))
      run_one "$name" "$args" "PISO_FAULT_${kind^^}=$n" && ok=$((ok + 1))
    done
    printf "%-14s %-7s %9d %9d\n" "$name" "$kind" "$injected" "$ok"
    grand=$((grand + injected)) grand_ok=$((grand_ok + ok))
  done
done
echo "faults injected: $grand, survived: $grand_ok (failures: $failures)"
(( grand == grand_ok ))
