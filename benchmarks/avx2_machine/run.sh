#!/usr/bin/env bash
# Run a command as if this AVX-512 x86 machine were an AVX2-only one, for everything in the process:
#   bash benchmarks/avx2_machine/run.sh python benchmarks/compare.py --backends cpu,opencl
# - cpuid_avx2.so (LD_PRELOAD) hides AVX-512 from CPUID, so onnxruntime, NumPy and OpenBLAS pick their AVX2
#   kernels (needs the CPU's `cpuid_fault` flag; exits 97 where there is none);
# - PoCL builds for Haswell with its AVX2 builtin library (LLVM names the CPU by its model number, not by
#   CPUID's feature bits, so PoCL must be told); its device key then names haswell, and the AVX2 table applies;
# - edgeinfer plans CPU kernels for the AVX2 class (its host detection reads /proc/cpuinfo, which CPUID
#   faulting does not change);
# - kernel caches of their own, so AVX2 binaries never mix with the machine's own.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
grep -qw cpuid_fault /proc/cpuinfo || { echo "run.sh: no cpuid_fault flag in /proc/cpuinfo: cannot hide AVX-512" >&2; exit 97; }
cache="${XDG_CACHE_HOME:-$HOME/.cache}/edgeinfer-avx2-machine"
mkdir -p "$cache/edgeinfer" "$cache/pocl"
lib="$cache/cpuid_avx2.so"
if [[ ! -f "$lib" || "$here/cpuid_avx2.c" -nt "$lib" ]]; then
    gcc -O2 -shared -fPIC -o "$lib.tmp" "$here/cpuid_avx2.c" -ldl && mv "$lib.tmp" "$lib"
fi
export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
export POCL_LLVM_CPU_NAME=haswell POCL_KERNELLIB_NAME=avx2 EDGEINFER_CPU_ISA=avx2
export EDGEINFER_CACHE_DIR="$cache/edgeinfer" POCL_CACHE_DIR="$cache/pocl"
exec "$@"
