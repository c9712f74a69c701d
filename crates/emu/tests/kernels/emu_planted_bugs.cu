// emu_planted_bugs.cu — kernels with deliberate bugs that the CUDA emulator
// must catch (tests/planted_bugs.rs), each next to its correct twin where
// there is one. Plain CUDA: on a GPU most of these would silently compute
// garbage, hang or crash the context.

// Each thread reads its left neighbour's shared slot; the bug: no barrier
// between the writes and the reads. Forward order happens to work (the
// neighbour already ran); reverse and shuffled orders read the NaN poison.
extern "C" __global__ void emu_bug_missing_sync(float* out, const float* in) {
    __shared__ float s[256];
    const int t = threadIdx.x, g = blockIdx.x * blockDim.x + t;
    s[t] = in[g];
    // __syncthreads() missing here
    out[g] = t > 0 ? s[t - 1] : 0.0f;
}
extern "C" __global__ void emu_fixed_missing_sync(float* out, const float* in) {
    __shared__ float s[256];
    const int t = threadIdx.x, g = blockIdx.x * blockDim.x + t;
    s[t] = in[g];
    __syncthreads();
    out[g] = t > 0 ? s[t - 1] : 0.0f;
}

// No bounds check: the grid covers more elements than the buffer holds.
extern "C" __global__ void emu_bug_oob_write(float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    (void)n;  // the bug: `if (i < n)` forgotten
    out[i] = 1.0f;
}

// Reads one element past the end (an off-by-one in the stencil).
extern "C" __global__ void emu_bug_oob_read(float* out, const float* in, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = in[i] + in[i + 1];
}

// Reads before the start of the buffer.
extern "C" __global__ void emu_bug_underrun(float* out, const float* in, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = in[i - 600];
}

// Forgets the last element: it keeps the allocation's NaN poison.
extern "C" __global__ void emu_bug_unwritten(float* out, const float* in, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n - 1) out[i] = 2.0f * in[i];
}

// A full-mask shuffle inside a branch only half the warp takes, while the
// other half goes on to a barrier.
extern "C" __global__ void emu_bug_divergent_shfl(float* out) {
    const int lane = threadIdx.x & 31;
    float v = (float)threadIdx.x;
    if (lane < 16) v += __shfl_xor_sync(0xffffffffu, v, 1);
    __syncthreads();
    out[threadIdx.x] = v;
}

// Early return, then a barrier the returned threads never reach.
extern "C" __global__ void emu_bug_barrier_after_exit(float* out, int n) {
    __shared__ float s[256];
    const int t = threadIdx.x;
    if (t >= n) return;
    s[t] = (float)t;
    __syncthreads();
    out[t] = s[n - 1 - t];
}

// A lane calls a collective with a mask that leaves itself out.
extern "C" __global__ void emu_bug_lane_not_in_mask(int* out) {
    out[threadIdx.x] = __shfl_sync(0x0000ffffu, (int)threadIdx.x, 0);
}

// Early exit of the upper half-warp, then a full-warp reduction that reads
// the exited lanes.
extern "C" __global__ void emu_bug_shfl_reads_exited(float* out) {
    const int lane = threadIdx.x & 31;
    if (lane >= 16) return;
    float v = 1.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    out[threadIdx.x] = v;
}

// Half the warp at __syncwarp, the other half at a ballot: a deadlock.
extern "C" __global__ void emu_bug_mismatched_collectives(unsigned* out) {
    const int lane = threadIdx.x & 31;
    unsigned r = 0;
    if (lane < 16) __syncwarp();
    else r = __ballot_sync(0xffffffffu, 1);
    out[threadIdx.x] = r;
}

// Writes past the dynamic shared memory the launch asked for.
extern "C" __global__ void emu_bug_dynamic_smem_oob(float* out) {
    extern __shared__ float dyn[];
    dyn[threadIdx.x * 1024] = 1.0f;
    __syncthreads();
    out[threadIdx.x] = dyn[threadIdx.x];
}

// Integer division by a zero argument (a crash on the CPU, garbage on a GPU).
extern "C" __global__ void emu_bug_div_zero(int* out, int d) {
    out[threadIdx.x] = 1000 / (d + (int)(threadIdx.x & 0));
}

// A device assert that fails for one thread.
extern "C" __global__ void emu_bug_assert(int* out, int n) {
    assert(threadIdx.x < (unsigned)n);
    out[threadIdx.x] = 1;
}

// Unbounded recursion with a large frame: a fiber stack overflow.
__device__ int emu_recurse(int d, int* sink) {
    volatile int frame[512];
    frame[d & 511] = d;
    if (d < 0) return 0;
    return emu_recurse(d + 1, sink) + frame[(d * 7) & 511];
}
extern "C" __global__ void emu_bug_stack_overflow(int* out) { out[threadIdx.x] = emu_recurse(0, out); }

// A null pointer passed for an output.
extern "C" __global__ void emu_bug_null_write(float* out) { out[threadIdx.x] = 1.0f; }
