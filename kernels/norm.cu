// norm.cu — the global L2 norm of many tensors (gradient clipping/logging):
//   sumsq_partial  one block per fixed chunk of 4096 elements of one tensor:
//                  partials[c] = sum of x^2 over the chunk, in f64. The
//                  tensors come as a table: ptrs[t] (device pointers),
//                  lens[t] (elements) and first_chunk[t] (prefix sums of
//                  ceil(len / 4096), with first_chunk[count] = total chunks);
//                  block c finds its tensor by binary search.
//   sumsq_final    out[0] = sum of all partials (fixed tree), f64.
// The host takes sqrt in f64. Deterministic: chunking depends on the
// lengths only, partials are combined in a fixed order, no atomics.
// Launch: partial: grid = total chunks, block 256; final: grid 1, block 256.
// Workspaces: partials (total chunks doubles), the table (3 u64 arrays).
// CPU twin: crates/tensor/src/cpu/optim.rs (sum_squares) and
// cpu/elementwise.rs (chunked_sum_f64).
// Versions: v1, all tensors in one launch.
#include "common.cuh"

#define NORM_CHUNK 4096

extern "C" __global__ void sumsq_partial_f32(double* __restrict__ partials,
                                             const unsigned long long* __restrict__ ptrs,
                                             const unsigned long long* __restrict__ lens,
                                             const unsigned long long* __restrict__ first_chunk, int count) {
    __shared__ double scratch[256];
    const unsigned long long c = blockIdx.x;
    // the last t with first_chunk[t] <= c (tensors of length 0 own no chunk)
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (first_chunk[mid] <= c)
            lo = mid;
        else
            hi = mid - 1;
    }
    const float* x = (const float*)ptrs[lo];
    const unsigned long long start = (c - first_chunk[lo]) * NORM_CHUNK;
    unsigned long long end = start + NORM_CHUNK;
    if (end > lens[lo]) end = lens[lo];
    double acc = 0.0;
    for (unsigned long long i = start + threadIdx.x; i < end; i += blockDim.x) {
        double v = (double)x[i];
        acc += v * v;
    }
    double s = block_sum_f64(acc, scratch);
    if (threadIdx.x == 0) partials[c] = s;
}

extern "C" __global__ void sumsq_final_f32(double* __restrict__ out, const double* __restrict__ partials,
                                           unsigned int count) {
    __shared__ double scratch[256];
    double acc = 0.0;
    for (unsigned int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
    double s = block_sum_f64(acc, scratch);
    if (threadIdx.x == 0) out[0] = s;
}
