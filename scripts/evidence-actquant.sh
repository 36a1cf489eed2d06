#!/usr/bin/env bash
# Activation quantization and smoothing on stories260K: perplexity (cs336 TinyStories sample,
# llama.cpp protocol, ctx 512) of W4 (int4, one scale per channel) with quantized activations:
# A8 and A4 integer per token, A4 e2m1 per token, A4 MXFP4 (blocks of 32), for RTN absmax and
# GPTQ + PiSO, without smoothing, with SmoothQuant (alpha 0.5, a_j = max |x_j|) and with the
# quantile-robust variant (a_j = P-quantile of |x_j|, P = 0.99, 0.999, 0.9999, 1).
# Calibration: TinyStories-valid.small30KB (30 windows x 512 tokens, the pipeline's default).
#
#   scripts/evidence-actquant.sh > table.md
#
# Environment: PISO (binary, default build/piso), DATA (default ../shared), OUTDIR (scratch, default
# a temporary directory), ALPHA (smoothing strength, default 0.5), EXTRA (more quantize flags),
# PARTS (default "w16 w16smooth main calib": which rows to run; with KEEP=1 the rows already in
# OUTDIR/results.tsv are kept, so a part can be added to an earlier run).
set -euo pipefail
PISO=${PISO:-build/piso}
DATA=${DATA:-../shared}
MODEL=${MODEL:-$DATA/models/stories260K/stories260K.bin}
CALIB=$DATA/data/tinystories/TinyStories-valid.small30KB.txt
EVAL=$DATA/data/tinystories/tinystories_sample.cs336.txt
OUTDIR=${OUTDIR:-$(mktemp -d)}
ALPHA=${ALPHA:-0.5}
EXTRA=${EXTRA:-}
PARTS=${PARTS:-w16 w16smooth main calib}
RESULTS=$OUTDIR/results.tsv
[ "${KEEP:-0}" = 1 ] || : > "$RESULTS"
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

ACTS="int8 int4 e2m1 mxfp4"
SMOOTHS="none max q0.99 q0.999 q0.9999 q1"

smooth_flags() {
    case $1 in
    none) ;;
    max) echo "--smooth $ALPHA" ;;
    q*) echo "--smooth $ALPHA --smooth-quantile ${1#q}" ;;
    esac
}

# run METHOD ACT SMOOTH ARGS...: appends "method act smooth ppl seconds"
run() {
    local method=$1 act=$2 sm=$3
    shift 3
    local out=$OUTDIR/q
    rm -rf "$out"
    local json
    # shellcheck disable=SC2046
    json=$("$PISO" quantize --model "$MODEL" --calib "$CALIB" --format int4 --act-format "$act" $(smooth_flags "$sm") \
        "$@" $EXTRA --out "$out" --eval "$EVAL" --json --quiet)
    python3 - "$method" "$act" "$sm" "$json" >> "$RESULTS" <<'EOF'
import json, sys
method, act, sm, js = sys.argv[1:5]
j = json.loads(js)
print("\t".join([method, act, sm, "%.3f" % j["perplexity_after"], "%.1f" % j["seconds"]]))
EOF
    echo "done: $method $act $sm" >&2
}

ppl() { # ppl MODEL [FLAGS...]: perplexity on the evaluation text
    local m=$1
    shift
    "$PISO" perplexity --model "$m" --text "$EVAL" "$@" --json --quiet |
        python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["ppl"])'
}
FLOAT=$(ppl "$MODEL")

# float weights, quantized activations (no smoothing): the activation error alone
if has w16; then
    for act in $ACTS; do
        printf "float weights\t%s\tnone\t%s\t0\n" "$act" "$(ppl "$MODEL" --act-format $act)" >> "$RESULTS"
    done
fi
# float weights smoothed by piso transform (same statistics as quantize), quantized activations
if has w16smooth; then
    for sm in $SMOOTHS; do
        [ $sm = none ] && continue
        rm -rf "$OUTDIR/t"
        # shellcheck disable=SC2046
        "$PISO" transform --model "$MODEL" --calib "$CALIB" $(smooth_flags $sm) --out "$OUTDIR/t" --quiet
        for act in $ACTS; do
            printf "float weights\t%s\t%s\t%s\t0\n" "$act" "$sm" "$(ppl "$OUTDIR/t" --act-format $act)" >> "$RESULTS"
        done
        echo "done: float weights $sm" >&2
    done
fi

if has main; then
    for act in $ACTS; do
        for sm in $SMOOTHS; do
            run "RTN absmax" $act $sm --rounding rtn --scale absmax
            run "GPTQ + PiSO" $act $sm --rounding gptq --scale piso --act-order
        done
    done
fi
# GPTQ + PiSO calibrated on quantized activations (--calib-act-quant), A4 only: with GPTQ's own
# X~-X~ objective and with the X-X~ objective (the float model's outputs as the target)
if has calib; then
    for act in int4 e2m1 mxfp4; do
        for sm in none max q0.99; do
            run "GPTQ + PiSO, --calib-act-quant" $act $sm --rounding gptq --scale piso --act-order --calib-act-quant
            run "GPTQ + PiSO, --calib-act-quant --objective x-xq" $act $sm --rounding gptq --scale piso --act-order \
                --calib-act-quant --objective x-xq
        done
    done
fi

python3 - "$RESULTS" "$FLOAT" "$ALPHA" <<'EOF'
import sys, collections
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    method, act, sm, ppl, secs = line.rstrip("\n").split("\t")
    rows.setdefault((method, act), {})[sm] = float(ppl)
smooths = ["none", "max", "q0.99", "q0.999", "q0.9999", "q1"]
names = {"none": "none", "max": "smooth (max)", "q0.99": "P=0.99", "q0.999": "P=0.999", "q0.9999": "P=0.9999",
         "q1": "P=1"}
acts = {"int8": "A8 int8 per token", "int4": "A4 int4 per token", "e2m1": "A4 e2m1 per token",
        "mxfp4": "A4 MXFP4 (blocks of 32)"}
print("float model: %s; smoothing alpha %s\n" % (sys.argv[2], sys.argv[3]))
print("| weights | activations | " + " | ".join(names[s] for s in smooths) + " |")
print("|---|---|" + "---:|" * len(smooths))
for (method, act), r in rows.items():
    best = min(r.values())
    cells = [("" if s not in r else ("**%.3f**" if r[s] == best and len(r) > 1 else "%.3f") % r[s]) for s in smooths]
    weights = "float" if method == "float weights" else "int4 " + method
    print("| %s | %s | %s |" % (weights, acts[act], " | ".join(cells)))
EOF
