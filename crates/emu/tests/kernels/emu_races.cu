// emu_races.cu — data races the emulator's hazard detector must catch
// (tests/races.rs), each next to its correct twin. Plain CUDA: on a GPU
// each of these bugs computes garbage only sometimes.
#include "common.cuh"

// ---- 1. A block-wide reduction without the barrier between the reads of
// the per-warp partials and the next call's writes of new ones: a warp that
// runs ahead into the next call overwrites a partial that a slower warp has
// not read yet. (common.cuh's block_sum, minus its last __syncthreads.)
__device__ float racy_block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? scratch[lane] : 0.0f;
    t = warp_sum(t);
    // __syncthreads() missing here
    return t;
}
extern "C" __global__ void emu_race_block_sum(float* sums, float* squares, const float* in) {
    __shared__ float partials[32];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const float x = in[i];
    sums[i] = racy_block_sum(x, partials);
    squares[i] = racy_block_sum(x * x, partials);
}
extern "C" __global__ void emu_fixed_block_sum(float* sums, float* squares, const float* in) {
    __shared__ float partials[32];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const float x = in[i];
    sums[i] = block_sum(x, partials);
    squares[i] = block_sum(x * x, partials);
}

// ---- 2. A tiled GEMM (C = A B, n x n, 16 x 16 tiles, block 16 x 16)
// without the barrier between loading a tile and using it.
#define RT 16
__device__ void tiled_gemm(float* c, const float* a, const float* b, int n, bool load_barrier) {
    __shared__ float As[RT][RT];
    __shared__ float Bs[RT][RT];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int row = blockIdx.y * RT + ty, col = blockIdx.x * RT + tx;
    float acc = 0.0f;
    for (int k0 = 0; k0 < n; k0 += RT) {
        As[ty][tx] = (row < n && k0 + tx < n) ? a[row * n + k0 + tx] : 0.0f;
        Bs[ty][tx] = (k0 + ty < n && col < n) ? b[(k0 + ty) * n + col] : 0.0f;
        if (load_barrier) __syncthreads();
        for (int k = 0; k < RT; ++k) acc += As[ty][k] * Bs[k][tx];
        __syncthreads();
    }
    if (row < n && col < n) c[row * n + col] = acc;
}
extern "C" __global__ void emu_race_gemm_tile(float* c, const float* a, const float* b, int n) {
    tiled_gemm(c, a, b, n, false);
}
extern "C" __global__ void emu_fixed_gemm_tile(float* c, const float* a, const float* b, int n) {
    tiled_gemm(c, a, b, n, true);
}

// ---- 3. Row sums, one block per row, where two blocks write one output
// (out[row / 2] instead of out[row]).
__device__ float row_sum(const float* in, int cols) {
    __shared__ float scratch[32];
    float v = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) v += in[(long long)blockIdx.x * cols + c];
    return block_sum(v, scratch);
}
extern "C" __global__ void emu_race_two_blocks_one_output(float* out, const float* in, int cols) {
    const float s = row_sum(in, cols);
    if (threadIdx.x == 0) out[blockIdx.x / 2] = s;
}
extern "C" __global__ void emu_fixed_two_blocks_one_output(float* out, const float* in, int cols) {
    const float s = row_sum(in, cols);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
}

// ---- 3b. A block reads what another block of the same launch writes
// (a running sum that assumes the blocks run in order).
extern "C" __global__ void emu_race_reads_other_blocks_output(float* out, const float* in) {
    if (threadIdx.x != 0) return;
    const float prev = blockIdx.x > 0 ? out[blockIdx.x - 1] : 0.0f;
    out[blockIdx.x] = prev + in[blockIdx.x];
}

// ---- 4. Lanes write their shared slot, then read a neighbour's, without a
// __syncwarp between: on Volta and later the lanes of a warp are not in
// lockstep, so the neighbour may not have written yet.
__device__ void rotate_in_warp(float* out, const float* in, bool syncwarp) {
    __shared__ float slots[128];
    const int t = threadIdx.x, lane = t & 31, base = t & ~31;
    const int i = blockIdx.x * blockDim.x + t;
    slots[t] = in[i];
    if (syncwarp) __syncwarp();
    out[i] = slots[base + ((lane + 1) & 31)];
}
extern "C" __global__ void emu_race_missing_syncwarp(float* out, const float* in) { rotate_in_warp(out, in, false); }
extern "C" __global__ void emu_fixed_missing_syncwarp(float* out, const float* in) { rotate_in_warp(out, in, true); }

// ---- Not races: atomics from every block and every warp, and a warp
// exchange ordered by a shuffle (a collective orders the lanes too).
extern "C" __global__ void emu_fixed_atomic_histogram(unsigned* bins, const unsigned* keys, int n) {
    __shared__ unsigned local[8];
    if (threadIdx.x < 8) local[threadIdx.x] = 0;
    __syncthreads();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) atomicAdd(&local[keys[i] & 7], 1u);
    __syncthreads();
    if (threadIdx.x < 8) atomicAdd(&bins[threadIdx.x], local[threadIdx.x]);
}
extern "C" __global__ void emu_fixed_exchange_after_shuffle(float* out, const float* in) {
    __shared__ float slots[64];
    const int t = threadIdx.x, lane = t & 31, base = t & ~31;
    const int i = blockIdx.x * blockDim.x + t;
    slots[t] = in[i];
    const float total = warp_sum(in[i]);
    out[i] = slots[base + ((lane + 1) & 31)] + 0.0f * total;
}
