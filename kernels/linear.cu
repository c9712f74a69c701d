// linear.cu — fully connected layer y = x w^T + b for x [N, In], w [Out, In],
// b [Out], and its backward, as tiled SGEMMs on strided operands:
//   linear_fwd        y [N, Out]   = x w^T (+ b)     M=N,   N=Out, K=In
//   linear_bwd_data   dx [N, In]   = dy w            M=N,   N=In,  K=Out
//   linear_bwd_weight dw [Out, In] = dy^T x          M=Out, N=In,  K=N
//   linear_bwd_bias   part [S, Out]: split s sums rows s*R .. s*R+R-1 of dy
//                     in row order; sum_splits (reduce.cu) adds the S
//                     partials in order
// GEMM: C[m, n] = sum_k A(m, k) B(k, n) with A(m, k) = A[m*sam + k*sak] and
// B(k, n) = B[k*sbk + n*sbn]; C row-major. 64x64 output tiles, K steps of
// 16 staged in shared memory (rows padded to 68 floats, 16-byte aligned);
// 256 threads, each owning a 4x4 block of contiguous outputs
// (m = 4 ty + i, n = 4 tx + j) whose a's and b's it reads as one float4
// each per k. Tile loads walk the operand's contiguous dimension so global
// reads coalesce whichever way it is stored.
// Every output is one thread's serial sum over k in order: deterministic.
// Launch: gemm kernels grid (ceil(N / 64), ceil(M / 64)), block 256,
// no dynamic shared memory; bias: block 256, grid (ceil(Out / 256), S).
// CPU twin: crates/tensor/src/cpu/linear.rs (through cpu/gemm.rs).
// Versions: v2 float4 shared reads and a split bias reduction (the U-Net's
// linear layers are tiny: [128, 128] x [128, 512] at most; launch cost
// dominates).
#include "common.cuh"

#define LIN_BM 64
#define LIN_BN 64
#define LIN_BK 16

__device__ __forceinline__ void gemm_tile_strided(float* __restrict__ C, const float* __restrict__ A,
                                                  const float* __restrict__ B, const float* __restrict__ bias,
                                                  int M, int N, int K, long long sam, long long sak,
                                                  long long sbk, long long sbn) {
    __shared__ __align__(16) float As[LIN_BK][LIN_BM + 4];
    __shared__ __align__(16) float Bs[LIN_BK][LIN_BN + 4];
    const int t = threadIdx.x;
    const int tn = 4 * (t & 15), tm = 4 * (t >> 4);
    const int m0 = blockIdx.y * LIN_BM, n0 = blockIdx.x * LIN_BN;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += LIN_BK) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int e = t + 256 * r;
            int mm, kk;
            if (sak == 1) {
                kk = e & 15;
                mm = e >> 4;
            } else {
                mm = e & 63;
                kk = e >> 6;
            }
            const int m = m0 + mm, k = k0 + kk;
            As[kk][mm] = (m < M && k < K) ? A[(long long)m * sam + (long long)k * sak] : 0.0f;
            int nn;
            if (sbn == 1) {
                nn = e & 63;
                kk = e >> 6;
            } else {
                kk = e & 15;
                nn = e >> 4;
            }
            const int n = n0 + nn, k2 = k0 + kk;
            Bs[kk][nn] = (n < N && k2 < K) ? B[(long long)k2 * sbk + (long long)n * sbn] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < LIN_BK; ++kk) {
            const float4 a4 = *reinterpret_cast<const float4*>(&As[kk][tm]);
            const float4 b4 = *reinterpret_cast<const float4*>(&Bs[kk][tn]);
            const float a[4] = {a4.x, a4.y, a4.z, a4.w}, b[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + tm + i;
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + tn + j;
            if (n < N) C[(long long)m * N + n] = bias ? bias[n] + acc[i][j] : acc[i][j];
        }
    }
}

// y [n, d_out] = x [n, d_in] w^T + b; has_bias = 0 ignores b (may be null).
extern "C" __global__ void __launch_bounds__(256, 4) linear_fwd_f32(float* __restrict__ y, const float* __restrict__ x,
                                          const float* __restrict__ w, const float* __restrict__ b, int has_bias,
                                          int n, int d_in, int d_out) {
    gemm_tile_strided(y, x, w, has_bias ? b : (const float*)0, n, d_out, d_in, d_in, 1, 1, d_in);
}

// dx [n, d_in] = dy [n, d_out] w [d_out, d_in]
extern "C" __global__ void __launch_bounds__(256, 4) linear_bwd_data_f32(float* __restrict__ dx, const float* __restrict__ dy,
                                               const float* __restrict__ w, int n, int d_in, int d_out) {
    gemm_tile_strided(dx, dy, w, (const float*)0, n, d_in, d_out, d_out, 1, d_in, 1);
}

// dw [d_out, d_in] = dy^T x
extern "C" __global__ void __launch_bounds__(256, 4) linear_bwd_weight_f32(float* __restrict__ dw, const float* __restrict__ dy,
                                                 const float* __restrict__ x, int n, int d_in, int d_out) {
    gemm_tile_strided(dw, dy, x, (const float*)0, d_out, d_in, n, 1, d_out, d_in, 1);
}

// part [s, d_out] = sum over rows s*rows_per_split .. (s+1)*rows_per_split-1
// (clipped to n) of dy, in row order; blockIdx.y = s.
extern "C" __global__ void linear_bwd_bias_f32(float* __restrict__ part, const float* __restrict__ dy, int n,
                                               int d_out, int rows_per_split) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= d_out) return;  // no barrier in this kernel
    const int beg = blockIdx.y * rows_per_split;
    const int end = rows_per_split < n - beg ? beg + rows_per_split : n;
    float s = 0.0f;
    for (int i = beg; i < end; ++i) s += dy[(long long)i * d_out + o];
    part[(long long)blockIdx.y * d_out + o] = s;
}
