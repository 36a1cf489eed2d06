#!/usr/bin/env bash
# Evidence for the sr / beam / gpfq rounders (README "Successive rounding, beam search and GPFQ"):
# stories260K int2/int3/int4 x channel-wise/group 32, GPTQ, Qronos, GPFQ, sr at alpha 0/0.25/0.5/1,
# beam K=4/16, each with absmax and with PiSO scales (act order everywhere; PiSO interleaved per group
# with --group, per layer without), calibrated on TinyStories-valid.small30KB, perplexity on the cs336
# TinyStories sample (llama.cpp protocol, ctx 512); then the run-to-run spread over 5 seeds of the
# calibration windows for a fixed alpha against --alpha-sample.
#
#   scripts/evidence-rounders.sh [MODEL] > evidence.md     (MODEL defaults to the llama2.c checkpoint)
#
# Environment: PISO (binary, default build/piso), DATA (default ../shared), OUTDIR (scratch, default a
# temporary directory), PART (table | spread | all, default all), JOBS (runs in parallel, default 1;
# each run then gets OMP_NUM_THREADS=1 when JOBS > 1: results do not depend on the thread count).
set -euo pipefail
PISO=${PISO:-build/piso}
DATA=${DATA:-../shared}
MODEL=${1:-$DATA/models/stories260K/stories260K.bin}
CALIB=$DATA/data/tinystories/TinyStories-valid.small30KB.txt
EVAL=$DATA/data/tinystories/tinystories_sample.cs336.txt
OUTDIR=${OUTDIR:-$(mktemp -d)}
PART=${PART:-all}
JOBS=${JOBS:-1}
mkdir -p "$OUTDIR"
export PISO MODEL CALIB EVAL OUTDIR

# one run: ID LABEL FORMAT GROUP SEED ARGS...  -> $OUTDIR/res/ID.tsv (kept: a second call with the
# same OUTDIR skips the runs already done)
cat > "$OUTDIR/run1.sh" <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
id=$1 label=$2 fmt=$3 group=$4 seed=$5
shift 5
[ -s "$OUTDIR/res/$id.tsv" ] && exit 0
out=$OUTDIR/q_$id
rm -rf "$out"
json=$("$PISO" quantize --model "$MODEL" --calib "$CALIB" --format "$fmt" --group "$group" --seed "$seed" \
    --act-order "$@" --out "$out" --eval "$EVAL" --json --quiet)
rm -rf "$out"
mkdir -p "$OUTDIR/res"
python3 - "$label" "$fmt" "$group" "$seed" "$json" > "$OUTDIR/res/$id.tsv" <<'PY'
import json, sys
label, fmt, group, seed, js = sys.argv[1:6]
j = json.loads(js)
print("\t".join([label, fmt, group, seed, "%.4f" % j["perplexity_after"], "%.4f" % j["perplexity_before"],
                 "%.2f" % j["seconds_quantize"]]))
PY
echo "done: $label $fmt g$group seed $seed" >&2
EOF
chmod +x "$OUTDIR/run1.sh"

JOBLIST=$OUTDIR/jobs.txt
: > "$JOBLIST"
: > "$OUTDIR/order.txt"
n=0
job() { # LABEL FORMAT GROUP SEED ARGS...
    n=$((n + 1))
    local args="" id
    for a in "$@"; do args+=" $(printf '%q' "$a")"; done
    id=$(printf '%s' "$args" | md5sum | cut -c1-12)
    echo "$OUTDIR/run1.sh $id$args" >> "$JOBLIST"
    echo "$id" >> "$OUTDIR/order.txt"
}

