#!/usr/bin/env bash
# Hardware block formats on the dense path (README, "2-3-bit K-quants and FP4"): stories260K quantized
# to an HF directory with MX (blocks of 32, power-of-two scales) and NVFP4 (blocks of 16, UE4M3
# scales x a tensor scale), absmax (the OCP / NVIDIA recipe) vs piso (exact over the representable
# scales), with RTN and GPTQ; perplexity in piso (llama-perplexity protocol, ctx 512, cs336 sample).
# usage: scripts/evidence-hw.sh [OUTDIR]
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
S=${PISO_DATA:-../shared}
OUT=${1:-/tmp/piso-evidence-hw}
mkdir -p "$OUT"
MODEL=$S/models/stories260K/stories260K.bin
EVAL=$S/data/tinystories/tinystories_sample.cs336.txt
CALIB=$S/data/tinystories/TinyStories-valid.small30KB.txt
echo "| format | rounding | absmax (recipe) PPL | piso PPL |"
echo "|---|---|---:|---:|"
for f in mxfp4 mxfp6_e2m3 mxfp6_e3m2 mxfp8_e4m3 mxint8 nvfp4; do
    for r in rtn gptq; do
        p=()
        for sc in absmax piso; do
            p+=("$(build/piso quantize --model "$MODEL" --calib "$CALIB" --format $f --rounding $r --scale $sc \
                --out "$OUT/$f-$r-$sc" --eval "$EVAL" --json --quiet |
                python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["perplexity_after"])')")
        done
        echo "| $f | $r | ${p[0]} | ${p[1]} |"
    done
done
