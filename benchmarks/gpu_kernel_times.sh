#!/usr/bin/env bash
# On the GPU machine (after gpu_tune.sh's setup lines): summed kernel time (OpenCL profiling events) per model
# with no table, with the H100 table borrowed, and with the device's own table. Packs in /tmp/packs.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 EDGEINFER_SHARED=$PWD/.shared EDGEINFER_CACHE_DIR=/tmp/eicache
mkdir -p /tmp/icd /tmp/packs /tmp/none
ldconfig -p | grep -m1 'libnvidia-opencl.so.1' | awk '{print $NF}' > /tmp/icd/nvidia.icd
export OCL_ICD_VENDORS=/tmp/icd
for m in mobilenet_v2_1.0_224 squeezenet1.1 yolox_nano_416; do
  [ -f /tmp/packs/$m.pack ] || python3 -m edgeinfer.cli compile .shared/models/$m.onnx -o /tmp/packs/$m.pack >/dev/null
done
KEY=$(python3 -c "from edgeinfer.backends.opencl.runtime import select_device; print(select_device('opencl').info.device_key)")
kernel_ms() { python3 -m edgeinfer.cli bench "$1" --device opencl -n 200 --profile --json | python3 -c "
import json, sys; rows = json.load(sys.stdin)['nodes']
print(round(sum(r['time_ms'] for r in rows if not r['name'].startswith('(')), 4))"; }
for m in mobilenet_v2_1.0_224 squeezenet1.1 yolox_nano_416; do
  off=$(EDGEINFER_TUNED_CONFIGS=off kernel_ms /tmp/packs/$m.pack)
  mv tuned_configs/opencl/$KEY.json /tmp/none/ 2>/dev/null
  borrowed=$(kernel_ms /tmp/packs/$m.pack)
  mv /tmp/none/$KEY.json tuned_configs/opencl/ 2>/dev/null
  own=$(kernel_ms /tmp/packs/$m.pack)
  echo "$m kernel ms: defaults $off | H100 table borrowed $borrowed | own H200 table $own" | tee -a "$OUT/kernel_times.txt"
done
