#!/usr/bin/env bash
# Regenerates the README table "Rotations, permutations and smoothing" on stories260K:
# perplexity of the cs336 TinyStories sample (ctx 512) with int4 per-channel weights (RTN + PiSO,
# GPTQ + PiSO with --act-order; 8 calibration windows of 512 tokens) and quantized activations
# (int8 / int4 per token, e2m1 per token, mxfp4 blocks of 32), for each transform; plus the float
# weights with the same activation formats (W16), and the share of the full-rotation gain that
# block rotations recover. Usage: scripts/evidence-rotations.sh [PISO_BIN] (about 20 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PISO=${1:-build/piso}
DATA=${PISO_DATA:-../shared}
M=$DATA/models/stories260K/stories260K.bin
C=$DATA/data/tinystories/TinyStories-valid.small30KB.txt
E=$DATA/data/tinystories/tinystories_sample.cs336.txt
W=$(mktemp -d /tmp/piso-evidence-rot.XXXXXX)
trap 'rm -rf "$W"' EXIT
OUT=${OUT:-$W/results.tsv}
[ -n "${APPEND:-}${TABLE_ONLY:-}" ] || : > "$OUT"   # APPEND=1: add rows to an existing OUT
ONLY=${ONLY:-.}                      # a regex: only the transforms whose name matches

transforms=(
  "none|"
  "had|--rotate had"
  "block16|--rotate block --rotate-block 16"
  "block16+massdiff|--rotate block --rotate-block 16 --permute massdiff"
  "block16+zigzag|--rotate block --rotate-block 16 --permute zigzag"
  "block32|--rotate block --rotate-block 32"
  "block32+massdiff|--rotate block --rotate-block 32 --permute massdiff"
)
# smoothing rows once `piso quantize` has --smooth (issue 10 part A)
if "$PISO" quantize --help | grep -q -- '--smooth-quantile'; then
  transforms+=("smooth0.5|--smooth 0.5" "smooth0.5-q0.99|--smooth 0.5 --smooth-quantile 0.99"
               "smooth0.5-q0.999|--smooth 0.5 --smooth-quantile 0.999"
               "smooth0.5+had|--smooth 0.5 --rotate had"
               "smooth0.5-q0.999+had|--smooth 0.5 --smooth-quantile 0.999 --rotate had")
fi
acts=(int8 int4 e2m1 mxfp4)

ppl_of() { python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.3f" % d.get("perplexity_after", d.get("ppl")))'; }

for t in "${transforms[@]}"; do
  [ -z "${TABLE_ONLY:-}" ] || break   # TABLE_ONLY=1: only print the table of an existing OUT
  name=${t%%|*}; flags=${t#*|}
  [[ $name =~ $ONLY ]] || continue
  # float weights: the transformed float model (piso transform), then perplexity with each format
  src=$M
  if [ -n "$flags" ]; then
    # shellcheck disable=SC2086
    "$PISO" transform --model "$M" $flags --calib "$C" --nsamples 8 --out "$W/$name" --quiet
    src=$W/$name
  fi
  for a in "${acts[@]}"; do
    p=$("$PISO" perplexity --model "$src" --text "$E" --act-format "$a" --json --quiet | ppl_of)
    printf '%s\tW16\t%s\t%s\n' "$name" "$a" "$p" | tee -a "$OUT"
  done
  for r in rtn gptq; do
    extra=""; [ "$r" = gptq ] && extra="--act-order"
    for a in "${acts[@]}"; do
      # shellcheck disable=SC2086
      p=$("$PISO" quantize --model "$M" $flags --calib "$C" --nsamples 8 --format int4 --rounding $r $extra \
            --scale piso --act-format "$a" --out "$W/q" --eval "$E" --json --quiet | ppl_of)
      rm -rf "$W/q"
      printf '%s\t%s\t%s\t%s\n' "$name" "$r" "$a" "$p" | tee -a "$OUT"
    done
  done
done

python3 - "$OUT" <<'EOF'
import sys, collections
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    t, r, a, p = line.split()
    rows.setdefault(t, {})[(r, a)] = float(p)
cols = [(r, a) for r in ("W16", "rtn", "gptq") for a in ("int8", "int4", "e2m1", "mxfp4")]
label = {"W16": "float W", "rtn": "W4 RTN", "gptq": "W4 GPTQ"}
print("| transform | " + " | ".join("%s A %s" % (label[r], a) for r, a in cols) + " |")
print("|---|" + "---:|" * len(cols))
best = {c: min(v[c] for v in rows.values() if c in v) for c in cols}
for t, v in rows.items():
    cells = []
    for c in cols:
        s = "%.3f" % v[c] if c in v else "-"
        cells.append("**%s**" % s if c in v and v[c] == best[c] else s)
    print("| %s | %s |" % (t, " | ".join(cells)))
print()
print("Share of the full-rotation gain (ppl(none) - ppl(x)) / (ppl(none) - ppl(had)):")
for c in cols:
    if "had" not in rows or "none" not in rows: break
    g = rows["none"][c] - rows["had"][c]
    parts = []
    for t in ("block16", "block16+massdiff", "block32", "block32+massdiff"):
        if t in rows and abs(g) > 1e-9:
            parts.append("%s %.0f%%" % (t, 100 * (rows["none"][c] - rows[t][c]) / g))
    print("- %s A %s (had gain %.3f): %s" % (label[c[0]], c[1], g, ", ".join(parts)))
EOF
