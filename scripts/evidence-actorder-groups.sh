#!/usr/bin/env bash
# Act order through g_idx: stories260K, group 32, GPTQ / Qronos × absmax / PiSO, written as a
# compressed-tensors checkpoint with groups that follow the act order (actorder "group", g_idx;
# GPTQ's desc_act) and with contiguous groups (--static-groups, actorder "weight"), loaded back with
# `piso perplexity --model DIR` (cs336 TinyStories sample, llama.cpp protocol, ctx 512). Each cell
# is the perplexity after reload; the script fails if it differs from the in-memory model's.
#
#   scripts/evidence-actorder-groups.sh [FORMATS] > table.md      (default: "int3 int4")
#
# Environment: PISO (default build/piso), DATA (default ../shared), OUTDIR (scratch, default a
# temporary directory), OUT_FORMAT (default compressed-tensors; gptq packs only the attention layers).
set -euo pipefail
PISO=${PISO:-build/piso}
DATA=${DATA:-../shared}
FMTS=${1:-int3 int4}
MODEL=$DATA/models/stories260K/stories260K.bin
CALIB=$DATA/data/tinystories/TinyStories-valid.small30KB.txt
EVAL=$DATA/data/tinystories/tinystories_sample.cs336.txt
OUTDIR=${OUTDIR:-$(mktemp -d)}
OUT_FORMAT=${OUT_FORMAT:-compressed-tensors}
RESULTS=$OUTDIR/actorder.tsv
: > "$RESULTS"

for fmt in $FMTS; do
  for rounding in gptq qronos; do
    for scale in absmax piso; do
      for groups in static desc_act; do
        extra=""
        [ "$groups" = static ] && extra="--static-groups"
        out=$OUTDIR/q
        rm -rf "$out"
        json=$("$PISO" quantize --model "$MODEL" --calib "$CALIB" --format "$fmt" --group 32 \
          --rounding "$rounding" --scale "$scale" --act-order $extra --out-format "$OUT_FORMAT" --out "$out" \
          --eval "$EVAL" --json --quiet)
        reload=$("$PISO" perplexity --model "$out" --text "$EVAL" --json --quiet)
        python3 - "$fmt" "$rounding" "$scale" "$groups" "$json" "$reload" >> "$RESULTS" <<'EOF'
import json, sys
fmt, rounding, scale, groups, js, rl = sys.argv[1:7]
j, r = json.loads(js), json.loads(rl)
mem, back = j["perplexity_after"], r["ppl"]
if abs(mem - back) > 5e-7 * mem:
    sys.exit(f"{fmt} {rounding} {scale} {groups}: reloaded perplexity {back} != in-memory {mem}")
print("\t".join([fmt, rounding, scale, groups, "%.4f" % back, "%.4f" % j["perplexity_before"],
                 str(j["packed_layers"])]))
EOF
        echo "done: $fmt $rounding $scale $groups" >&2
      done
    done
  done
done

python3 - "$RESULTS" "$OUT_FORMAT" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
cell = {(r[0], r[1], r[2], r[3]): r[4] for r in rows}
print(f"stories260K, group 32, {sys.argv[2]}, --act-order; float perplexity {rows[0][5]}; "
      f"packed layers of 35: {rows[0][6]}\n")
print("| format | rounding | scale | contiguous groups (--static-groups) | groups by act order (g_idx) |")
print("|---|---|---|---:|---:|")
for fmt in dict.fromkeys(r[0] for r in rows):
    for rounding in ("gptq", "qronos"):
        for scale in ("absmax", "piso"):
            print(f"| {fmt} | {rounding.upper() if rounding == 'gptq' else 'Qronos'} | {scale} | "
                  f"{cell[(fmt, rounding, scale, 'static')]} | {cell[(fmt, rounding, scale, 'desc_act')]} |")
EOF
