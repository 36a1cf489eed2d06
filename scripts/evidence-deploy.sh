#!/usr/bin/env bash
# "Deploy" table for the README: stories260K quantized with RTN / GPTQ / Qronos × absmax / PiSO scales,
# symmetric and with zero points (--asym), written as a GPTQ and as a compressed-tensors checkpoint,
# then loaded back with `piso perplexity --model DIR` (cs336 TinyStories sample, llama.cpp protocol,
# ctx 512). Each cell is the perplexity after reload; the script fails if it differs from the
# in-memory quantized model's.
#
#   scripts/evidence-deploy.sh [FORMAT [GROUP]] > table.md     (default: int3, 0 = per channel)
#
# Environment: PISO (default build/piso), DATA (default ../shared), OUTDIR (scratch, default a
# temporary directory), FORMATS (default "gptq compressed-tensors").
set -euo pipefail
PISO=${PISO:-build/piso}
DATA=${DATA:-../shared}
FMT=${1:-int3}
GROUP=${2:-0}
MODEL=$DATA/models/stories260K/stories260K.bin
CALIB=$DATA/data/tinystories/TinyStories-valid.small30KB.txt
EVAL=$DATA/data/tinystories/tinystories_sample.cs336.txt
OUTDIR=${OUTDIR:-$(mktemp -d)}
FORMATS=${FORMATS:-gptq compressed-tensors}
RESULTS=$OUTDIR/deploy.tsv
: > "$RESULTS"

for rounding in rtn gptq qronos; do
  extra=""
  [ "$rounding" != rtn ] && extra="--act-order"
  # contiguous groups as in the README table (groups by act order: scripts/evidence-actorder-groups.sh)
  [ "$rounding" != rtn ] && [ "$GROUP" != 0 ] && extra="$extra --static-groups"
  for scale in absmax piso; do
    for asym in "" "--asym"; do
      for out_format in $FORMATS; do
        out=$OUTDIR/q
        rm -rf "$out"
        json=$("$PISO" quantize --model "$MODEL" --calib "$CALIB" --format "$FMT" --group "$GROUP" \
          --rounding "$rounding" --scale "$scale" $asym $extra --out-format "$out_format" --out "$out" \
          --eval "$EVAL" --json --quiet)
        reload=$("$PISO" perplexity --model "$out" --text "$EVAL" --json --quiet)
        python3 - "$rounding" "$scale" "${asym:-sym}" "$out_format" "$json" "$reload" >> "$RESULTS" <<'EOF'
import json, sys
rounding, scale, asym, fmt, js, rl = sys.argv[1:7]
j, r = json.loads(js), json.loads(rl)
mem, back = j["perplexity_after"], r["ppl"]
if abs(mem - back) > 5e-7 * mem:
    sys.exit(f"{rounding} {scale} {asym} {fmt}: reloaded perplexity {back} != in-memory {mem}")
print("\t".join([rounding, scale, asym.lstrip("-"), fmt, "%.4f" % back, "%.4f" % j["perplexity_before"],
                 str(j["packed_layers"])]))
EOF
        echo "done: $rounding $scale ${asym:-sym} $out_format" >&2
      done
    done
  done
done

python3 - "$RESULTS" "$FMT" "$GROUP" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
fmt, group = sys.argv[2], sys.argv[3]
cell = {(r[0], r[1], r[2], r[3]): r for r in rows}
formats = [f for f in ("gptq", "compressed-tensors") if any(r[3] == f for r in rows)]
names = {"gptq": "GPTQ", "compressed-tensors": "compressed-tensors"}
packed = ", ".join(f"{names[f]} {next(r[6] for r in rows if r[3] == f)}" for f in formats)
print(f"stories260K {fmt}, {'per channel' if group == '0' else 'group ' + group}; float perplexity {rows[0][5]}; "
      f"packed layers of 35: {packed}")
print()
print("| rounding | scale | " + " | ".join(f"{names[f]} {a}" for f in formats for a in ("sym", "asym")) + " |")
print("|---|---|" + "---:|" * (2 * len(formats)))
for rnd in ("rtn", "gptq", "qronos"):
    for sc in ("absmax", "piso"):
        c = [cell[(rnd, sc, a, f)][4] for f in formats for a in ("sym", "asym")]
        name = {"absmax": "absmax (asym: min-max)", "piso": "PiSO (asym: exact over s, z)"}[sc]
        print(f"| {dict(rtn='RTN', gptq='GPTQ', qronos='Qronos')[rnd]} | {name} | " + " | ".join(c) + " |")
EOF
