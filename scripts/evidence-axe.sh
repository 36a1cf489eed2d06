#!/usr/bin/env bash
# Accumulator-aware quantization (AXE) on stories260K: perplexity against the accumulator width P for
# W4A8 and W8A8 (int8 activations, symmetric per token: codes -127..127), AXE-GPTQ / AXE-GPFQ with
# absmax scales and with constrained PiSO scales, against the naive alternatives: the unconstrained
# GPTQ + PiSO model run through the simulated integer matmul whose P-bit accumulator wraps around, or
# saturates. Per row (one accumulator per dot product) and with tiles of 32 and 64 inputs (tile =
# weight group; stories260K's down_proj has 172 inputs, so its last group/tile is 12 (32) or 44 (64)
# wide). Calibration: 8 windows x 256 tokens of TinyStories-valid.small30KB; perplexity on the cs336
# TinyStories sample (llama.cpp protocol, ctx 512). AXE models: the float path's perplexity (their
# P-bit and exact integer logits are bit-identical, tests/test_accum_model.c).
#
#   scripts/evidence-axe.sh [MODEL] > table.md
#
# Environment: PISO (default build/piso), DATA (default ../shared), OUTDIR (scratch), PS (the P values,
# default "10 12 14 16 18 20"), FORMATS (default "int4 int8"), TILES (default "0 32 64").
set -euo pipefail
PISO=${PISO:-build/piso}
DATA=${DATA:-../shared}
MODEL=${1:-$DATA/models/stories260K/stories260K.bin}
CALIB=$DATA/data/tinystories/TinyStories-valid.small30KB.txt
EVAL=$DATA/data/tinystories/tinystories_sample.cs336.txt
OUTDIR=${OUTDIR:-$(mktemp -d)}
mkdir -p "$OUTDIR"
PS=${PS:-"10 12 14 16 18 20"}
FORMATS=${FORMATS:-"int4 int8"}
TILES=${TILES:-"0 32 64"}
RESULTS=$OUTDIR/results.tsv
: > "$RESULTS"
COMMON=(--calib "$CALIB" --nsamples 8 --seqlen 256 --act-format int8 --act-order)

ppl_of() { python3 -c 'import json,sys; print("%.3f" % json.loads(sys.stdin.read())["ppl"])'; }

# axe FORMAT TILE P LABEL ARGS...: an AXE model, its perplexity
axe() {
    local fmt=$1 tile=$2 P=$3 label=$4
    shift 4
    local out=$OUTDIR/q
    rm -rf "$out"
    local ppl
    if "$PISO" quantize --model "$MODEL" --format "$fmt" --group "$tile" "${COMMON[@]}" "$@" \
        --accumulator-bits "$P" --out "$out" --quiet 2> "$OUTDIR/err"; then
        ppl=$("$PISO" perplexity --model "$out" --text "$EVAL" --json --quiet | ppl_of)
    else
        ppl="error"
        sed 's/^/    /' "$OUTDIR/err" >&2
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$fmt" "$tile" "$label" "$P" "$ppl" >> "$RESULTS"
    echo "done: $fmt tile $tile $label P=$P: $ppl" >&2
}

for fmt in $FORMATS; do
    for tile in $TILES; do
        # the naive alternatives: one unconstrained model, simulated with wraparound and saturation
        free=$OUTDIR/free
        rm -rf "$free"
        "$PISO" quantize --model "$MODEL" --format "$fmt" --group "$tile" "${COMMON[@]}" --rounding gptq --scale piso \
            --out "$free" --quiet
        exact=$("$PISO" perplexity --model "$free" --text "$EVAL" --json --quiet | ppl_of)
        printf '%s\t%s\t%s\t%s\t%s\n' "$fmt" "$tile" "unconstrained GPTQ+PiSO, float" "-" "$exact" >> "$RESULTS"
        for P in $PS; do
            w=$("$PISO" perplexity --model "$free" --text "$EVAL" --simulate-accumulator "$P" --json --quiet | ppl_of)
            s=$("$PISO" perplexity --model "$free" --text "$EVAL" --simulate-accumulator "$P" --simulate-saturate --json \
                --quiet | ppl_of)
            printf '%s\t%s\t%s\t%s\t%s\n' "$fmt" "$tile" "unconstrained GPTQ+PiSO, wraparound" "$P" "$w" >> "$RESULTS"
            printf '%s\t%s\t%s\t%s\t%s\n' "$fmt" "$tile" "unconstrained GPTQ+PiSO, saturation" "$P" "$s" >> "$RESULTS"
            echo "done: $fmt tile $tile naive P=$P: $w / $s" >&2
            if [ "$tile" = 0 ]; then
                axe "$fmt" "$tile" "$P" "AXE-GPTQ (absmax)" --rounding gptq --scale absmax
                axe "$fmt" "$tile" "$P" "AXE-GPFQ (absmax)" --rounding gpfq --scale absmax
            fi
            axe "$fmt" "$tile" "$P" "AXE-GPTQ + PiSO" --rounding gptq --scale piso
            axe "$fmt" "$tile" "$P" "AXE-GPFQ + PiSO" --rounding gpfq --scale piso
        done
    done
done

python3 - "$RESULTS" "$PS" <<'EOF'
import sys, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
ps = sys.argv[2].split()
def cell(x):  # perplexities above 1000 in 3 significant digits
    try:
        v = float(x)
    except ValueError:
        return x
    return ("%.3g" % v).replace("e+0", "e").replace("e+", "e") if v >= 1000 else "%.3f" % v
tables = collections.OrderedDict()
for fmt, tile, label, P, ppl in rows:
    tables.setdefault(fmt, collections.OrderedDict()).setdefault((tile, label), {})[P] = ppl
for fmt, t in tables.items():
    print("\n**W%sA8** (perplexity; float model 8.438)\n" % fmt[3:])
    print("| tile | method | " + " | ".join("P=%s" % p for p in ps) + " |")
    print("|---|---|" + "---:|" * len(ps))
    for (tile, label), v in t.items():
        if "-" in v:
            print("| %s | %s | %s |" % ("row" if tile == "0" else tile, label, " | ".join([cell(v["-"])] * len(ps))))
        else:
            print("| %s | %s | %s |" % ("row" if tile == "0" else tile, label, " | ".join(cell(v.get(p, "")) for p in ps)))
EOF
