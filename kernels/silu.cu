// silu.cu — SiLU y = x * sigmoid(x) and its backward
// dx = dy * s * (1 + x * (1 - s)), s = sigmoid(x), on flat buffers.
// Launch: 1-D grid-stride, block 256, grid min(ceil(n / 256), 8192).
// CPU twin: crates/tensor/src/cpu/silu.rs.
// Versions: v1 only (memory bound; expf is the only real work).
#include "common.cuh"

extern "C" __global__ void silu_fwd_f32(float* __restrict__ y, const float* __restrict__ x, unsigned long long n) {
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x)
        y[i] = silu_f(x[i]);
}

extern "C" __global__ void silu_bwd_f32(float* __restrict__ dx, const float* __restrict__ dy,
                                        const float* __restrict__ x, unsigned long long n) {
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x)
        dx[i] = dy[i] * silu_grad_f(x[i]);
}
