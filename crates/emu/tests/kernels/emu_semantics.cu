// emu_semantics.cu — the CUDA emulator's own test kernels: each exercises one
// piece of CUDA semantics the emulator must reproduce (indices, shared
// memory, barriers with predicates, shuffles with width, votes, atomics,
// half types, math). Plain CUDA; they would run unchanged on a GPU.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

// Every thread writes its built-ins: 12 values per thread.
extern "C" __global__ void emu_test_index3d(unsigned* out) {
    const unsigned bl = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const unsigned tl = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned nt = blockDim.x * blockDim.y * blockDim.z;
    unsigned* o = out + 12ull * (bl * nt + tl);
    o[0] = threadIdx.x; o[1] = threadIdx.y; o[2] = threadIdx.z;
    o[3] = blockIdx.x;  o[4] = blockIdx.y;  o[5] = blockIdx.z;
    o[6] = blockDim.x;  o[7] = blockDim.y;  o[8] = blockDim.z;
    o[9] = gridDim.x;   o[10] = gridDim.y;  o[11] = gridDim.z;
}

// Reverses each block's slice through static shared memory.
extern "C" __global__ void emu_test_reverse_static(float* out, const float* in) {
    __shared__ float s[1024];
    const int t = threadIdx.x, g = blockIdx.x * blockDim.x + t;
    s[t] = in[g];
    __syncthreads();
    out[g] = s[blockDim.x - 1 - t];
}

// Two extern __shared__ names alias the same dynamic buffer.
extern "C" __global__ void emu_test_dynamic_shared(float* out, unsigned* bits, const float* in) {
    extern __shared__ float dsm_f[];
    extern __shared__ unsigned dsm_u[];
    const int t = threadIdx.x, g = blockIdx.x * blockDim.x + t;
    dsm_f[t] = in[g] * 2.0f;
    __syncthreads();
    const int r = blockDim.x - 1 - t;
    out[g] = dsm_f[r];
    bits[g] = dsm_u[r];
}

// Reads dynamic shared memory nothing wrote: must be the NaN poison.
extern "C" __global__ void emu_test_dynamic_poison(unsigned* out) {
    extern __shared__ unsigned dsm_u[];
    out[blockIdx.x * blockDim.x + threadIdx.x] = dsm_u[threadIdx.x];
}

