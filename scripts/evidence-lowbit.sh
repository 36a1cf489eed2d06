#!/usr/bin/env bash
# Evidence table (a) for the low-bit and FP4 types (README, "2-3-bit K-quants and FP4"): stories260K
# exported with piso (llamacpp-ref / piso scales, without and with an imatrix, with dense
# calibration) and with llama.cpp's own quantizer (build/llama_quantize, llama_model_quantize of the
# bundled llama.cpp) where it can write the type; scored in real llama.cpp (npm node-llama-cpp):
# perplexity with llama-perplexity's protocol (ctx 512, cs336 sample) and KL divergence to the F32
# export. stories260K's rows are 64 wide (ffn_down 172): MXFP4 and NVFP4 store every weight but
# ffn_down (F16 fallback; NVFP4: 64-blocks); Q2_K/Q3_K fall back to Q4_0 as llama.cpp does.
# Calibration text (imatrix, Hessians): TinyStories-valid.small30KB.txt, disjoint from the scored text.
# usage: scripts/evidence-lowbit.sh [OUTDIR]   (needs build/piso, build/llama_quantize, scripts/setup-llamacpp.sh)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
S=${PISO_DATA:-../shared}
OUT=${1:-/tmp/piso-evidence-lowbit}
mkdir -p "$OUT"
MODEL=$S/models/stories260K/stories260K.bin
TOK=$S/models/stories260K/tok512.bin
EVAL=$S/data/tinystories/tinystories_sample.cs336.txt
CALIB=$S/data/tinystories/TinyStories-valid.small30KB.txt
P=build/piso
LQ=build/llama_quantize
$P tokenize --tokenizer "$TOK" --file "$EVAL" --bos --json --quiet > "$OUT/eval.json"
$P imatrix --model "$MODEL" --tokenizer "$TOK" --calib "$CALIB" -o "$OUT/imatrix.gguf" --ctx 512 --quiet
$P quantize --model "$MODEL" --tokenizer "$TOK" --out "$OUT/F32.gguf" --type F32 --quiet

llamacpp_eval() {
    node tests/llamacpp/perplexity.mjs "$1" "$OUT/eval.json" 512 "$OUT/F32.gguf" |
        sed -E 's/.*"ppl":([0-9.e-]+).*"kld":([0-9.e-]+).*"same_top":([0-9.e-]+).*/\1 \2 \3/'
}
types_of() { # "q4_0 x30, f16 x5, ..." from piso's JSON
    python3 -c 'import json,sys; j=json.load(sys.stdin); print(", ".join("%s x%d" % kv for kv in j["tensor_types"].items() if kv[0] != "f32"))'
}
score() { # label file types
    local size; size=$(stat -c %s "$2")
    read -r ppl kld same <<<"$(llamacpp_eval "$2")"
    printf "| %s | %d | %.4f | %.5f | %.3f | %s |\n" "$1" "$size" "$ppl" "$kld" "$same" "$3"
}
row() { # type label args...
    local type=$1 label=$2; shift 2
    local f="$OUT/${type}-${label//[^A-Za-z0-9_.+-]/_}.gguf"
    local types; types=$($P quantize --model "$MODEL" --tokenizer "$TOK" --out "$f" --type "$type" --quiet --json "$@" | types_of)
    score "$type $label" "$f" "$types"
}
lq() { # label ftype [--pure]
    local f="$OUT/llama-quantize-$1.gguf"
    "$LQ" "$OUT/F32.gguf" "$f" "$2" ${3:-} >/dev/null 2>&1
    score "llama-quantize $1" "$f" "(llama.cpp)"
}
echo "| file | bytes | PPL (llama.cpp) | KLD vs F32 | same top-1 | stored types (2-D weights) |"
echo "|---|---:|---:|---:|---:|---|"
score "F32" "$OUT/F32.gguf" "f32"
for t in MXFP4 NVFP4; do
    row $t "llamacpp-ref" --scale llamacpp-ref
    row $t "piso" --scale piso
    row $t "piso+imatrix" --scale piso --imatrix "$OUT/imatrix.gguf"
    row $t "piso+calib" --scale piso --calib "$CALIB" --ctx 512
done
for t in Q2_K Q3_K; do
    row $t "llamacpp-ref" --scale llamacpp-ref
    row $t "llamacpp-ref+imatrix" --scale llamacpp-ref --imatrix "$OUT/imatrix.gguf"
    row $t "piso" --scale piso
    row $t "piso+imatrix" --scale piso --imatrix "$OUT/imatrix.gguf"
    row $t "piso+calib(GPTQ)" --scale piso --calib "$CALIB" --ctx 512
done
lq "Q2_K--pure" 10 --pure
lq "Q3_K_S--pure" 11 --pure
for m in Q2_K:10 Q3_K_S:11 Q3_K_M:12 Q4_K_M:15 Q5_K_M:17; do
    name=${m%%:*} ft=${m##*:}
    mix=(); [ "$name" = Q2_K ] && mix=(--mix)
    lq "$name" "$ft"
    row "$name" "mixture, llamacpp-ref" --scale llamacpp-ref "${mix[@]}"
    row "$name" "mixture, piso" --scale piso "${mix[@]}"
    row "$name" "mixture, piso+calib(GPTQ)" --scale piso --calib "$CALIB" --ctx 512 "${mix[@]}"
done
