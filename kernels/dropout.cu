// dropout.cu — inverted dropout with the mask drawn from Philox:
//   out[i] = keep(i) ? x[i] * scale : 0,
//   keep(i) = (philox word (seed, step, stream, i) >> 8) >= threshold,
//   threshold = round(p * 2^24) and scale = (float)(1 / (1 - p)) computed on
//   the host (philox::dropout_threshold, f64 then f32, as the CPU).
// The op is diagonal and linear, so backward is the same map on dy; the mask
// is regenerated, never stored. Masks are bit-identical to the CPU's.
// Launch: one thread per Philox block of 4 elements, grid-stride; block 256,
// grid min(ceil(ceil(n / 4) / 256), 8192).
// CPU twin: crates/tensor/src/cpu/dropout.rs.
// Versions: v1.
#include "common.cuh"
#include "philox.cuh"

__device__ __forceinline__ void dropout_apply(float* __restrict__ out, const float* __restrict__ x,
                                              unsigned long long n, unsigned long long seed, unsigned int step,
                                              unsigned int stream, unsigned int threshold, float scale) {
    const unsigned long long blocks = (n + 3) / 4;
    for (unsigned long long blk = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; blk < blocks;
         blk += (unsigned long long)gridDim.x * blockDim.x) {
        philox_u32x4 w = philox_block_bits(seed, step, stream, blk);
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            unsigned long long i = blk * 4 + l;
            if (i < n) out[i] = philox_keep(w.v[l], threshold) ? x[i] * scale : 0.0f;
        }
    }
}

extern "C" __global__ void dropout_fwd_f32(float* __restrict__ y, const float* __restrict__ x, unsigned long long n,
                                           unsigned long long seed, unsigned int step, unsigned int stream,
                                           unsigned int threshold, float scale) {
    dropout_apply(y, x, n, seed, step, stream, threshold, scale);
}

extern "C" __global__ void dropout_bwd_f32(float* __restrict__ dx, const float* __restrict__ dy,
                                           unsigned long long n, unsigned long long seed, unsigned int step,
                                           unsigned int stream, unsigned int threshold, float scale) {
    dropout_apply(dx, dy, n, seed, step, stream, threshold, scale);
}
