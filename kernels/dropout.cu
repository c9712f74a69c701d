// dropout.cu — inverted dropout with the mask drawn from Philox:
//   out[i] = keep(i) ? x[i] * scale : 0,
//   keep(i) = bits16(seed, step, stream, offset + i) >= threshold, where
//   bits16(g) = half g % 2 (low half first) of word (g / 2) % 4 of Philox
//   block g / 8: eight elements a block
//   (offset: the first element's global index, for a shard of a batch;
//   step = *step_at when step_at is not null: a training graph's per-step
//   scalars in device memory),
//   threshold = round(p * 2^16) and scale = (float)(1 / (1 - p)) computed on
//   the host (philox::mask_threshold, f64 then f32, as the CPU).
// The op is diagonal and linear, so backward is the same map on dy; the mask
// is regenerated, never stored. Masks are bit-identical to the CPU's.
// Launch: one thread per Philox block of 8 elements, grid-stride; block 256,
// grid min(ceil(blocks / 256), 8192).
// CPU twin: crates/tensor/src/cpu/dropout.rs.
// Versions: v3 (step_at), v4 (16 bits an element, 8 elements a block).
#include "common.cuh"
#include "philox.cuh"

__device__ __forceinline__ void dropout_apply(float* __restrict__ out, const float* __restrict__ x,
                                              unsigned long long n, unsigned long long seed, unsigned int step,
                                              unsigned int stream, unsigned int threshold, float scale,
                                              unsigned long long offset) {
    // Global Philox blocks covering elements [offset, offset + n).
    const unsigned long long first = offset / 8;
    const unsigned long long blocks = (offset + n + 7) / 8 - first;
    for (unsigned long long k = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; k < blocks;
         k += (unsigned long long)gridDim.x * blockDim.x) {
        philox_u32x4 w = philox_block_bits(seed, step, stream, first + k);
#pragma unroll
        for (int l = 0; l < 8; ++l) {
            unsigned long long g = (first + k) * 8 + l;
            unsigned int bits = (w.v[l >> 1] >> ((l & 1) * 16)) & 0xffffu;
            if (g >= offset && g < offset + n) out[g - offset] = bits >= threshold ? x[g - offset] * scale : 0.0f;
        }
    }
}

extern "C" __global__ void dropout_fwd_f32(float* __restrict__ y, const float* __restrict__ x, unsigned long long n,
                                           unsigned long long seed, unsigned int step, unsigned int stream,
                                           unsigned int threshold, float scale, unsigned long long offset,
                                           const unsigned int* __restrict__ step_at) {
    dropout_apply(y, x, n, seed, step_at ? *step_at : step, stream, threshold, scale, offset);
}

extern "C" __global__ void dropout_bwd_f32(float* __restrict__ dx, const float* __restrict__ dy,
                                           unsigned long long n, unsigned long long seed, unsigned int step,
                                           unsigned int stream, unsigned int threshold, float scale,
                                           unsigned long long offset, const unsigned int* __restrict__ step_at) {
    dropout_apply(dx, dy, n, seed, step_at ? *step_at : step, stream, threshold, scale, offset);
}
