// embedding.cu — sinusoidal timestep embedding:
//   emb[n, k] = sin(t_n f_k), emb[n, half + k] = cos(t_n f_k),
//   f_k = exp(-k ln(10000) / (half - 1)) (f_0 = 1, also when half == 1),
//   half = dim / 2, and a zero last column when dim is odd.
// Computed in f64 and rounded once, as the CPU does: t reaches ~1000, so an
// f32 product t * f_k would already be off by ~1e-4 before the sine.
// Launch: one thread per output element, block 256, grid ceil(n*dim / 256).
// CPU twin: crates/tensor/src/cpu/embedding.rs. No backward (t is data).
// Versions: v1 (tiny: n*dim is about 128*128 in the U-Net).
#include "common.cuh"

extern "C" __global__ void timestep_embedding_fwd_f32(float* __restrict__ emb, const float* __restrict__ t, int n,
                                                      int dim) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * dim) return;  // no barrier in this kernel
    const int row = (int)(i / dim), col = (int)(i - (long long)row * dim);
    const int half = dim / 2;
    if (col >= 2 * half) {
        emb[i] = 0.0f;
        return;
    }
    const int k = col < half ? col : col - half;
    double f = 1.0;
    if (k > 0) f = exp(-(double)k * 9.210340371976184 / (double)(half - 1));  // ln(10000)
    const double arg = (double)t[row] * f;
    emb[i] = (float)(col < half ? sin(arg) : cos(arg));
}
