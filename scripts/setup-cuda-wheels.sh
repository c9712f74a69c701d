#!/usr/bin/env bash
# Installs the CUDA 12.9 compiler pieces from PyPI wheels into .cuda-wheels/
# (git-ignored), for proving that every kernels/*.cu compiles without a GPU
# or a CUDA toolkit:
#   nvidia-cuda-nvrtc   libnvrtc.so.12 (+ builtins): NVRTC, loaded by cudarc
#   nvidia-cuda-runtime the CUDA headers, for NVRTC's include path
#   nvidia-cuda-nvcc    ptxas, for register / shared-memory / spill reports
#   nvidia-nccl         libnccl.so.2, only with --nccl (several GPUs; ~300 MB)
# One pip call, skipped when the wheels are already there (idempotent).
#
# Usage:  bash scripts/setup-cuda-wheels.sh      # install, print the exports
#         bash scripts/setup-cuda-wheels.sh --nccl   # also NCCL, for `train --gpus`
#         source scripts/cuda-env.sh             # set LD_LIBRARY_PATH etc.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${CUDA_WHEELS_DIR:-$ROOT/.cuda-wheels}"
STAMP="$WHEELS/.installed-12.9"
NCCL=0
for arg in "$@"; do
    case "$arg" in
        --nccl) NCCL=1 ;;
        *) echo "setup-cuda-wheels: unknown option $arg (the only one is --nccl)" >&2; exit 2 ;;
    esac
done

if [[ -f "$STAMP" && -d "$WHEELS/nvidia/cuda_nvrtc/lib" && -x "$WHEELS/nvidia/cuda_nvcc/bin/ptxas" ]]; then
    echo "setup-cuda-wheels: already installed in $WHEELS" >&2
else
    PY="$(command -v python3 || command -v python)"
    "$PY" -m pip install --quiet --root-user-action=ignore --no-deps --target "$WHEELS" --upgrade \
        nvidia-cuda-nvrtc-cu12==12.9.86 \
        nvidia-cuda-runtime-cu12==12.9.79 \
        nvidia-cuda-nvcc-cu12==12.9.86
    # wheels drop the executable bit on some pip versions
    chmod +x "$WHEELS"/nvidia/cuda_nvcc/bin/* 2>/dev/null || true
    touch "$STAMP"
    echo "setup-cuda-wheels: installed into $WHEELS" >&2
fi

# NCCL is only needed to train on several GPUs, and large: on request only.
if [[ "$NCCL" == 1 ]]; then
    if [[ -f "$WHEELS/nvidia/nccl/lib/libnccl.so.2" ]]; then
        echo "setup-cuda-wheels: NCCL already installed in $WHEELS" >&2
    else
        PY="$(command -v python3 || command -v python)"
        "$PY" -m pip install --quiet --root-user-action=ignore --no-deps --target "$WHEELS/.nccl" --upgrade \
            nvidia-nccl-cu12==2.27.7
        # pip --target refuses to merge into an existing nvidia/ package dir: move it in
        mkdir -p "$WHEELS/nvidia"
        rm -rf "$WHEELS/nvidia/nccl"
        mv "$WHEELS/.nccl/nvidia/nccl" "$WHEELS/nvidia/nccl"
        rm -rf "$WHEELS/.nccl"
        echo "setup-cuda-wheels: NCCL installed into $WHEELS/nvidia/nccl" >&2
    fi
fi

# What to export (also done by `source scripts/cuda-env.sh`).
echo "export CUDA_WHEELS_DIR=$WHEELS"
echo "export LD_LIBRARY_PATH=$WHEELS/nvidia/cuda_nvrtc/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
echo "export DIFFUSE_NVRTC_INCLUDE=$WHEELS/nvidia/cuda_runtime/include:$WHEELS/nvidia/cuda_nvcc/include"
echo "export PTXAS=$WHEELS/nvidia/cuda_nvcc/bin/ptxas"
if [[ -d "$WHEELS/nvidia/nccl/lib" ]]; then
    echo "export LD_LIBRARY_PATH=$WHEELS/nvidia/nccl/lib:\$LD_LIBRARY_PATH"
fi
