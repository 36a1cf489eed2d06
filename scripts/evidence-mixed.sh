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
# usage: scripts/evidence-mixed.sh [OUTDIR] [hf|gguf|all]   (gguf needs scripts/setup-llamacpp.sh)
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
PART=${2:-all}

if [ "$PART" != gguf ]; then
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
fi

# C. GGUF: --target-bpw at the size of llama-quantize's Q3_K_M and Q4_K_M (bits per weight of the
# blk.* linear weights as the file stores them, rounded up at the 9th decimal, so that piso's
# budget is exactly that many bits), KLD to the F32 export measured by llama.cpp.
if [ "$PART" != hf ]; then
TOK=$S/models/stories260K/tok512.bin
LQ=${LLAMA_QUANTIZE_BIN:-build/llama_quantize}
TYPES=${TYPES:-Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1}
$P tokenize --tokenizer "$TOK" --file "$EVAL" --bos --json --quiet > "$OUT/eval.json"
[ -s "$OUT/F32.gguf" ] || $P quantize --model "$MODEL" --tokenizer "$TOK" --out "$OUT/F32.gguf" --type F32 --quiet
linear_bpw() { # bits per weight of the blk.* linear weights of a GGUF file, from its tensor table
    python3 - "$1" <<'PY'
import math, struct, sys
f = open(sys.argv[1], "rb").read()
SIZES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 10: (256, 84),
         11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210)}
SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
o = 8
nt, nkv = struct.unpack_from("<QQ", f, o); o += 16
def skip_str(o): return o + 8 + struct.unpack_from("<Q", f, o)[0]
for _ in range(nkv):
    o = skip_str(o); t = struct.unpack_from("<I", f, o)[0]; o += 4
    if t == 8: o = skip_str(o)
    elif t == 9:
        at, n = struct.unpack_from("<IQ", f, o); o += 12
        for _ in range(n): o = skip_str(o) if at == 8 else o + SCALAR[at]
    else: o += SCALAR[t]
bits = n = 0
for _ in range(nt):
    ln = struct.unpack_from("<Q", f, o)[0]; name = f[o + 8:o + 8 + ln].decode(); o += 8 + ln
    nd = struct.unpack_from("<I", f, o)[0]; o += 4
    ne = struct.unpack_from("<%dQ" % nd, f, o); o += 8 * nd
    t = struct.unpack_from("<I", f, o)[0]; o += 12
    if name.startswith("blk.") and name.split(".")[2] in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
        blk, bs = SIZES[t]
        bits += ne[0] // blk * bs * ne[1] * 8; n += ne[0] * ne[1]
# rounded up at the 9th decimal: piso's budget floor(B * n) is then exactly this file's bits
print("%.9f" % (math.ceil(bits / n * 1e9) / 1e9))
PY
}
llamacpp_eval() { # "PPL KLD same-top" from llama.cpp, against the F32 export
    node tests/llamacpp/perplexity.mjs "$1" "$OUT/eval.json" 512 "$OUT/F32.gguf" |
        sed -E 's/.*"ppl":([0-9.e-]+).*"kld":([0-9.e-]+).*"same_top":([0-9.e-]+).*/\1 \2 \3/'
}
grow() { # label file
    read -r ppl kld same <<<"$(llamacpp_eval "$2")"
    printf "| %s | %s | %d | %.4f | %.5f | %.3f |\n" "$1" "$(linear_bpw "$2")" "$(stat -c %s "$2")" "$ppl" "$kld" "$same"
}
{
echo "| file | bits/weight (blk linears) | file bytes | PPL (llama.cpp) | KLD vs F32 | same top-1 |"
echo "|---|---:|---:|---:|---:|---:|"
for mix in Q3_K_M:12:Q3_K Q4_K_M:15:Q4_K; do
    IFS=: read -r name ftype base <<<"$mix"
    [ -s "$OUT/llama-$name.gguf" ] || "$LQ" "$OUT/F32.gguf" "$OUT/llama-$name.gguf" "$ftype" >/dev/null 2>&1
    B=$(linear_bpw "$OUT/llama-$name.gguf")
    grow "llama-quantize $name" "$OUT/llama-$name.gguf"
    [ -s "$OUT/piso-$name.gguf" ] || $P quantize --model "$MODEL" --tokenizer "$TOK" --out "$OUT/piso-$name.gguf" --type "$name" \
        --calib "$CALIB" --quiet
    grow "piso $name (same types, calib GPTQ scales)" "$OUT/piso-$name.gguf"
    for base_line in optimal kl-greedy; do
        f="$OUT/piso-bpw-$name-$base_line.gguf"
        [ -s "$f" ] || $P quantize --model "$MODEL" --tokenizer "$TOK" --out "$f" --type "$base" --calib "$CALIB" \
            --target-bpw "$B" --types "$TYPES" --baseline "$base_line" --json --quiet > "$f.json"
        grow "piso --target-bpw $B ($base_line)" "$f"
    done
done
} > "$OUT/gguf-table.md"
cat "$OUT/gguf-table.md"
fi
