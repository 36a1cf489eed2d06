#!/usr/bin/env bash
# Evidence for "Real-size models" (issue 16): the pruned exact channel-wise PiSO sweep against the
# full sweep and GPTQ on the Llama-3.2-1B-shaped block, its exactness and pruned fractions on
# real-shaped rows, and whole synthetic checkpoints through `piso quantize` (bench_model).
#
#   scripts/evidence-scale.sh [quick|full|headline]
#     quick: block / 2 and 2-layer models, ~30 min on 2 cores; full: the whole 1B block and an 8B block;
#     headline: only the README's headline runs (whole 16-layer 1B shape, an 8B block; an hour or more)
#
# Environment: BUILD (default build), PISO_DATA (default ../shared). Idle OpenMP threads are made to
# sleep (OMP_WAIT_POLICY=passive): on a shared machine spinning threads distort every timing.
set -euo pipefail
BUILD=${BUILD:-build}
export PISO_DATA=${PISO_DATA:-../shared}
export OMP_WAIT_POLICY=passive
MODE=${1:-quick}
SD=2
[ "$MODE" = full ] && SD=1

echo "## machine"
grep -m1 "model name" /proc/cpuinfo; nproc; uptime
echo "ISA: $(grep -o -w 'avx512f\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"

if [ "$MODE" = headline ]; then
    echo "## headline: Llama-3.2-1B shape, int4 g128, GPTQ + PiSO (.) group, 16 x 2048 calibration tokens"
    "$BUILD/bench_model" --shape llama-1b --nsamples 16 --seqlen 2048
    echo "## headline: Llama-3.2-1B shape, int4 channel-wise, RTN + PiSO, one 2048-token window"
    "$BUILD/bench_model" --shape llama-1b --nsamples 1 --seqlen 2048 -- --format int4 --rounding rtn --scale piso
    echo "## headline: Llama-3.1-8B shape, 2 blocks, GPTQ + PiSO (.) group, 16 x 2048 tokens (peak RSS, time per block)"
    "$BUILD/bench_model" --shape llama-8b --layers 2 --nsamples 16 --seqlen 2048
    exit 0
fi

echo "## exactness and pruned fractions on real-shaped rows (test_piso_prune)"
"$BUILD/test_piso_prune"

echo "## 1B-shaped block / $SD: GPTQ vs PiSO channel-wise (full sweep extrapolated, pruned sweep every row)"
"$BUILD/bench_block" --scale-down "$SD" --rows-sample 16

echo "## whole synthetic checkpoints through piso quantize (GPTQ + PiSO (.) group, int4 g128)"
"$BUILD/bench_model" --shape tiny --nsamples 2 --seqlen 256
"$BUILD/bench_model" --shape llama-1b --layers 2 --nsamples 2 --seqlen 512
"$BUILD/bench_model" --shape qwen-0.5b --layers 2 --nsamples 2 --seqlen 512
echo "## RTN + PiSO channel-wise, one window"
"$BUILD/bench_model" --shape llama-1b --layers 2 --nsamples 1 --seqlen 1024 -- --format int4 --rounding rtn --scale piso
if [ "$MODE" = full ]; then
    "$BUILD/bench_model" --shape llama-8b --layers 1 --nsamples 1 --seqlen 512
fi
