#!/usr/bin/env bash
# Builds native/kernels/ into a shared library that Python loads with
# torch.ops.load_library(), for the kernel tests and the benchmark while they run outside
# the Node addon. Uses the libtorch that `python3 -c "import torch"` uses, so the ops
# register in that process's dispatcher. The CPU parts always (every *.cpp except
# *_cuda.cpp); the CUDA parts (*_cuda.cpp, *.cu) too when that torch was built with CUDA
# and nvcc is found (scripts/tests/test_attention_cuda.py, scripts/bench/attention_cuda.py).
#
# Usage: scripts/build_kernels_for_python.sh [OUTPUT.so]
#   env: PYTHON (default python3), CXX (default g++), CXXFLAGS_EXTRA, JOBS (default nproc),
#        WITH_CUDA (auto | 0 | 1, default auto), NVCC (default nvcc on PATH or
#        /usr/local/cuda/bin/nvcc), CUDA_ARCHS (default "80 90")
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/build/kernels-python/libtorch_diffusion_kernels.so}"
PYTHON="${PYTHON:-python3}"
CXX="${CXX:-g++}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"

NVCC="${NVCC:-$(command -v nvcc || true)}"
if [ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc; fi
WITH_CUDA="${WITH_CUDA:-auto}"
if [ "$WITH_CUDA" = auto ]; then
  WITH_CUDA=0
  if [ -n "$NVCC" ] && "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then WITH_CUDA=1; fi
fi
if [ "$WITH_CUDA" = 1 ] && [ -z "$NVCC" ]; then echo "build_kernels_for_python: WITH_CUDA=1 but nvcc was not found (set NVCC)" >&2; exit 1; fi

read -r -a TORCH_FLAGS < <(WITH_CUDA="$WITH_CUDA" "$PYTHON" - <<'PY'
import os
import torch
from torch.utils import cpp_extension as ce
cuda = os.environ["WITH_CUDA"] == "1"
def paths(fn):
    if not cuda:
        return fn()
    try:
        return fn(device_type="cuda")  # torch >= 2.1
    except TypeError:
        return fn(cuda=True)
# -isystem on the compiler's own default dirs would break #include_next in libstdc++.
skip = {"/usr/include", "/usr/local/include"}
flags = ["-isystem" + p for p in paths(ce.include_paths) if os.path.isdir(p) and os.path.realpath(p) not in skip]
flags += ["-L" + p for p in paths(ce.library_paths) if os.path.isdir(p)]
flags.append("-D_GLIBCXX_USE_CXX11_ABI=%d" % int(torch._C._GLIBCXX_USE_CXX11_ABI))
print(" ".join(flags))
PY
)

OBJDIR="$(dirname "$OUT")/obj"
mkdir -p "$OBJDIR"
CXXFLAGS=(-std=c++17 -O3 -DNDEBUG -fPIC -fvisibility=hidden -Wall -Wextra -Wno-unused-parameter ${CXXFLAGS_EXTRA:-})

SOURCES=()
for src in "$ROOT"/native/kernels/*.cpp; do
  case "$src" in *_cuda.cpp) [ "$WITH_CUDA" = 1 ] || continue ;; esac
  SOURCES+=("$src")
done
LIBS=(-ltorch -ltorch_cpu -lc10)
if [ "$WITH_CUDA" = 1 ]; then
  # attention_kernels_linked() names the CUDA registration too (attention.h).
  CXXFLAGS+=(-DTORCH_DIFFUSION_WITH_CUDA)
  LIBS+=(-ltorch_cuda -lc10_cuda -lcudart)
fi

# Compile in parallel (JOBS at a time); fail if any compile fails.
pids=()
for src in "${SOURCES[@]}"; do
  obj="$OBJDIR/$(basename "${src%.cpp}").o"
  "$CXX" "${CXXFLAGS[@]}" "${TORCH_FLAGS[@]}" -c "$src" -o "$obj" &
  pids+=($!)
  if [ "${#pids[@]}" -ge "$JOBS" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
CUDA_OBJS=()
if [ "$WITH_CUDA" = 1 ]; then
  GENCODE=()
  for arch in ${CUDA_ARCHS:-80 90}; do GENCODE+=(-gencode "arch=compute_$arch,code=sm_$arch"); done
  for src in "$ROOT"/native/kernels/*.cu; do
    obj="$OBJDIR/$(basename "${src%.cu}").cu.o"
    "$NVCC" -std=c++17 -O3 -DNDEBUG "${GENCODE[@]}" -Xcompiler -fPIC -Xcompiler -fvisibility=hidden -c "$src" -o "$obj" &
    pids+=($!)
    CUDA_OBJS+=("$obj")
  done
fi
for pid in "${pids[@]}"; do wait "$pid"; done

OBJS=()
for src in "${SOURCES[@]}"; do OBJS+=("$OBJDIR/$(basename "${src%.cpp}").o"); done
"$CXX" -shared -o "$OUT" "${OBJS[@]}" "${CUDA_OBJS[@]}" "${TORCH_FLAGS[@]}" "${LIBS[@]}"
echo "$OUT"
