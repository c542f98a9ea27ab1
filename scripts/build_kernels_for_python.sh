#!/usr/bin/env bash
# Builds the CPU parts of native/kernels/ (every *.cpp except *_cuda.cpp) into a shared
# library that Python loads with torch.ops.load_library(), for the kernel tests and the
# benchmark while they run outside the Node addon. Uses the libtorch that
# `python3 -c "import torch"` uses, so the ops register in that process's dispatcher.
#
# Usage: scripts/build_kernels_for_python.sh [OUTPUT.so]
#   env: PYTHON (default python3), CXX (default g++), CXXFLAGS_EXTRA, JOBS (default nproc)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/build/kernels-python/libtorch_diffusion_kernels.so}"
PYTHON="${PYTHON:-python3}"
CXX="${CXX:-g++}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"

read -r -a TORCH_FLAGS < <("$PYTHON" - <<'PY'
import os
import torch
from torch.utils import cpp_extension as ce
# -isystem on the compiler's own default dirs would break #include_next in libstdc++.
skip = {"/usr/include", "/usr/local/include"}
flags = ["-isystem" + p for p in ce.include_paths() if os.path.isdir(p) and os.path.realpath(p) not in skip]
flags += ["-L" + p for p in ce.library_paths() if os.path.isdir(p)]
flags.append("-D_GLIBCXX_USE_CXX11_ABI=%d" % int(torch._C._GLIBCXX_USE_CXX11_ABI))
print(" ".join(flags))
PY
)

OBJDIR="$(dirname "$OUT")/obj"
mkdir -p "$OBJDIR"
CXXFLAGS=(-std=c++17 -O3 -DNDEBUG -fPIC -fvisibility=hidden -Wall -Wextra -Wno-unused-parameter ${CXXFLAGS_EXTRA:-})

SOURCES=()
for src in "$ROOT"/native/kernels/*.cpp; do
  case "$src" in *_cuda.cpp) continue ;; esac
  SOURCES+=("$src")
done

# Compile in parallel (JOBS at a time); fail if any compile fails.
pids=()
for src in "${SOURCES[@]}"; do
  obj="$OBJDIR/$(basename "${src%.cpp}").o"
  "$CXX" "${CXXFLAGS[@]}" "${TORCH_FLAGS[@]}" -c "$src" -o "$obj" &
  pids+=($!)
  if [ "${#pids[@]}" -ge "$JOBS" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for pid in "${pids[@]}"; do wait "$pid"; done

OBJS=()
for src in "${SOURCES[@]}"; do OBJS+=("$OBJDIR/$(basename "${src%.cpp}").o"); done
"$CXX" -shared -o "$OUT" "${OBJS[@]}" "${TORCH_FLAGS[@]}" -ltorch -ltorch_cpu -lc10
echo "$OUT"
