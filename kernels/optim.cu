// optim.cu — optimiser updates, in place, one element per thread:
//   adamw_step  PyTorch AdamW (decoupled weight decay), per element in f64
//               and rounded once on store, exactly the CPU's formula:
//                 p *= decay; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
//                 p -= step_size * m / (sqrt(v) / bc2_sqrt + eps)
//               with decay = 1 - lr*wd, step_size = lr / (1 - b1^t),
//               bc2_sqrt = sqrt(1 - b2^t) from AdamWConsts. Each f64 constant
//               comes as its IEEE bits in an unsigned long long, so it is the
//               CPU's exactly; with --fmad=false (nvrtc_policy.rs) the step
//               is then bit-identical to the CPU's.
//   ema_update  ema = d * ema + k * p, d = (float)decay, k = (float)(1 - decay)
//               (the CPU rounds both to T first too)
//   global_norm_partial / global_norm_final
//               the global L2 norm of many tensors (gradient clipping and
//               logging): partial: one block per fixed chunk of 4096 elements
//               of one tensor, partials[c] = sum of x^2 over the chunk in
//               f64; the tensors come as a table: ptrs[t] (device pointers),
//               lens[t] (elements) and first_chunk[t] (prefix sums of
//               ceil(len / 4096), first_chunk[count] = total chunks); block c
//               finds its tensor by binary search. final: out[0] = sum of all
//               partials (fixed tree), f64; the host takes sqrt in f64.
//               Deterministic: chunking depends on the lengths only, partials
//               are combined in a fixed order, no atomics.
// Launch: adamw/ema 1-D grid-stride, block 256, grid min(ceil(n / 256), 8192);
// global_norm_partial grid = total chunks, block 256; final grid 1, block 256.
// Workspaces (global norm): partials (total chunks doubles), the table (3 u64
// arrays).
// CPU twin: crates/tensor/src/cpu/optim.rs (adamw_step, ema_update,
// sum_squares) and cpu/elementwise.rs (chunked_sum_f64).
// Versions: adamw/ema v2: one tensor per launch (adamw_step, ema_update) or
// every tensor in one launch (adamw_multi, ema_multi, same element code);
// ema_multi v3 (dk_at); global norm v1, all tensors in one launch;
// clip_grads v1; copy_multi v1; copy_to_row v1.
#include "common.cuh"

// One element of AdamW, shared by the per-tensor and the multi-tensor
// kernels so that both compute the same bits.
__device__ __forceinline__ void adamw_element(float* param, const float* grad, float* m, float* v,
                                              unsigned long long i, double decay, double b1, double b2,
                                              double step_size, double bc2, double eps) {
    double g = (double)grad[i];
    double p = (double)param[i] * decay;
    double mi = b1 * (double)m[i] + (1.0 - b1) * g;
    double vi = b2 * (double)v[i] + (1.0 - b2) * g * g;
    double denom = sqrt(vi) / bc2 + eps;
    param[i] = (float)(p - step_size * mi / denom);
    m[i] = (float)mi;
    v[i] = (float)vi;
}

__device__ __forceinline__ float ema_element(float e, float p, float d, float k) { return d * e + k * p; }

extern "C" __global__ void adamw_step_f32(float* __restrict__ param, const float* __restrict__ grad,
                                          float* __restrict__ m, float* __restrict__ v, unsigned long long n,
                                          unsigned long long decay_bits, unsigned long long beta1_bits,
                                          unsigned long long beta2_bits, unsigned long long step_size_bits,
                                          unsigned long long bc2_sqrt_bits, unsigned long long eps_bits) {
    const double decay = __longlong_as_double((long long)decay_bits);
    const double b1 = __longlong_as_double((long long)beta1_bits);
    const double b2 = __longlong_as_double((long long)beta2_bits);
    const double step_size = __longlong_as_double((long long)step_size_bits);
    const double bc2 = __longlong_as_double((long long)bc2_sqrt_bits);
    const double eps = __longlong_as_double((long long)eps_bits);
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x)
        adamw_element(param, grad, m, v, i, decay, b1, b2, step_size, bc2, eps);
}

