// loss.cu — mean squared error, the DDPM training loss.
//   mse_loss_partial  partials[c] = sum over chunk c of (pred - target)^2, in
//                     f64; chunk c = elements [c*4096, (c+1)*4096) (fixed:
//                     the CPU's REDUCE_CHUNK), one block per chunk, each
//                     thread summing a fixed stride, then a fixed f64 tree
//   mse_loss_final    loss[0] = (float)(sum of partials in a fixed tree / n),
//                     one block of 256 threads
//   mse_loss_bwd      dpred = c * (pred - target), c = (float)(2 dloss / n)
//                     computed on the host in f64 (as the CPU)
// Deterministic: no atomics; the grid depends on n only.
// Launch: partial: grid ceil(n / 4096), block 256; final: grid 1, block 256;
// bwd: 1-D grid-stride, block 256. `partials` is a workspace of
// ceil(n / 4096) doubles.
// CPU twin: crates/tensor/src/cpu/loss.rs.
// Versions: v1.
#include "common.cuh"

#define LOSS_CHUNK 4096

extern "C" __global__ void mse_loss_partial_f32(double* __restrict__ partials, const float* __restrict__ pred,
                                                const float* __restrict__ target, unsigned long long n) {
    __shared__ double scratch[256];
    const unsigned long long start = (unsigned long long)blockIdx.x * LOSS_CHUNK;
    unsigned long long end = start + LOSS_CHUNK;
    if (end > n) end = n;
    double acc = 0.0;
    for (unsigned long long i = start + threadIdx.x; i < end; i += blockDim.x) {
        double d = (double)pred[i] - (double)target[i];
        acc += d * d;
    }
    double s = block_sum_f64(acc, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

extern "C" __global__ void mse_loss_final_f32(float* __restrict__ loss, const double* __restrict__ partials,
                                              unsigned int count, unsigned long long n) {
    __shared__ double scratch[256];
    double acc = 0.0;
    for (unsigned int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
    double s = block_sum_f64(acc, scratch);
    if (threadIdx.x == 0) loss[0] = (float)(s / (double)n);
}

extern "C" __global__ void mse_loss_bwd_f32(float* __restrict__ dpred, const float* __restrict__ pred,
                                            const float* __restrict__ target, float c, unsigned long long n) {
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x)
        dpred[i] = c * (pred[i] - target[i]);
}
