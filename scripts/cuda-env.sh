# Source me (after `bash scripts/setup-cuda-wheels.sh`):
#   source scripts/cuda-env.sh
# Points cudarc's NVRTC loader, the kernel compile test and check-kernels.sh
# at the PyPI CUDA wheels in .cuda-wheels/.
_diffuse_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CUDA_WHEELS_DIR="${CUDA_WHEELS_DIR:-$_diffuse_root/.cuda-wheels}"
case ":${LD_LIBRARY_PATH:-}:" in
    *":$CUDA_WHEELS_DIR/nvidia/cuda_nvrtc/lib:"*) ;;
    *) export LD_LIBRARY_PATH="$CUDA_WHEELS_DIR/nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
esac
# NCCL (several GPUs, issue 18) when the nvidia-nccl-cu12 wheel was put there
if [[ -d "$CUDA_WHEELS_DIR/nvidia/nccl/lib" ]]; then
    case ":$LD_LIBRARY_PATH:" in
        *":$CUDA_WHEELS_DIR/nvidia/nccl/lib:"*) ;;
        *) export LD_LIBRARY_PATH="$CUDA_WHEELS_DIR/nvidia/nccl/lib:$LD_LIBRARY_PATH" ;;
    esac
fi
# the runtime wheel has the CUDA headers, the nvcc wheel crt/mma.h (<mma.h>)
export DIFFUSE_NVRTC_INCLUDE="$CUDA_WHEELS_DIR/nvidia/cuda_runtime/include:$CUDA_WHEELS_DIR/nvidia/cuda_nvcc/include"
export PTXAS="$CUDA_WHEELS_DIR/nvidia/cuda_nvcc/bin/ptxas"
unset _diffuse_root
