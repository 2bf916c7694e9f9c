#!/usr/bin/env bash
# The CUDA backend's whole check on the GPU machine (issue 16), in one command, well under 9 minutes:
#   bash benchmarks/gpu_cuda_check.sh
# Expects, in the repo root (as gpu_run.sh does): .whl/ (pyopencl, pytools, platformdirs, siphash24, pytest wheels
# for cp312) and .shared/ (models/ and images/). CuPy, PyTorch and onnxruntime come from the machine's Python;
# onnx2torch is optional (without it gpu_compare.py says so and leaves out the PyTorch columns).
# Every step has its own `timeout` (a typical run takes about 400 s), so one hang cannot eat the budget; logs go to $OUT, a line per
# step to $OUT/summary.txt. gpu_compare.py prints each model's row as soon as it is measured.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
RESULT=$OUT; OUT=/tmp/gpu_cuda_logs; mkdir -p "$OUT"  # logs here, packed into $RESULT/logs.tgz at the end
trap 'tar czf "$RESULT/logs.tgz" -C "$OUT" . 2>/dev/null' EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  >"$OUT/pip.log" 2>&1 || echo "wheel install failed (see pip.log)"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 EDGEINFER_SHARED=$PWD/.shared EDGEINFER_CACHE_DIR=/tmp/eicache
mkdir -p /tmp/icd
ldconfig -p | grep -m1 'libnvidia-opencl.so.1' | awk '{print $NF}' > /tmp/icd/nvidia.icd
export OCL_ICD_VENDORS=/tmp/icd
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, show the tail
  local name=$1 limit=$2; shift 2
  local started=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc in $((SECONDS - started)) s$([ $rc = 124 ] && echo " (TIMED OUT after $limit s)")" | tee -a "$OUT/summary.txt"
  tail -n "${TAIL:-25}" "$OUT/$name.log"
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)" | tee -a "$OUT/gpu.txt"
python3 setup.py -q build_ext --inplace >"$OUT/build_ext.log" 2>&1 || gcc -O3 -Wno-psabi -fPIC -shared \
  kernels/cpu/conv_hwc.c -o "edgeinfer/_cpu_kernels$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
step devices 30 python3 -m edgeinfer.cli devices
step pytest_cuda 170 python3 -m pytest -q -p no:cacheprovider -rfs --tb=short tests/test_cuda_backend.py tests/test_cuda_runtime.py \
  tests/test_cuda_sources.py tests/test_cuda_preprocess.py tests/test_conv_gemm.py tests/test_fp16.py
step pytest_detection_cuda 45 python3 -m pytest -q -p no:cacheprovider -rs -k cuda tests/test_detection.py
step pytest_conformance_cuda 50 python3 -m pytest -q -p no:cacheprovider -rf --tb=line -k cuda tests/test_conformance.py
# Per-kernel profile of ResNet-50 with the implicit-GEMM convolutions and with the direct ones (planning/conv_gemm.py)
step profile_resnet50 50 python3 benchmarks/cuda_profile.py --resnet50 --json "$RESULT/profile_resnet50.json"
[ "${DIRECT_PROFILE:-0}" = 1 ] && EDGEINFER_GPU_CONV=direct step profile_resnet50_direct 40 python3 benchmarks/cuda_profile.py \
  --resnet50 --runs 100 --json "$RESULT/profile_resnet50_direct.json"
step cuda_preprocess_bench 30 python3 benchmarks/cuda_preprocess_bench.py --runs 100 --warmup 10 \
  --json "$RESULT/cuda_preprocess_bench.json"
TAIL=40 step gpu_compare 200 python3 benchmarks/gpu_compare.py --runs 200 --warmup 20 --resnet50 --json "$RESULT/gpu_compare.json"
# fp16 packs against fp32 packs (issue 16 item 6): accuracy on the shared photos and end-to-end speed
TAIL=12 step fp16_cuda 150 python3 benchmarks/fp16_compare.py --device cuda --runs 200 --warmup 20 --json "$RESULT/fp16_cuda.json"
TAIL=8 step fp16_opencl 100 python3 benchmarks/fp16_compare.py --device opencl --runs 100 --warmup 10 \
  --json "$RESULT/fp16_opencl.json" mobilenet_v2_1.0_224.onnx squeezenet1.1.onnx yolox_nano_416.onnx
echo "total $SECONDS s" | tee -a "$OUT/summary.txt"
