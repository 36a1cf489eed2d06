#!/usr/bin/env bash
# Evidence table for the README (evaluation section): stories260K quantized by piso (HF directories:
# RTN, GPTQ and Qronos with absmax or PiSO scales at int4/int3 with one scale per channel; GGUF files: Q8_0, Q4_0,
# Q4_K), each scored against the float model by KL divergence (piso perplexity --kl-divergence,
# llama-perplexity's statistics; base = the float model's log-probs on the cs336 sample, ctx 512) and
# by HellaSwag acc_norm (piso eval hellaswag: llama-perplexity's 400-task draw, or --limit N).
# Calibration text: TinyStories-valid.small30KB.txt, disjoint from the scored text.
# usage: scripts/evidence-evals.sh [OUTDIR] [HELLASWAG_TASKS=400]   (needs build/piso)
set -euo pipefail
# one thread: the numbers do not depend on it, and the build machine is shared
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
S=${PISO_DATA:-../shared}
OUT=${1:-/tmp/piso-evidence-evals}
NTASK=${2:-400}
mkdir -p "$OUT"
MODEL=$S/models/stories260K/stories260K.bin
EVAL=$S/data/tinystories/tinystories_sample.cs336.txt
CALIB=$S/data/tinystories/TinyStories-valid.small30KB.txt
TASKS=$S/data/hellaswag/hellaswag_val_full.txt
P=${PISO:-build/piso}

$P perplexity --model "$MODEL" --text "$EVAL" --kl-base "$OUT/base.kld" --quiet > /dev/null

# name | quantize arguments (HF directory unless --type)
RECIPES=(
  "int4 RTN absmax|--format int4 --rounding rtn --scale absmax"
  "int4 RTN PiSO|--format int4 --rounding rtn --scale piso --calib $CALIB"
  "int4 GPTQ absmax|--format int4 --rounding gptq --scale absmax --act-order --calib $CALIB"
  "int4 GPTQ + PiSO|--format int4 --rounding gptq --scale piso --act-order --calib $CALIB"
  "int4 Qronos absmax|--format int4 --rounding qronos --scale absmax --act-order --calib $CALIB"
  "int4 Qronos + PiSO|--format int4 --rounding qronos --scale piso --act-order --calib $CALIB"
  "int3 RTN absmax|--format int3 --rounding rtn --scale absmax"
  "int3 RTN PiSO|--format int3 --rounding rtn --scale piso --calib $CALIB"
  "int3 GPTQ absmax|--format int3 --rounding gptq --scale absmax --act-order --calib $CALIB"
  "int3 GPTQ + PiSO|--format int3 --rounding gptq --scale piso --act-order --calib $CALIB"
  "int3 Qronos absmax|--format int3 --rounding qronos --scale absmax --act-order --calib $CALIB"
  "int3 Qronos + PiSO|--format int3 --rounding qronos --scale piso --act-order --calib $CALIB"
  "GGUF Q8_0 (piso scales)|--type Q8_0"
  "GGUF Q4_0 (piso scales)|--type Q4_0"
  "GGUF Q4_0 (llama.cpp's rule)|--type Q4_0 --scale llamacpp-ref"
  "GGUF Q4_K (piso, calibrated)|--type Q4_K --calib $CALIB"
)

row() { # name model
    local k h
    k=$($P perplexity --model "$2" --kl-base "$OUT/base.kld" --kl-divergence --json --quiet)
    h=$($P eval hellaswag --model "$2" --tasks "$TASKS" --limit "$NTASK" --json --quiet)
    python3 -c '
import json, sys
k, h = json.loads(sys.argv[2]), json.loads(sys.argv[3])
print("| %s | %.4f | %.5f ± %.5f | %.4f | %.2f %% | %.2f [%.2f, %.2f] |" % (sys.argv[1], k["ppl"], k["kld"], k["kld_unc"],
      k["kld_percentiles"]["99"], 100 * k["same_top"], h["acc_norm"], h["ci95"][0], h["ci95"][1]))' "$1" "$k" "$h"
}

echo "| model | PPL(Q) | mean KLD | 99% KLD | same top-1 | HellaSwag acc_norm % [95% CI], $NTASK tasks |"
echo "|---|---:|---:|---:|---:|---|"
row "float" "$MODEL"
for r in "${RECIPES[@]}"; do
    name=${r%%|*}
    args=${r#*|}
    slug=$(tr -c 'A-Za-z0-9' '_' <<<"$name")
    if [[ $args == --type* ]]; then dest="$OUT/$slug.gguf"; else dest="$OUT/$slug"; fi
    # shellcheck disable=SC2086
    $P quantize --model "$MODEL" $args --out "$dest" --quiet > /dev/null
    row "$name" "$dest"
done
