#!/usr/bin/env bash
# On the GPU machine: tune the NVIDIA OpenCL device with `edgeinfer tune`, measure whole knob spaces for the
# search comparison (benchmarks/tuner_search.py), and time the models with the new table, the borrowed one and
# none. Expects .whl/ and .shared/ as gpu_run.sh does; resumes from benchmarks/results/<key>.records.jsonl.
#   bash benchmarks/gpu_tune.sh [TUNE_SECONDS] [SPACE_WORKLOADS]
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 EDGEINFER_SHARED=$PWD/.shared EDGEINFER_CACHE_DIR=/tmp/eicache
mkdir -p /tmp/icd /tmp/packs
ldconfig -p | grep -m1 'libnvidia-opencl.so.1' | awk '{print $NF}' > /tmp/icd/nvidia.icd
export OCL_ICD_VENDORS=/tmp/icd
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -m edgeinfer.cli devices | tee -a "$OUT/gpu.txt"
KEY=$(python3 -c "from edgeinfer.backends.opencl.runtime import select_device; print(select_device('opencl').info.device_key)")
for m in mobilenet_v2_1.0_224 squeezenet1.1 yolox_nano_416; do
  python3 -m edgeinfer.cli compile .shared/models/$m.onnx -o /tmp/packs/$m.pack >/dev/null || exit 1
done
PACKS="/tmp/packs/mobilenet_v2_1.0_224.pack /tmp/packs/squeezenet1.1.pack /tmp/packs/yolox_nano_416.pack"
RECORDS=benchmarks/results/$KEY.records.jsonl
TABLE=$OUT/$KEY.json
[ -f tuned_configs/opencl/$KEY.json ] && cp tuned_configs/opencl/$KEY.json "$TABLE"
[ -f "$RECORDS" ] && cp "$RECORDS" "$OUT/"
time python3 -m edgeinfer.cli tune $PACKS --device opencl --trials 16 --time-budget "${1:-240}" --out "$TABLE" \
  --records "$OUT/$KEY.records.jsonl" 2>&1 | tee "$OUT/tune.log" | tail -8
if [ "${2:-0}" -gt 0 ]; then
  time python3 benchmarks/tuner_search.py measure $PACKS --device opencl --workloads "$2" --templates gemm,conv2d,depthwise \
    --out "$OUT/spaces_$KEY.json" 2>&1 | tee "$OUT/spaces.log" | tail -20
fi
# whole models: no table, the shipped (or borrowed) table, the new table (as a user table)
for m in $PACKS; do
  n=$(basename $m .pack)
  off=$(EDGEINFER_TUNED_CONFIGS=off python3 -m edgeinfer.cli bench $m --device opencl -n 300 --json | python3 -c "import json,sys; print(json.load(sys.stdin)['median_ms'])")
  shipped=$(python3 -m edgeinfer.cli bench $m --device opencl -n 300 --json | python3 -c "import json,sys; print(json.load(sys.stdin)['median_ms'])")
  mkdir -p /tmp/user/opencl && cp "$TABLE" /tmp/user/opencl/
  tuned=$(EDGEINFER_TUNED_DIR=/tmp/user python3 -m edgeinfer.cli bench $m --device opencl -n 300 --json | python3 -c "import json,sys; print(json.load(sys.stdin)['median_ms'])")
  echo "$n defaults $off ms | shipped/borrowed $shipped ms | tuned now $tuned ms" | tee -a "$OUT/models.txt"
done
