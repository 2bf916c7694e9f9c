#!/usr/bin/env bash
# On the GPU machine: tune the CUDA backend (`edgeinfer tune --device cuda`) for MobileNetV2, SqueezeNet, YOLOX-nano
# and ResNet-50 (torchvision's, random weights, exported to ONNX here) within a total time budget, shared equally
# by the packs; the table, its measurement log and tune_cuda.log go to $OUT. Resumes from
# benchmarks/results/<key>.records.jsonl and starts from tuned_configs/cuda/<key>.json where they exist.
#   bash benchmarks/gpu_tune_cuda.sh [TOTAL_SECONDS=150] [TRIALS=8] [BENCH_RUNS=0]
# BENCH_RUNS > 0 also times each pack on cuda (median of BENCH_RUNS runs) with the tables it had before (shipped, and
# the OpenCL table borrowed) and with the new one as the user's table. Expects .shared/ (and .whl/) as gpu_run.sh
# does; a step that fails says so in the log and the others still run.
set -uo pipefail
BUDGET=${1:-150} TRIALS=${2:-8} RUNS=${3:-0}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LOG=$OUT/tune_cuda.log
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1 || echo "wheel install failed (see $LOG)" | tee -a "$LOG"
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 EDGEINFER_SHARED=$PWD/.shared
export EDGEINFER_CACHE_DIR=${EDGEINFER_CACHE_DIR:-/tmp/eicache}
say() { echo "$*" | tee -a "$LOG"; }
KEY=$(python3 -c "from edgeinfer.backends.cuda.runtime import select_device; print(select_device('cuda').device_key)" \
  2>>"$LOG") || { say "no usable CUDA device: $(tail -n 1 "$LOG")"; exit 1; }
say "CUDA device key $KEY; budget $BUDGET s, $TRIALS trials per workload"
mkdir -p /tmp/packs
PACKS=()
for m in mobilenet_v2_1.0_224 squeezenet1.1 yolox_nano_416; do
  if python3 -m edgeinfer.cli compile .shared/models/$m.onnx -o /tmp/packs/$m.pack >>"$LOG" 2>&1; then
    PACKS+=(/tmp/packs/$m.pack)
  else
    say "compile $m failed (see $LOG)"
  fi
done
if python3 - >>"$LOG" 2>&1 <<'EOF'
import sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
from gpu_compare import resnet50_onnx  # torchvision's ResNet-50, seeded random weights, as gpu_compare.py runs it

print("exported", resnet50_onnx(Path("/tmp/packs")))
EOF
then
  python3 -m edgeinfer.cli compile /tmp/packs/resnet50_random.onnx -o /tmp/packs/resnet50.pack >>"$LOG" 2>&1 &&
    PACKS+=(/tmp/packs/resnet50.pack) || say "compile resnet50 failed (see $LOG)"
else
  say "ResNet-50 not exported (torch/torchvision?), see $LOG"
fi
[ ${#PACKS[@]} -gt 0 ] || { say "no packs to tune"; exit 1; }
TABLE=$OUT/$KEY.json RECORDS=$OUT/$KEY.records.jsonl
[ -f tuned_configs/cuda/$KEY.json ] && cp tuned_configs/cuda/$KEY.json "$TABLE"
[ -f benchmarks/results/$KEY.records.jsonl ] && cp benchmarks/results/$KEY.records.jsonl "$RECORDS"
SHARE=$((BUDGET / ${#PACKS[@]}))
entries() { python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['entries']))" "$TABLE" 2>/dev/null; }
for pack in "${PACKS[@]}"; do  # one run per pack, so that every model gets its share of the budget
  started=$SECONDS
  timeout $((SHARE + 90)) python3 -m edgeinfer.cli tune "$pack" --device cuda --trials "$TRIALS" \
    --time-budget "$SHARE" --out "$TABLE" --records "$RECORDS" >>"$LOG" 2>&1
  say "tune $(basename "$pack" .pack): exit $? in $((SECONDS - started)) s; table $(entries) entries"
done
mkdir -p /tmp/cuda_user/cuda && cp "$TABLE" /tmp/cuda_user/cuda/ 2>/dev/null
# how the packs' workloads are covered now: exact (the new CUDA table), nearest, borrowed (the OpenCL table), default
EDGEINFER_TUNED_DIR=/tmp/cuda_user python3 -m edgeinfer.cli tune "${PACKS[@]}" --device cuda --report \
  >/tmp/report.txt 2>&1
head -n 5 /tmp/report.txt; cat /tmp/report.txt >>"$LOG"
if [ "$RUNS" -gt 0 ]; then
  median_ms() {  # median_ms USER_TABLES_DIR PACK
    EDGEINFER_TUNED_DIR=$1 python3 -m edgeinfer.cli bench "$2" --device cuda -n "$RUNS" --json 2>>"$LOG" |
      python3 -c "import json,sys; print(json.load(sys.stdin)['median_ms'])"
  }
  for pack in "${PACKS[@]}"; do
    before=$(median_ms /tmp/cuda_none "$pack") after=$(median_ms /tmp/cuda_user "$pack")
    say "$(basename "$pack" .pack): shipped/borrowed tables ${before:-?} ms | with the new CUDA table ${after:-?} ms"
  done
fi
say "total $SECONDS s"
