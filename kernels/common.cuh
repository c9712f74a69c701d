// common.cuh — helpers shared by every kernels/*.cu file.
//
// Deterministic reductions only: warp sums use a fixed xor-butterfly, block
// sums combine the per-warp results in warp order, and f64 block sums use a
// fixed shared-memory tree. No float atomics anywhere, so a reduction gives
// the same bits on every run.
//
// Plain CUDA C++ (no inline PTX, no library headers) so the CPU emulator can
// compile it as host C++ with its shim header. Every helper that contains a
// __syncthreads() must be called by all threads of the block; every helper
// that shuffles must be called by all 32 lanes of the warp.
#pragma once

#define DIFFUSE_FULL_MASK 0xffffffffu

// Sum over the 32 lanes of a warp; every lane gets the result.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(DIFFUSE_FULL_MASK, v, o);
    return v;
}

// Max over the 32 lanes of a warp; every lane gets the result.
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(DIFFUSE_FULL_MASK, v, o));
    return v;
}

// Block-wide sum of one float per thread; every thread gets the result.
// blockDim.x must be a multiple of 32 and at most 1024 (blockDim.y = z = 1).
// `scratch` holds at least 32 floats of shared memory; the helper ends with
// a barrier, so it may be reused right away.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? scratch[lane] : 0.0f;
    t = warp_sum(t);  // every warp reduces the same values in the same order
    __syncthreads();
    return t;
}

// Two block-wide sums at once (one pass over the barriers); scratch >= 64 floats.
__device__ __forceinline__ void block_sum2(float& a, float& b, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    a = warp_sum(a);
    b = warp_sum(b);
    if (lane == 0) {
        scratch[warp] = a;
        scratch[32 + warp] = b;
    }
    __syncthreads();
    float ta = lane < nwarps ? scratch[lane] : 0.0f;
    float tb = lane < nwarps ? scratch[32 + lane] : 0.0f;
    a = warp_sum(ta);
    b = warp_sum(tb);
    __syncthreads();
}

// Block-wide sum of one double per thread through a shared-memory tree
// (no double shuffles); every thread gets the result. blockDim.x must be a
// power of two, at most 1024; `scratch` holds blockDim.x doubles. Ends with
// a barrier.
__device__ __forceinline__ double block_sum_f64(double v, double* scratch) {
    const int t = threadIdx.x;
    scratch[t] = v;
    __syncthreads();
    for (int s = blockDim.x >> 1; s > 0; s >>= 1) {
        if (t < s) scratch[t] = scratch[t] + scratch[t + s];
        __syncthreads();
    }
    double r = scratch[0];
    __syncthreads();
    return r;
}

// x * sigmoid(x), as cpu/activation.rs writes it.
__device__ __forceinline__ float silu_f(float x) {
    return x * (1.0f / (1.0f + expf(-x)));
}

// d silu / dx = s * (1 + x * (1 - s)), s = sigmoid(x).
__device__ __forceinline__ float silu_grad_f(float x) {
    float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
}

