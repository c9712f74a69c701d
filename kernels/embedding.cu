// embedding.cu — the two embeddings that condition the U-Net.
//
// timestep_embedding_fwd_f32: sinusoidal timestep embedding
//   emb[n, k] = sin(t_n f_k), emb[n, half + k] = cos(t_n f_k),
//   f_k = exp(-k ln(10000) / (half - 1)) (f_0 = 1, also when half == 1),
//   half = dim / 2, and a zero last column when dim is odd.
//   Computed in f64 and rounded once, as the CPU does: t reaches ~1000, so an
//   f32 product t * f_k would already be off by ~1e-4 before the sine.
//   Launch: one thread per output element, block 256, grid ceil(n*dim / 256).
//   No backward (t is data).
//
// class_embedding_fwd_f32 / class_embedding_bwd_f32: a learned class table
//   (diffusers' `class_embedding`, an nn.Embedding), rows x dim:
//   forward  out[n, d] = table[label_n, d]                 (a gather)
//   backward dtable[k, d] = sum over n with label_n == k of dout[n, d],
//            summed in increasing n, so every device adds in the same order
//            and no float atomics are needed.
//   Labels arrive as floats (exact below 2^24) and are checked on the host
//   (0 <= label < rows) before the launch.
//   Launch: one thread per output element (forward n*dim, backward rows*dim),
//   block 256, grid ceil(total / 256). The backward reads all n labels per
//   thread: n is a batch (tens to hundreds), so this is cheap and simple.
//
// CPU twin: crates/tensor/src/cpu/embedding.rs.
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

extern "C" __global__ void class_embedding_fwd_f32(float* __restrict__ out, const float* __restrict__ table,
                                                   const float* __restrict__ labels, int n, int dim) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * dim) return;  // no barrier in this kernel
    const int row = (int)(i / dim), col = (int)(i - (long long)row * dim);
    const int k = (int)labels[row];
    out[i] = table[(long long)k * dim + col];
}

extern "C" __global__ void class_embedding_bwd_f32(float* __restrict__ dtable, const float* __restrict__ dout,
                                                   const float* __restrict__ labels, int n, int dim, int rows) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * dim) return;  // no barrier in this kernel
    const int k = (int)(i / dim), col = (int)(i - (long long)k * dim);
    float acc = 0.0f;
    for (int r = 0; r < n; ++r) {
        if ((int)labels[r] == k) acc += dout[(long long)r * dim + col];
    }
    dtable[i] = acc;
}
