#!/usr/bin/env bash
# Perplexity table for the README: stories260K quantized with RTN / GPTQ / Qronos and the scale
# methods, int2/int3/int4, channel-wise and group 32, calibrated on TinyStories-valid.small30KB and
# evaluated on the cs336 TinyStories sample (llama.cpp protocol, ctx 512).
#
#   scripts/evidence-pipeline.sh [MODEL] > table.md      (MODEL defaults to the llama2.c checkpoint)
#
# Environment: PISO (binary, default build/piso), DATA (default ../shared), OUTDIR (scratch, default
# a temporary directory), EXTRA (more quantize flags, e.g. "--nsamples 8").
set -euo pipefail
PISO=${PISO:-build/piso}
DATA=${DATA:-../shared}
MODEL=${1:-$DATA/models/stories260K/stories260K.bin}
CALIB=$DATA/data/tinystories/TinyStories-valid.small30KB.txt
EVAL=$DATA/data/tinystories/tinystories_sample.cs336.txt
OUTDIR=${OUTDIR:-$(mktemp -d)}
EXTRA=${EXTRA:-}
RESULTS=$OUTDIR/results.tsv
: > "$RESULTS"

# run LABEL FORMAT GROUP ARGS... : quantizes, evaluates, appends "label format group ppl before seconds"
run() {
    local label=$1 fmt=$2 group=$3
    shift 3
    local out=$OUTDIR/q
    rm -rf "$out"
    local json
    json=$("$PISO" quantize --model "$MODEL" --format "$fmt" --group "$group" "$@" $EXTRA --out "$out" \
        --eval "$EVAL" --json --quiet)
    python3 - "$label" "$fmt" "$group" "$json" >> "$RESULTS" <<'EOF'
import json, sys
label, fmt, group, js = sys.argv[1:5]
j = json.loads(js)
print("\t".join([label, fmt, group, "%.4f" % j["perplexity_after"], "%.4f" % j["perplexity_before"],
                 "%.2f" % j["seconds_quantize"]]))
EOF
    echo "done: $label $fmt g$group" >&2
}

for fmt in int2 int3 int4; do
    for group in 0 32; do
        inter_group=group
        run "RTN absmax" $fmt $group --rounding rtn --scale absmax
        run "RTN mse-grid" $fmt $group --rounding rtn --scale mse-grid
        run "RTN piso-datafree" $fmt $group --rounding rtn --scale piso-datafree
        run "RTN piso" $fmt $group --rounding rtn --scale piso --calib "$CALIB"
        for r in gptq qronos; do
            R=$(echo $r | sed 's/gptq/GPTQ/; s/qronos/Qronos/')
            run "$R absmax" $fmt $group --rounding $r --scale absmax --interleave layer --act-order --calib "$CALIB"
            run "$R piso ⊙ layer" $fmt $group --rounding $r --scale piso --interleave layer --act-order --calib "$CALIB"
            run "$R piso ⊙ group" $fmt $group --rounding $r --scale piso --interleave $inter_group --act-order --calib "$CALIB"
        done
    done
done

python3 - "$RESULTS" <<'EOF'
import sys, collections
rows = collections.OrderedDict()
before = None
secs = collections.defaultdict(float)
for line in open(sys.argv[1]):
    label, fmt, group, ppl, b, s = line.rstrip("\n").split("\t")
    rows.setdefault(label, {})[(fmt, group)] = float(ppl)
    before = float(b)
    secs[label.split()[0]] += float(s)
cols = [(f, g) for f in ("int2", "int3", "int4") for g in ("0", "32")]
head = ["method"] + ["%s %s" % (f, "ch" if g == "0" else "g" + g) for f, g in cols]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
print("| float | " + " | ".join("%.3f" % before for _ in cols) + " |")
for label, d in rows.items():
    # best of each column in bold
    cells = []
    for c in cols:
        v = d.get(c)
        best = min(r.get(c, 1e30) for r in rows.values())
        cells.append(("**%.3f**" if v == best else "%.3f") % v if v is not None else "-")
    print("| " + label + " | " + " | ".join(cells) + " |")
print()
print("Quantization seconds summed over the 6 columns: " +
      ", ".join("%s %.1f s" % (k, v) for k, v in secs.items()))
EOF
