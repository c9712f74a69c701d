// sampling.cu — per-sample scaling and clamping, what the diffusion targets
// (one timestep per image) and the samplers (x0 clipping) need beyond plain
// elementwise ops:
//   scale_per_sample_fwd  y[i] = x[i] * s[i / per_sample]
//   clamp_fwd             y = x < lo ? lo : (x > hi ? hi : x); NaN stays NaN
//                         (lo, hi rounded to f32 on the host, as the CPU)
// Launch: 1-D grid-stride, block 256, grid min(ceil(n / 256), 8192).
// CPU twin: crates/tensor/src/cpu/sampling.rs.
// Versions: v1.
#include "common.cuh"

extern "C" __global__ void scale_per_sample_fwd_f32(float* __restrict__ y, const float* __restrict__ x,
                                                    const float* __restrict__ s, unsigned long long per_sample,
                                                    unsigned long long n) {
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x)
        y[i] = x[i] * s[i / per_sample];
}

extern "C" __global__ void clamp_fwd_f32(float* __restrict__ y, const float* __restrict__ x, float lo, float hi,
                                         unsigned long long n) {
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const float v = x[i];
        y[i] = v < lo ? lo : (v > hi ? hi : v);
    }
}
