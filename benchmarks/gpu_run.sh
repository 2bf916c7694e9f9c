#!/usr/bin/env bash
# Run on the GPU machine (NVIDIA driver with its OpenCL ICD, Python 3.12 with torch/onnx/onnxruntime).
# Expects, in the repo root: .whl/ (pyopencl, pytools, platformdirs, siphash24, pytest wheels for cp312)
# and .shared/ (a copy of ../shared: models/ and images/). Writes logs and JSON under $OUT.
#   bash benchmarks/gpu_run.sh [tune]      (tune: benchmarks/gpu_tune.sh first)
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 EDGEINFER_SHARED=$PWD/.shared EDGEINFER_CACHE_DIR=/tmp/eicache
mkdir -p /tmp/icd
ldconfig -p | grep -m1 'libnvidia-opencl.so.1' | awk '{print $NF}' > /tmp/icd/nvidia.icd
export OCL_ICD_VENDORS=/tmp/icd
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
# the NumPy backend's native kernels, built in place (setuptools where it is there, else the compiler directly)
python3 setup.py -q build_ext --inplace >"$OUT/build_ext.log" 2>&1 || gcc -O3 -Wno-psabi -fPIC -shared \
  kernels/cpu/conv_hwc.c -o "edgeinfer/_cpu_kernels$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
lscpu | grep -m1 'Model name' | tee -a "$OUT/gpu.txt"
python3 -m edgeinfer.cli devices | tee -a "$OUT/gpu.txt"
if [ "${1:-}" = tune ]; then  # the tuner, the search comparison and tuned-vs-default times: gpu_tune.sh
  bash benchmarks/gpu_tune.sh 240 0
fi
python3 benchmarks/nvidia_opencl_check.py --runs 100 2>&1 | tee "$OUT/nvidia_opencl_check.log" | tail -40
python3 -m pytest -q -p no:cacheprovider -k "opencl" tests/test_opencl.py tests/test_opencl_blocked.py tests/test_detection.py \
  tests/test_conformance.py tests/test_device_preprocess.py 2>&1 | tee "$OUT/pytest_opencl.log" | tail -15
python3 -m pytest -q -p no:cacheprovider tests/test_native_kernels.py tests/test_numpy_executor_plans.py tests/test_models.py \
  tests/test_numpy_channels_last.py 2>&1 | tee "$OUT/pytest_numpy.log" | tail -5
