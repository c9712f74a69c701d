// noise.cu — the forward diffusion step q(x_t | x_0) with eps drawn in the
// kernel from Philox (nothing is read for the noise):
//   noise_add_fwd  eps[i] = philox normal (seed, step, stream, offset + i),
//                  step = *step_at when step_at is not null (a training
//                  graph's per-step scalars in device memory), else `step`
//                  x_t[i] = a[s] * x0[i] + b[s] * eps[i], s = i / per_sample
//                  (offset: the first element's global index, so a shard of a
//                  batch draws the batch's own noise; 0 for a whole batch)
//                  (a = sqrt(abar), b = sqrt(1 - abar), one per sample)
//   noise_add_bwd  dx0[i] = a[s] * dx_t[i]
//   normal_fill_fwd out[i] = philox normal (seed, step, stream, i), for the
//                  samplers' fresh noise
//   philox_words_fill out[i] = raw Philox word i (block i / 4, lane i % 4):
//                  the integer stream every device shares bit for bit (tests)
// Launch: one thread per Philox block of 4 elements, grid-stride; block 256,
// grid min(ceil(ceil(total / 4) / 256), 8192). noise_add_bwd: one thread per
// element, grid-stride.
// CPU twin: crates/tensor/src/cpu/noise.rs (and philox.rs). The integer
// Philox words are bit-identical; the f32 Box-Muller uses CUDA's logf/cosf/
// sinf, within a few ulp of the CPU's (glibc's). Compiled with --fmad=false
// (gpu/nvrtc_policy.rs): x_t = a x0 + b eps rounds twice, as on the CPU.
// Versions: v3 (step_at: the Philox step read from device memory).
#include "common.cuh"
#include "philox.cuh"

extern "C" __global__ void noise_add_fwd_f32(float* __restrict__ x_t, float* __restrict__ eps,
                                             const float* __restrict__ x0, const float* __restrict__ a,
                                             const float* __restrict__ b, unsigned long long per_sample,
                                             unsigned long long total, unsigned long long seed, unsigned int step,
                                             unsigned int stream, unsigned long long offset,
                                             const unsigned int* __restrict__ step_at) {
    if (step_at) step = *step_at;
    // Global Philox blocks covering elements [offset, offset + total).
    const unsigned long long first = offset / 4;
    const unsigned long long blocks = (offset + total + 3) / 4 - first;
    for (unsigned long long k = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; k < blocks;
         k += (unsigned long long)gridDim.x * blockDim.x) {
        const philox_f32x4 z = philox_normal4(seed, step, stream, first + k);
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            unsigned long long g = (first + k) * 4 + l;
            if (g >= offset && g < offset + total) {
                unsigned long long i = g - offset;
                unsigned long long s = i / per_sample;
                eps[i] = z.v[l];
                x_t[i] = a[s] * x0[i] + b[s] * z.v[l];
            }
        }
    }
}

extern "C" __global__ void noise_add_bwd_f32(float* __restrict__ dx0, const float* __restrict__ dx_t,
                                             const float* __restrict__ a, unsigned long long per_sample,
                                             unsigned long long total) {
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (unsigned long long)gridDim.x * blockDim.x)
        dx0[i] = a[i / per_sample] * dx_t[i];
}

extern "C" __global__ void normal_fill_fwd_f32(float* __restrict__ out, unsigned long long total,
                                               unsigned long long seed, unsigned int step, unsigned int stream) {
    const unsigned long long blocks = (total + 3) / 4;
    for (unsigned long long blk = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; blk < blocks;
         blk += (unsigned long long)gridDim.x * blockDim.x) {
        const philox_f32x4 z = philox_normal4(seed, step, stream, blk);
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            unsigned long long i = blk * 4 + l;
            if (i < total) out[i] = z.v[l];
        }
    }
}

extern "C" __global__ void philox_words_fill_u32(unsigned int* __restrict__ out, unsigned long long total,
                                                 unsigned long long seed, unsigned int step, unsigned int stream) {
    const unsigned long long blocks = (total + 3) / 4;
    for (unsigned long long blk = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; blk < blocks;
         blk += (unsigned long long)gridDim.x * blockDim.x) {
        const philox_u32x4 w = philox_block_bits(seed, step, stream, blk);
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            unsigned long long i = blk * 4 + l;
            if (i < total) out[i] = w.v[l];
        }
    }
}