// Reads static shared memory nothing wrote in this block: must be poison,
// whatever the previous block on this worker left there.
extern "C" __global__ void emu_test_static_poison(unsigned* out, int write) {
    __shared__ unsigned s[256];
    const unsigned v = s[threadIdx.x];
    __syncthreads();
    if (write) s[threadIdx.x] = 7;  // leave something behind for the next block
    out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

// out[3 * block + {0,1,2}] = __syncthreads_count / _and / _or of pred.
extern "C" __global__ void emu_test_sync_preds(int* out, const int* pred) {
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    const int p = pred[g];
    const int c = __syncthreads_count(p);
    const int a = __syncthreads_and(p);
    const int o = __syncthreads_or(p);
    if (threadIdx.x == 0) {
        out[3 * blockIdx.x] = c;
        out[3 * blockIdx.x + 1] = a;
        out[3 * blockIdx.x + 2] = o;
    }
}

// Shuffles of int, float and 64-bit values; mode 0 idx, 1 up, 2 down, 3 xor.
// b is per lane (b_per_lane[lane]) so idx shuffles read varied lanes.
extern "C" __global__ void emu_test_shfl(int* out_i, float* out_f, unsigned long long* out_l, const int* b_per_lane,
                                         int mode, int width) {
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = threadIdx.x & 31;
    const int b = b_per_lane[lane];
    const int vi = g * 10 + 3;
    const float vf = 0.5f + (float)g;
    const unsigned long long vl = 0x100000000ull * (unsigned long long)g + 0xabcdull;
    int ri;
    float rf;
    unsigned long long rl;
    switch (mode) {
        case 0:
            ri = __shfl_sync(0xffffffffu, vi, b, width);
            rf = __shfl_sync(0xffffffffu, vf, b, width);
            rl = __shfl_sync(0xffffffffu, vl, b, width);
            break;
        case 1:
            ri = __shfl_up_sync(0xffffffffu, vi, (unsigned)b, width);
            rf = __shfl_up_sync(0xffffffffu, vf, (unsigned)b, width);
            rl = __shfl_up_sync(0xffffffffu, vl, (unsigned)b, width);
            break;
        case 2:
            ri = __shfl_down_sync(0xffffffffu, vi, (unsigned)b, width);
            rf = __shfl_down_sync(0xffffffffu, vf, (unsigned)b, width);
            rl = __shfl_down_sync(0xffffffffu, vl, (unsigned)b, width);
            break;
        default:
            ri = __shfl_xor_sync(0xffffffffu, vi, b, width);
            rf = __shfl_xor_sync(0xffffffffu, vf, b, width);
            rl = __shfl_xor_sync(0xffffffffu, vl, b, width);
            break;
    }
    out_i[g] = ri;
    out_f[g] = rf;
    out_l[g] = rl;
}

// Votes among the lanes named in mask (the others skip them and exit).
// out[4 * g + {0,1,2,3}] = ballot, all, any, match_any(pred).
extern "C" __global__ void emu_test_vote(unsigned* out, const int* pred, unsigned mask) {
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = threadIdx.x & 31;
    if (!(mask >> lane & 1u)) return;
    const int p = pred[g];
    out[4 * g] = __ballot_sync(mask, p);
    out[4 * g + 1] = (unsigned)__all_sync(mask, p);
    out[4 * g + 2] = (unsigned)__any_sync(mask, p);
    out[4 * g + 3] = __match_any_sync(mask, p);
}

// Warp sum by xor butterfly, block sum through shared memory.
extern "C" __global__ void emu_test_block_sum(float* out, const float* in) {
    __shared__ float warp_sums[32];
    const int t = threadIdx.x;
    float v = in[blockIdx.x * blockDim.x + t];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((t & 31) == 0) warp_sums[t >> 5] = v;
    __syncthreads();
    if (t < 32) {
        float w = t < (int)(blockDim.x >> 5) ? warp_sums[t] : 0.0f;
#pragma unroll 5
        for (int o = 16; o > 0; o >>= 1) w += __shfl_down_sync(0xffffffffu, w, o);
        if (t == 0) out[blockIdx.x] = w;
    }
}

// Histogram: a per-block shared histogram, then atomics across blocks.
extern "C" __global__ void emu_test_histogram(unsigned* hist, const unsigned* data, int n, int nbins) {
    extern __shared__ unsigned local_hist[];
    for (int b = threadIdx.x; b < nbins; b += blockDim.x) local_hist[b] = 0;
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        atomicAdd(&local_hist[data[i] % nbins], 1u);
    __syncthreads();
    for (int b = threadIdx.x; b < nbins; b += blockDim.x) atomicAdd(&hist[b], local_hist[b]);
}

// Assorted atomics on global memory from every thread of every block.
// acc: [0] int add, [1] int max, [2] int min, [3] unsigned inc (wraps at 1000),
//      [4] CAS-counted ticket, [5] exch (anything), [6..7] ull add; facc[0] float add; dacc[0] double add.
extern "C" __global__ void emu_test_atomics(int* acc, unsigned* uacc, unsigned long long* lacc, float* facc,
                                            double* dacc, int* tickets) {
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(&acc[0], 1);
    atomicMax(&acc[1], g);
    atomicMin(&acc[2], -g);
    atomicInc(&uacc[0], 999u);
    // a ticket via a CAS loop: each thread gets a distinct value
    int old = acc[4], assumed;
    do {
        assumed = old;
        old = atomicCAS(&acc[4], assumed, assumed + 1);
    } while (old != assumed);
    tickets[g] = old;
    atomicExch(&acc[5], g);
    atomicAdd(&lacc[0], 1ull << 33);
    atomicAdd(&facc[0], 0.5f);
    atomicAdd(&dacc[0], 0.25);
    atomicSub(&uacc[1], 1u);
    atomicOr(&uacc[2], 1u << (g & 31));
}

// 16-bit float conversions. mode: 0 rn, 1 rz, 2 rd, 3 ru (half); 4 rn, 5 rz (bf16).
extern "C" __global__ void emu_test_to16(unsigned short* out, const float* in, unsigned long long n, int mode) {
    const unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float f = in[i];
    unsigned short r;
    switch (mode) {
        case 0: r = __half_as_ushort(__float2half_rn(f)); break;
        case 1: r = __half_as_ushort(__float2half_rz(f)); break;
        case 2: r = __half_as_ushort(__float2half_rd(f)); break;
        case 3: r = __half_as_ushort(__float2half_ru(f)); break;
        case 4: r = __bfloat16_as_ushort(__float2bfloat16_rn(f)); break;
        default: r = __bfloat16_as_ushort(__float2bfloat16_rz(f)); break;
    }
    out[i] = r;
}

// mode 0: half bits -> float; 1: bf16 bits -> float.
extern "C" __global__ void emu_test_from16(float* out, const unsigned short* in, unsigned long long n, int mode) {
    const unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = mode == 0 ? __half2float(__ushort_as_half(in[i])) : __bfloat162float(__ushort_as_bfloat16(in[i]));
}

// half and bf16 arithmetic (a op b, rounded once) and shuffles of __half.
// out[4*i + {0,1,2,3}] = a+b, a*b, fma(a,b,a) as half bits; a+b as bf16 bits.
extern "C" __global__ void emu_test_half_ops(unsigned short* out, const unsigned short* a, const unsigned short* b,
                                             int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const __half ha = __ushort_as_half(a[i]), hb = __ushort_as_half(b[i]);
    out[4 * i] = __half_as_ushort(ha + hb);
    out[4 * i + 1] = __half_as_ushort(__hmul(ha, hb));
    out[4 * i + 2] = __half_as_ushort(__hfma(ha, hb, ha));
    const __nv_bfloat16 ba = __ushort_as_bfloat16(a[i]), bb = __ushort_as_bfloat16(b[i]);
    out[4 * i + 3] = __bfloat16_as_ushort(ba + bb);
}

// Math functions: out[K * i + j] for the j-th function of in[i].
#define EMU_MATH_K 20
extern "C" __global__ void emu_test_math(float* out, const float* in, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float x = in[i];
    float* o = out + EMU_MATH_K * i;
    float s, c;
    sincosf(x, &s, &c);
    o[0] = expf(x);
    o[1] = logf(fabsf(x) + 1.0f);
    o[2] = sqrtf(fabsf(x));
    o[3] = rsqrtf(fabsf(x) + 1.0f);
    o[4] = sinf(x);
    o[5] = cosf(x);
    o[6] = s;
    o[7] = c;
    o[8] = tanhf(x);
    o[9] = powf(fabsf(x), 1.5f);
    o[10] = fmaxf(x, 0.25f);
    o[11] = fminf(x, 0.25f);
    o[12] = __expf(x);
    o[13] = __logf(fabsf(x) + 1.0f);
    o[14] = __fdividef(x, 3.0f);
    o[15] = max(x, -0.5f);
    o[16] = min(x, 2);  // float/int mixed: CUDA promotes to float
    o[17] = __saturatef(x);
    o[18] = erff(x);
    o[19] = exp2f(x);
}

// Integer and bit intrinsics: 12 results per element.
extern "C" __global__ void emu_test_int_ops(unsigned* out, const unsigned* a, const unsigned* b, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned x = a[i], y = b[i];
    unsigned* o = out + 12 * i;
    o[0] = __umulhi(x, y);
    o[1] = (unsigned)__popc(x);
    o[2] = (unsigned)__clz((int)x);
    o[3] = __brev(x);
    o[4] = (unsigned)__ffs((int)x);
    o[5] = __float_as_uint(__uint_as_float(x));
    o[6] = min(x, y);
    o[7] = (unsigned)max((int)x, (int)y);
    o[8] = (unsigned)__mulhi((int)x, (int)y);
    o[9] = __byte_perm(x, y, 0x5140);
    o[10] = (unsigned)__float2int_rn(__uint_as_float(0x3f800000u + (x & 0xffffu)) * 1000.5f);
    o[11] = __funnelshift_l(x, y, y & 31u);
}

// C = A * B, one thread per output element (M x K times K x N).
extern "C" __global__ void emu_test_sgemm_naive(float* __restrict__ C, const float* __restrict__ A,
                                                const float* __restrict__ B, int M, int N, int K) {
    const int row = blockIdx.y * blockDim.y + threadIdx.y;
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= M || col >= N) return;
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) acc += A[row * K + k] * B[k * N + col];
    C[row * N + col] = acc;
}