# The most informative runs first (PiSO scales, then the spread, then absmax)
table_rows() { # SCALE METHODS...
    local sc=$1
    shift
    for fmt in int2 int3 int4; do
        for group in 0 32; do
            for meth in "$@"; do
                case $meth in
                gptq) job "GPTQ $sc" $fmt $group 0 --rounding gptq --scale $sc ;;
                qronos) job "Qronos $sc" $fmt $group 0 --rounding qronos --scale $sc ;;
                gpfq) job "GPFQ α=1 $sc" $fmt $group 0 --rounding gpfq --alpha 1 --scale $sc ;;
                sr*) job "sr α=${meth#sr} $sc" $fmt $group 0 --rounding sr --alpha ${meth#sr} --scale $sc ;;
                beam*) job "beam K=${meth#beam} α=0.5 $sc" $fmt $group 0 --rounding beam --beam ${meth#beam} --alpha 0.5 \
                    --scale $sc ;;
                esac
            done
        done
    done
}
NEW="gpfq sr0 sr0.25 sr0.5 sr1 beam4 beam16"
if [ "$PART" = table ] || [ "$PART" = all ]; then table_rows piso $NEW; fi
if [ "$PART" = spread ] || [ "$PART" = all ]; then
    for seed in 1 2 3 4 5; do
        for cfg in "sr int2 0" "sr int3 32" "beam int2 0"; do
            set -- $cfg
            extra=""
            [ "$1" = beam ] && extra="--beam 4"
            job "spread $1 $2 g$3 fixed α=0.5" $2 $3 $seed --rounding $1 $extra --alpha 0.5 --scale piso
            job "spread $1 $2 g$3 sampled α" $2 $3 $seed --rounding $1 $extra --alpha-sample --scale piso
        done
    done
fi
if [ "$PART" = table ] || [ "$PART" = all ]; then
    table_rows absmax $NEW
    table_rows absmax gptq qronos
    table_rows piso gptq qronos
fi

if [ "$JOBS" -gt 1 ]; then export OMP_NUM_THREADS=1; fi
xargs -d '\n' -P "$JOBS" -I{} bash -c '{}' < "$JOBLIST"

python3 - "$OUTDIR/res" "$OUTDIR/order.txt" <<'EOF'
import sys, os, collections, statistics
rows = collections.OrderedDict()
spread = collections.OrderedDict()
before = None
secs = collections.defaultdict(float)
files = [l.strip() + ".tsv" for l in open(sys.argv[2])]
files = [f for f in files if os.path.exists(os.path.join(sys.argv[1], f))]
# table rows in a fixed order: GPTQ, Qronos, GPFQ, sr, beam
rank = lambda lab: [k for k, p in enumerate(("GPTQ", "Qronos", "GPFQ", "sr", "beam", "spread")) if lab.startswith(p)][0]
files.sort(key=lambda f: rank(open(os.path.join(sys.argv[1], f)).read().split("\t")[0]))
for f in files:
    label, fmt, group, seed, ppl, b, s = open(os.path.join(sys.argv[1], f)).read().rstrip("\n").split("\t")
    before = float(b)
    if label.startswith("spread "):
        spread.setdefault(label[7:], []).append(float(ppl))
        continue
    rows.setdefault(label, {})[(fmt, group)] = float(ppl)
    secs[label] += float(s)
if rows:
    cols = [(f, g) for f in ("int2", "int3", "int4") for g in ("0", "32")]
    head = ["method", "scales"] + ["%s %s" % (f, "ch" if g == "0" else "g" + g) for f, g in cols]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    print("| float | | " + " | ".join("%.3f" % before for _ in cols) + " |")
    for sc in ("absmax", "piso"):
        for label, d in rows.items():
            if not label.endswith(" " + sc):
                continue
            cells = []
            for c in cols:
                v = d.get(c)
                best = min(r.get(c, 1e30) for r in rows.values())
                cells.append(("**%.3f**" if v == best else "%.3f") % v if v is not None else "-")
            print("| " + label[: -len(sc) - 1] + " | " + sc + " | " + " | ".join(cells) + " |")
    print()
    print("Quantization seconds summed over the 6 columns: " +
          ", ".join("%s %.1f s" % (k, v) for k, v in secs.items()))
    print()
if spread:
    print("| configuration (PiSO scales, 5 seeds of the calibration windows) | mean | std | min | max |")
    print("|---|---|---|---|---|")
    for label, v in spread.items():
        print("| %s | %.3f | %.3f | %.3f | %.3f |" % (label, statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0,
                                                   min(v), max(v)))
EOF
