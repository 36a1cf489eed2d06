#!/usr/bin/env bash
# Evidence for the README section "Mixed precision under a bit budget" (issue 14).
#  A. Hugging Face output: stories260K, GPTQ + PiSO scales (--act-order), candidates
#     int2,int3,int4,int2g32,int3g32,int4g32,int8; at 2.5, 3, 3.5 and 4.5 bits per weight the exact
#     optimum, the best uniform candidate that fits and the KL-greedy layer selection (all three from
#     one run: --evaluate-baselines), scored by piso's evaluator on the cs336 sample (ctx 512, the
#     llama.cpp protocol): KL divergence to the float model and perplexity.
#  B. The sensitivity check at 3.5 bits: predicted vs measured KL of every single-layer change.
#  C. (with the GGUF part, when built) --target-bpw against llama-quantize's mixtures.
# Calibration: TinyStories-valid.small30KB.txt (30 windows x 512), disjoint from the scored text.
# usage: scripts/evidence-mixed.sh [OUTDIR]
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} # results do not depend on it; the machine is shared
cd "$(dirname "$0")/.."
S=${PISO_DATA:-../shared}
OUT=${1:-/tmp/piso-evidence-mixed}
mkdir -p "$OUT"
MODEL=$S/models/stories260K/stories260K.bin
EVAL=$S/data/tinystories/tinystories_sample.cs336.txt
CALIB=$S/data/tinystories/TinyStories-valid.small30KB.txt
P=${PISO:-build/piso}
FORMATS=${FORMATS:-int2,int3,int4,int2g32,int3g32,int4g32,int8}

for B in 2.5 3 3.5 4.5; do
    extra=()
    [ "$B" = 3.5 ] && extra=(--sensitivity-check)
    [ -s "$OUT/hf-$B.json" ] || $P quantize --model "$MODEL" --calib "$CALIB" --formats "$FORMATS" --target-bits "$B" \
        --rounding gptq --act-order --out "$OUT/hf-$B" --eval "$EVAL" --evaluate-baselines --json --quiet "${extra[@]}" \
        > "$OUT/hf-$B.json"
done
python3 - "$OUT" <<'PY'
import json, sys, collections
out = sys.argv[1]
print("| target bits | assignment | bits/weight | formats used | predicted KL | KLD (measured) | PPL |")
print("|---:|---|---:|---|---:|---:|---:|")
for B in ["2.5", "3", "3.5", "4.5"]:
    m = json.load(open(f"{out}/hf-{B}.json"))["mixed_precision"]
    for k in ["optimal", "kl-greedy", "uniform"]:
        a = m["assignments"][k]
        if a is None:
            print(f"| {B} | {k} | - | none fits | - | - | - |"); continue
        used = collections.Counter(a["formats"])
        fm = " ".join(f"{f}×{n}" for f, n in sorted(used.items(), key=lambda t: -t[1]))
        print(f"| {B} | {k} | {a['bits_per_weight']:.3f} | {fm} | {a['predicted_loss']:.4f} | {a['kld']:.4f} | {a['perplexity']:.3f} |")
m = json.load(open(f"{out}/hf-3.5.json"))["mixed_precision"]["sensitivity_check"]
print()
print(f"Sensitivity check (3.5-bit run): Spearman over all {len(m['pairs'])} single-layer changes {m['spearman']:.3f}; per format: " +
      ", ".join(f"{f} {r:.3f}" for f, r in m["spearman_per_format"].items()))
print()
print("| layer | format | predicted KL | measured KL |")
print("|---|---|---:|---:|")
for p in m["pairs"]:
    if p["format"] in ("int2", "int3") and (".layers.0." in p["layer"] or ".layers.4." in p["layer"]):
        print(f"| {p['layer'].replace('model.layers.', '')} | {p['format']} | {p['predicted_kl']:.5f} | {p['measured_kl']:.5f} |")
PY
