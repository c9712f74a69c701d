// elementwise.cu — elementwise arithmetic on flat f32 buffers of n elements:
//   add_fwd       out = a + b
//   sub_fwd       out = a - b
//   mul_fwd       out = a * b
//   scale_fwd     out = s * x
//   add_scaled_fwd out = a + s * b
//   add_inplace   acc += x
//   scale_inplace t *= s
// Launch: 1-D grid-stride loop, block 256, grid min(ceil(n / 256), 8192);
// any grid is correct (each element is written by exactly one thread).
// CPU twin: crates/tensor/src/cpu/elementwise.rs. `s` is the f64 scalar
// rounded to f32 on the host, as the CPU does (T::from_f64).
// Versions: v1 scalar loads (memory bound; vectorised float4 loads are a
// possible v2, left out so the emulator needs no vector types).
#include "common.cuh"

#define GRID_STRIDE(i, n)                                                                       \
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (unsigned long long)gridDim.x * blockDim.x)

extern "C" __global__ void add_fwd_f32(float* __restrict__ out, const float* __restrict__ a,
                                       const float* __restrict__ b, unsigned long long n) {
    GRID_STRIDE(i, n) { out[i] = a[i] + b[i]; }
}

extern "C" __global__ void sub_fwd_f32(float* __restrict__ out, const float* __restrict__ a,
                                       const float* __restrict__ b, unsigned long long n) {
    GRID_STRIDE(i, n) { out[i] = a[i] - b[i]; }
}

extern "C" __global__ void mul_fwd_f32(float* __restrict__ out, const float* __restrict__ a,
                                       const float* __restrict__ b, unsigned long long n) {
    GRID_STRIDE(i, n) { out[i] = a[i] * b[i]; }
}

extern "C" __global__ void scale_fwd_f32(float* __restrict__ out, const float* __restrict__ x, float s,
                                         unsigned long long n) {
    GRID_STRIDE(i, n) { out[i] = s * x[i]; }
}

extern "C" __global__ void add_scaled_fwd_f32(float* __restrict__ out, const float* __restrict__ a,
                                              const float* __restrict__ b, float s, unsigned long long n) {
    GRID_STRIDE(i, n) { out[i] = a[i] + s * b[i]; }
}

extern "C" __global__ void add_inplace_f32(float* __restrict__ acc, const float* __restrict__ x,
                                           unsigned long long n) {
    GRID_STRIDE(i, n) { acc[i] += x[i]; }
}

extern "C" __global__ void scale_inplace_f32(float* __restrict__ t, float s, unsigned long long n) {
    GRID_STRIDE(i, n) { t[i] *= s; }
}