extern "C" __global__ void ema_update_f32(float* __restrict__ ema, const float* __restrict__ param, float d, float k,
                                          unsigned long long n) {
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x)
        ema[i] = ema_element(ema[i], param[i], d, k);
}

// ---- global L2 norm

#define NORM_CHUNK 4096

// The tensor that owns chunk c: the last t with first_chunk[t] <= c (tensors
// of length 0 own no chunk). Shared by every kernel over a tensor table.
__device__ __forceinline__ int chunk_owner(const unsigned long long* first_chunk, int count, unsigned long long c) {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (first_chunk[mid] <= c)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

extern "C" __global__ void global_norm_partial_f32(double* __restrict__ partials,
                                             const unsigned long long* __restrict__ ptrs,
                                             const unsigned long long* __restrict__ lens,
                                             const unsigned long long* __restrict__ first_chunk, int count) {
    __shared__ double scratch[256];
    const unsigned long long c = blockIdx.x;
    const int lo = chunk_owner(first_chunk, count, c);
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

extern "C" __global__ void global_norm_final_f32(double* __restrict__ out, const double* __restrict__ partials,
                                           unsigned int count) {
    __shared__ double scratch[256];
    double acc = 0.0;
    for (unsigned int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
    double s = block_sum_f64(acc, scratch);
    if (threadIdx.x == 0) out[0] = s;
}

// ---- gradient clipping on the device (no host round trip)
// clip_grads: the same tensor table and chunks as global_norm_partial; with
// norm = sqrt(*sumsq) (global_norm_final's output) and max_norm the bits of
// a double, every element is scaled by (float)(max_norm / (norm + 1e-6))
// when norm > max_norm (never for a NaN norm), exactly as
// scale_inplace_f32 with the host's factor. Launch: grid = total chunks,
// block 256.
extern "C" __global__ void clip_grads_f32(const double* __restrict__ sumsq, unsigned long long max_norm_bits,
                                          const unsigned long long* __restrict__ ptrs,
                                          const unsigned long long* __restrict__ lens,
                                          const unsigned long long* __restrict__ first_chunk, int count) {
    const double norm = sqrt(sumsq[0]);
    const double max_norm = __longlong_as_double((long long)max_norm_bits);
    if (!(norm > max_norm)) return;
    const float s = (float)(max_norm / (norm + 1e-6));
    const unsigned long long c = blockIdx.x;
    const int lo = chunk_owner(first_chunk, count, c);
    float* x = (float*)ptrs[lo];
    const unsigned long long start = (c - first_chunk[lo]) * NORM_CHUNK;
    unsigned long long end = start + NORM_CHUNK;
    if (end > lens[lo]) end = lens[lo];
    for (unsigned long long i = start + threadIdx.x; i < end; i += blockDim.x) x[i] *= s;
}

// ---- multi-tensor apply: AdamW and EMA over every tensor of a model in one
// launch each. The tensors come as tables (as the global norm's): one block
// per chunk of NORM_CHUNK elements of one tensor, found by binary search in
// first_chunk. Each element gets exactly adamw_element / ema_element, so the
// bits are those of one launch per tensor. adamw_multi's consts hold 6
// f64 bit patterns per tensor: decay, beta1, beta2, step_size, bc2_sqrt and
// eps, as adamw_step_f32's arguments (per-tensor learning-rate factors
// change decay and step_size); a training graph points consts into its
// per-step scalars (device memory written by one copy a step). ema_multi
// takes d = dk_at[0], k = dk_at[1] when dk_at is not null (the per-step
// scalars again), else the arguments. Launch: grid = total chunks, block 256.

extern "C" __global__ void adamw_multi_f32(const unsigned long long* __restrict__ params,
                                           const unsigned long long* __restrict__ grads,
                                           const unsigned long long* __restrict__ ms,
                                           const unsigned long long* __restrict__ vs,
                                           const unsigned long long* __restrict__ lens,
                                           const unsigned long long* __restrict__ first_chunk,
                                           const unsigned long long* __restrict__ consts, int count) {
    const unsigned long long c = blockIdx.x;
    const int t = chunk_owner(first_chunk, count, c);
    const unsigned long long* k = consts + 6 * t;
    const double decay = __longlong_as_double((long long)k[0]);
    const double b1 = __longlong_as_double((long long)k[1]);
    const double b2 = __longlong_as_double((long long)k[2]);
    const double step_size = __longlong_as_double((long long)k[3]);
    const double bc2 = __longlong_as_double((long long)k[4]);
    const double eps = __longlong_as_double((long long)k[5]);
    float* p = (float*)params[t];
    const float* g = (const float*)grads[t];
    float* m = (float*)ms[t];
    float* v = (float*)vs[t];
    const unsigned long long start = (c - first_chunk[t]) * NORM_CHUNK;
    unsigned long long end = start + NORM_CHUNK;
    if (end > lens[t]) end = lens[t];
    for (unsigned long long i = start + threadIdx.x; i < end; i += blockDim.x)
        adamw_element(p, g, m, v, i, decay, b1, b2, step_size, bc2, eps);
}

extern "C" __global__ void ema_multi_f32(const unsigned long long* __restrict__ emas,
                                         const unsigned long long* __restrict__ params,
                                         const unsigned long long* __restrict__ lens,
                                         const unsigned long long* __restrict__ first_chunk, float d, float k,
                                         int count, const float* __restrict__ dk_at) {
    if (dk_at) {
        d = dk_at[0];
        k = dk_at[1];
    }
    const unsigned long long c = blockIdx.x;
    const int t = chunk_owner(first_chunk, count, c);
    float* e = (float*)emas[t];
    const float* p = (const float*)params[t];
    const unsigned long long start = (c - first_chunk[t]) * NORM_CHUNK;
    unsigned long long end = start + NORM_CHUNK;
    if (end > lens[t]) end = lens[t];
    for (unsigned long long i = start + threadIdx.x; i < end; i += blockDim.x) e[i] = ema_element(e[i], p[i], d, k);
}

// ---- copy_multi: dsts[t][i] = srcs[t][i] for every tensor of a table (the
// gradients of a step into their flat buffer: one launch instead of a copy
// per tensor; exact). Same tables and chunks as above. Launch: grid = total
// chunks, block 256.
extern "C" __global__ void copy_multi_f32(const unsigned long long* __restrict__ srcs,
                                          const unsigned long long* __restrict__ dsts,
                                          const unsigned long long* __restrict__ lens,
                                          const unsigned long long* __restrict__ first_chunk, int count) {
    const unsigned long long c = blockIdx.x;
    const int t = chunk_owner(first_chunk, count, c);
    const float* s = (const float*)srcs[t];
    float* d = (float*)dsts[t];
    const unsigned long long start = (c - first_chunk[t]) * NORM_CHUNK;
    unsigned long long end = start + NORM_CHUNK;
    if (end > lens[t]) end = lens[t];
    for (unsigned long long i = start + threadIdx.x; i < end; i += blockDim.x) d[i] = s[i];
}

// ---- copy_to_row: dst[row * width + i] = src[i], i < width, with row =
// *row_at read from device memory (a training graph's per-step scalars: the
// step log's slot of this step); nothing is written when row >= rows. Exact.
// Launch: 1-D grid-stride over width, block 256.
extern "C" __global__ void copy_to_row_f32(float* __restrict__ dst, const float* __restrict__ src,
                                           unsigned long long width, unsigned long long rows,
                                           const unsigned long long* __restrict__ row_at) {
    const unsigned long long row = *row_at;
    if (row >= rows) return;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < width;
         i += (unsigned long long)gridDim.x * blockDim.x)
        dst[row * width + i] = src[i];
}
