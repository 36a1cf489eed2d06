#!/usr/bin/env bash
# Evidence for `piso perplexity --llamacpp-activations` (README, Evaluation section): stories260K
# exported to GGUF files (F16, Q8_0, Q4_0, Q4_K — stored Q5_0 on this model's 64-wide rows),
# scored against llama.cpp's F32 base by KL divergence three ways: llama.cpp itself (node-llama-cpp
# through tests/llamacpp/evals.mjs), piso's float evaluation, and piso with llama.cpp's activation
# rounding. A last column compares piso with llama.cpp's own log-probs of the same file
# (position by position: 0 would be identical logits).
# usage: scripts/evidence-llamacpp-act.sh [OUTDIR]   (needs build/piso, node and .tools/llamacpp)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
S=${PISO_DATA:-../shared}
OUT=${1:-/tmp/piso-evidence-llamacpp-act}
mkdir -p "$OUT"
MODEL=$S/models/stories260K/stories260K.bin
EVAL=$S/data/tinystories/tinystories_sample.cs336.txt
P=${PISO:-build/piso}
$P quantize --model "$MODEL" --out "$OUT/f32.gguf" --type F32 --quiet
$P tokenize --tokenizer "$S/models/stories260K/tok512.bin" --file "$EVAL" --bos --json > "$OUT/tokens.json" 2>/dev/null
field() { grep -F "$1" "$2" | head -1 | sed 's/.*: *//; s/ *%$//' | awk '{print $1 ($2 == "±" ? " ± " $3 : "")}'; }
echo "| GGUF | tool | PPL(Q) | mean KLD | same top-1 % | KLD to llama.cpp's own log-probs |"
echo "|---|---|---:|---:|---:|---:|"
for T in F16 Q8_0 Q4_0 Q4_K; do
  Q=$OUT/$T.gguf
  $P quantize --model "$MODEL" --out "$Q" --type "$T" --quiet
  mkdir -p "$OUT/$T" "$OUT/$T-self"
  node tests/llamacpp/evals.mjs kld "$OUT/f32.gguf" "$Q" "$OUT/tokens.json" 512 "$OUT/$T" > "$OUT/$T/llamacpp.txt"
  node tests/llamacpp/evals.mjs kld "$Q" "$Q" "$OUT/tokens.json" 512 "$OUT/$T-self" > /dev/null
  echo "| $T | llama.cpp | $(field 'Mean PPL(Q)' "$OUT/$T/llamacpp.txt") | $(field 'Mean    KLD' "$OUT/$T/llamacpp.txt") | $(field 'Same top p' "$OUT/$T/llamacpp.txt") | 0 |"
  for MODE in float emulated; do
    FLAG=""; [ $MODE = emulated ] && FLAG=--llamacpp-activations
    $P perplexity --model "$Q" --kl-base "$OUT/$T/base.kld" --kl-divergence --quiet $FLAG > "$OUT/$T/piso-$MODE.txt"
    $P perplexity --model "$Q" --kl-base "$OUT/$T-self/base.kld" --kl-divergence --quiet $FLAG > "$OUT/$T/piso-$MODE-self.txt"
    echo "| $T | piso ${FLAG:-(float)} | $(field 'Mean PPL(Q)' "$OUT/$T/piso-$MODE.txt") | $(field 'Mean    KLD' "$OUT/$T/piso-$MODE.txt") | $(field 'Same top p' "$OUT/$T/piso-$MODE.txt") | $(field 'Mean    KLD' "$OUT/$T/piso-$MODE-self.txt") |"
  done
done
