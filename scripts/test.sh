#!/usr/bin/env bash
# The project's test command (README, .ci/run):
#  0. checks formatting (rustfmt.toml) and clippy with warnings as errors;
#  1. installs the pinned NVRTC/ptxas wheels from PyPI into .cuda-wheels/;
#  2. runs every test of the workspace (CPU reference vs float64 oracles and
#     finite differences, property tests with a fixed seed, U-Net vs the
#     PyTorch vectors, trainer end to end, every kernel compiled by NVRTC for
#     compute_80 and compute_90 (PTX) and sm_80 and sm_90 (CUBIN), every per-device test on the CPU and on the
#     CUDA emulator in forward thread order, 300 bf16 training steps on the
#     emulated tensor cores against the CPU's fp32 run (~7 minutes); the
#     _cuda ones show as ignored without a GPU);
#  3. reruns the emulator's per-device tests (names ending in _emu) with its
#     threads in reverse, in a seeded shuffled order and in the two
#     warp-ahead orders (the emulator's hazard detector, on by default,
#     reports races in any order; with it off, a missing barrier shows up as
#     wrong values in some order);
#  4. reruns them without memory reuse (DIFFUSE_GPU_ALLOC=direct);
#  5. prints the per-kernel register / shared memory / spill table (fails on
#     any spill);
#  6. prepares the GPU-check folder from the test build and runs the GPU
#     check's dry run on the emulator and the CPU (scripts/gpu-check.sh), so
#     that neither half rots before a GPU is lent (~3 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings 2>&1

bash scripts/setup-cuda-wheels.sh > /dev/null
source scripts/cuda-env.sh

echo "== cargo test --workspace (emulator thread order: forward)"
DIFFUSE_EMU_ORDER=forward cargo test --workspace --no-fail-fast 2>&1

for order in reverse shuffle:20261122 warp-ahead warp-ahead-reverse; do
    echo "== per-device tests on the emulator, thread order $order"
    DIFFUSE_EMU_ORDER=$order cargo test -p diffuse-tensor 2>&1 -- _emu
    DIFFUSE_EMU_ORDER=$order cargo test -p diffuse --test '*_per_device' --test engine_graph 2>&1 -- _emu
done

# Without memory reuse (every buffer a driver allocation, freed at once) the
# emulator's guard pages also catch use-after-free; the default caching
# allocator ran above.
for order in forward shuffle:20261122; do
    echo "== per-device tests on the emulator without memory reuse, thread order $order"
    DIFFUSE_GPU_ALLOC=direct DIFFUSE_EMU_ORDER=$order cargo test -p diffuse-tensor 2>&1 -- _emu
    DIFFUSE_GPU_ALLOC=direct DIFFUSE_EMU_ORDER=$order cargo test -p diffuse --test '*_per_device' --test engine_graph 2>&1 -- _emu
done

echo "== kernel resources (ptxas -arch=sm_90)"
bash scripts/check-kernels.sh

echo "== scripts/gpu-check.sh prepare --debug, run --dry-run (emulator and CPU)"
gpu_check_start=$(date +%s)
bash scripts/gpu-check.sh prepare --debug
gpu_check_out="$(mktemp -d)"
bash scripts/gpu-check.sh run --dry-run "$gpu_check_out"
rm -rf "$gpu_check_out"
echo "gpu-check prepare + dry run: $(($(date +%s) - gpu_check_start)) s"
