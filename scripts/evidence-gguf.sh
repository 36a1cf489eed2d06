#!/usr/bin/env bash
# Evidence table for the README (GGUF section): stories260K exported in llama.cpp block formats with llama.cpp's
# reference scales (no imatrix / piso's imatrix) and piso's exact scales (imatrix / dense
# calibration), scored by perplexity with llama-perplexity's protocol (ctx 512, cs336 sample) in
# real llama.cpp (npm node-llama-cpp) and, when available, in piso's own evaluator.
# Calibration text (imatrix, Hessians): TinyStories-valid.small30KB.txt, disjoint from the scored text.
# usage: scripts/evidence-gguf.sh [OUTDIR]   (needs build/piso and scripts/setup-llamacpp.sh)
set -euo pipefail
# one thread: the numbers do not depend on it, and the build machine is shared
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
S=${PISO_DATA:-../shared}
OUT=${1:-/tmp/piso-evidence-gguf}
mkdir -p "$OUT"
MODEL=$S/models/stories260K/stories260K.bin
TOK=$S/models/stories260K/tok512.bin
EVAL=$S/data/tinystories/tinystories_sample.cs336.txt
CALIB=$S/data/tinystories/TinyStories-valid.small30KB.txt
P=${PISO:-build/piso}
$P tokenize --tokenizer "$TOK" --file "$EVAL" --bos --json --quiet > "$OUT/eval.json"
$P imatrix --model "$MODEL" --tokenizer "$TOK" --calib "$CALIB" -o "$OUT/imatrix.gguf" --ctx 512 --quiet
has_piso_ppl=0
if $P perplexity --help >/dev/null 2>&1; then has_piso_ppl=1; fi

# "PPL KLD same-top" from llama.cpp, against the F32 export as the KLD base
llamacpp_eval() {
    node tests/llamacpp/perplexity.mjs "$1" "$OUT/eval.json" 512 "$OUT/F32-reference.gguf" |
        sed -E 's/.*"ppl":([0-9.e-]+).*"kld":([0-9.e-]+).*"same_top":([0-9.e-]+).*/\1 \2 \3/'
}
ppl_piso() {
    if [ $has_piso_ppl = 1 ]; then
        $P perplexity --model "$1" --text "$EVAL" --ctx 512 --json --quiet 2>/dev/null |
            sed -E 's/.*"ppl": *([0-9.]+).*/\1/' || echo "-"
    else echo "-"; fi
}
row() { # type label args...
    local type=$1 label=$2; shift 2
    local f="$OUT/${type}-${label}.gguf"
    $P quantize --model "$MODEL" --tokenizer "$TOK" --out "$f" --type "$type" --quiet "$@"
    local size; size=$(stat -c %s "$f")
    read -r ppl kld same <<<"$(llamacpp_eval "$f")"
    printf "| %s | %s | %d | %.4f | %.5f | %.3f | %s |\n" "$type" "$label" "$size" "$ppl" "$kld" "$same" "$(ppl_piso "$f")"
}
echo "| type | scales | file bytes | PPL (llama.cpp) | KLD vs F32 | same top-1 | PPL (piso) |"
echo "|---|---|---:|---:|---:|---:|---:|"
row F32 reference
for t in Q8_0 Q4_0 Q4_K Q5_K Q6_K IQ4_NL; do
    row $t "llamacpp-ref" --scale llamacpp-ref
    row $t "llamacpp-ref+imatrix" --scale llamacpp-ref --imatrix "$OUT/imatrix.gguf"
    row $t "piso" --scale piso
    row $t "piso+imatrix" --scale piso --imatrix "$OUT/imatrix.gguf"
    row $t "piso+imatrix(blend)" --scale piso --imatrix "$OUT/imatrix.gguf" --weighting blend
    row $t "piso+calib(GPTQ)" --scale piso --calib "$CALIB" --ctx 512
done

# Optional: llama.cpp's own quantizer (LLAMA_QUANTIZE=path/to/llama-quantize, built from the source
# bundled in node-llama-cpp: node_modules/node-llama-cpp/llama/gitRelease.bundle).
#  1. its files scored like the rows above (its default mixtures, without and with piso's imatrix);
#  2. bit-for-bit comparison of piso's llamacpp-ref with `llama-quantize --pure`.
if [ -n "${LLAMA_QUANTIZE:-}" ]; then
    echo
    echo "| llama-quantize ftype | imatrix | file bytes | PPL (llama.cpp) | KLD vs F32 | same top-1 |"
    echo "|---|---|---:|---:|---:|---:|"
    for ft in Q8_0 Q4_0 Q4_K_M Q5_K_M Q6_K IQ4_NL; do
        for im in no yes; do
            f="$OUT/llama-quantize-$ft-$im.gguf"
            if [ $im = yes ]; then "$LLAMA_QUANTIZE" --imatrix "$OUT/imatrix.gguf" "$OUT/F32-reference.gguf" "$f" $ft 1 >/dev/null 2>&1
            else "$LLAMA_QUANTIZE" "$OUT/F32-reference.gguf" "$f" $ft 1 >/dev/null 2>&1; fi
            read -r ppl kld same <<<"$(llamacpp_eval "$f")"
            printf "| %s | %s | %d | %.4f | %.5f | %.3f |\n" $ft $im "$(stat -c %s "$f")" "$ppl" "$kld" "$same"
        done
    done
    echo
    for t in Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 IQ4_NL; do
        for im in no yes; do
            a="$OUT/cmp-piso-$t-$im.gguf" b="$OUT/cmp-llama-$t-$im.gguf"
            args=(); [ $im = yes ] && args=(--imatrix "$OUT/imatrix.gguf")
            $P quantize --model "$OUT/F32-reference.gguf" --out "$a" --type $t --output-type $t --scale llamacpp-ref --quiet "${args[@]}"
            "$LLAMA_QUANTIZE" --pure "${args[@]}" "$OUT/F32-reference.gguf" "$b" $t 1 >/dev/null 2>&1
            echo "piso llamacpp-ref vs llama-quantize --pure, $t, imatrix $im: $(python3 scripts/gguf-compare.py "$a" "$b" | tail -1)"
        done
    done
fi