// C = A * B with 16 x 16 static shared-memory tiles (blockDim 16 x 16).
extern "C" __global__ void emu_test_sgemm_tiled(float* __restrict__ C, const float* __restrict__ A,
                                                const float* __restrict__ B, int M, int N, int K) {
    __shared__ float As[16][16];
    __shared__ float Bs[16][16];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int row = blockIdx.y * 16 + ty, col = blockIdx.x * 16 + tx;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += 16) {
        As[ty][tx] = (row < M && k0 + tx < K) ? A[row * K + k0 + tx] : 0.0f;
        Bs[ty][tx] = (k0 + ty < K && col < N) ? B[(k0 + ty) * N + col] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int k = 0; k < 16; ++k) acc += As[ty][k] * Bs[k][tx];
        __syncthreads();
    }
    if (row < M && col < N) C[row * N + col] = acc;
}

// Thread 0 spins (with __nanosleep) until the last thread sets a flag.
extern "C" __global__ void emu_test_spin(int* out) {
    __shared__ volatile int flag;
    if (threadIdx.x == 0) flag = 0;
    __syncthreads();
    if (threadIdx.x == blockDim.x - 1) flag = 42;
    if (threadIdx.x == 0) {
        while (flag != 42) __nanosleep(100);
        out[blockIdx.x] = flag;
    }
}

// Partial-mask collectives in two halves of a warp: lanes 0-15 and 16-31
// each reduce among themselves with their own mask (legal divergence).
extern "C" __global__ void emu_test_half_warps(int* out) {
    const int lane = threadIdx.x & 31;
    int v = lane;
    if (lane < 16) {
        for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0x0000ffffu, v, o);
    } else {
        __syncwarp(0xffff0000u);
        v = __reduce_add_sync(0xffff0000u, (unsigned)v);
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}
