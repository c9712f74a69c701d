// tc_gemm.cuh — the tensor-core GEMM tile shared by kernels/*_tc.cu:
// C[m0:m0+64, n0:n0+64] = sum over k in [kbeg, kend) of A(m, k) B(k, n),
// A and B read from f32 (or bf16, `tc_load`) tensors through gather
// functors (implicit GEMM: no im2col in global memory), rounded to the tensor core's input precision
// while staged in shared memory, multiplied with nvcuda::wmma, accumulated
// in f32, and handed to an output functor element by element.
//
// Precisions (template parameter P):
//   TcBf16  inputs __float2bfloat16 (nearest even), wmma m16n16k16 bf16
//   TcTf32  inputs wmma::__float_to_tf32 (nearest, ties away), m16n16k8 tf32
// Both accumulate in f32. The CPU oracle is crates/tensor/src/cpu/reduced.rs
// (same input rounding, f64 sums), the bounds are derived in
// crates/tensor/tests/tensor_core.rs.
//
// Block: 128 threads = 4 warps in a 2 x 2 grid, each warp a 32 x 32 quarter
// of the tile as 2 x 2 accumulator fragments. K steps of 16, zero-padded
// past kend (and past M, N), so any sizes work; a warp whose quarter lies
// wholly past M or N skips its products. Shared tiles, k contiguous:
//   As[64][16 + 8]  A(m, k) row-major (matrix_a row_major, ldm 24)
//   Bs[64][16 + 8]  B(k, n) stored as Bs[n][k] (matrix_b col_major, ldm 24)
//   Cs[64][64 + 4]  the f32 tile, stored by the warps for the epilogue
// Each thread stages 4 A pairs and 4 B pairs per step, two adjacent k at a
// time (one 4-byte bf16x2 / 8-byte float2 store: a word has one writer).
// Gather functors:
//   ga.at(m, k)   A(m, k) for m < M, k < kend (the tile checks both)
//   gb.at(k)      B(k, n) for this thread's fixed column n = n0 + tc_b_column()
//                 (the kernel builds gb for it; gb returns 0 past N), k < kend
//   out.put(m, n, v)  for m < M, n < N
// Plain CUDA with <mma.h>: NVRTC builds it for sm_80 and newer; the CPU
// emulator runs it through its WMMA stand-in (crates/emu/shim/include/mma.h).
#pragma once
#include <mma.h>
#include <cuda_bf16.h>

#define TC_BM 64
#define TC_BN 64
#define TC_BK 16
#define TC_LDS (TC_BK + 8)
#define TC_LDC (TC_BN + 4)
#define TC_THREADS 128

struct TcBf16 {
    typedef __nv_bfloat16 S;  // shared-memory element
    typedef __nv_bfloat16 F;  // wmma element type
    enum { KS = 16 };         // k of one mma
    static __device__ __forceinline__ void store2(S* p, float a, float b) {
        *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
    }
};

struct TcTf32 {
    typedef float S;
    typedef nvcuda::wmma::precision::tf32 F;
    enum { KS = 8 };
    static __device__ __forceinline__ void store2(S* p, float a, float b) {
        *reinterpret_cast<float2*>(p) = make_float2(nvcuda::wmma::__float_to_tf32(a), nvcuda::wmma::__float_to_tf32(b));
    }
};

// An operand element as f32: a bf16-stored activation widens exactly, so
// staging it rounds to the same bf16 (or tf32) as its f32 original would.
__device__ __forceinline__ float tc_load(float v) { return v; }
__device__ __forceinline__ float tc_load(__nv_bfloat16 v) { return __bfloat162float(v); }

// The B column (within the tile) this thread stages: fixed for the kernel.
__device__ __forceinline__ int tc_b_column() { return threadIdx.x & (TC_BN - 1); }

template <class P, class GA, class GB, class OUT>
__device__ __forceinline__ void tc_gemm_tile(const GA& ga, const GB& gb, const OUT& out, int M, int N, int kbeg,
                                             int kend, int m0, int n0) {
    using namespace nvcuda;
    typedef typename P::S S;
    __shared__ __align__(32) S As[TC_BM][TC_LDS];
    __shared__ __align__(32) S Bs[TC_BN][TC_LDS];
    __shared__ __align__(32) float Cs[TC_BM][TC_LDC];
    const int t = threadIdx.x, warp = t >> 5, wm = warp >> 1, wn = warp & 1;

    wmma::fragment<wmma::accumulator, 16, 16, P::KS, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    // mi x nj of the warp's 2 x 2 fragments hold outputs (rows < M, columns
    // < N). A warp with none skips its loads and products, and only those
    // fragments are stored (warp-uniform: both depend on the warp only).
    // A 16- or 32-channel convolution fills a quarter or half of the tile.
    // (Skipping single fragments too raised registers to 110-125 on sm_90.)
    const int mi = min(2, max(0, (M - m0 - wm * 32 + 15) / 16));
    const int nj = min(2, max(0, (N - n0 - wn * 32 + 15) / 16));
    const int bn = tc_b_column();
    for (int k0 = kbeg; k0 < kend; k0 += TC_BK) {
        // A: pair e = t + 128 r is row e / 8, k pair e % 8 (threads walk k)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int e = t + TC_THREADS * r, mm = e >> 3, kk = (e & 7) * 2;
            const int m = m0 + mm, k = k0 + kk;
            const bool m_ok = m < M;
            const float v0 = m_ok && k < kend ? ga.at(m, k) : 0.0f;
            const float v1 = m_ok && k + 1 < kend ? ga.at(m, k + 1) : 0.0f;
            P::store2(&As[mm][kk], v0, v1);
        }
        // B: column bn (fixed), k pairs t / 64 + 2 r (threads walk n)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int kk = ((t >> 6) + 2 * r) * 2, k = k0 + kk;
            const float v0 = k < kend ? gb.at(k) : 0.0f;
            const float v1 = k + 1 < kend ? gb.at(k + 1) : 0.0f;
            P::store2(&Bs[bn][kk], v0, v1);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TC_BK; kk += P::KS) {
            wmma::fragment<wmma::matrix_a, 16, 16, P::KS, typename P::F, wmma::row_major> a[2];
            wmma::fragment<wmma::matrix_b, 16, 16, P::KS, typename P::F, wmma::col_major> b[2];
            if (mi > 0 && nj > 0) {  // warp-uniform
#pragma unroll
                for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], &As[wm * 32 + i * 16][kk], TC_LDS);
#pragma unroll
                for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], &Bs[wn * 32 + j * 16][kk], TC_LDS);
#pragma unroll
                for (int i = 0; i < 2; ++i)
#pragma unroll
                    for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
            if (i < mi && j < nj)  // the epilogue reads only rows < M, columns < N
                wmma::store_matrix_sync(&Cs[wm * 32 + i * 16][wn * 32 + j * 16], acc[i][j], TC_LDC,
                                        wmma::mem_row_major);
    __syncthreads();
    // threads walk n: consecutive outputs of a row (pixels of a channel)
    for (int e = t; e < TC_BM * TC_BN; e += TC_THREADS) {
        const int mm = e / TC_BN, nn = e % TC_BN, m = m0 + mm, n = n0 + nn;
        if (m < M && n < N) out.put(m, n, Cs[mm][nn]);
    }
}

// ---- a GEMM on strided f32 operands (the linear layers):
// C[m * N + n] = sum_k A[m * sam + k * sak] B[k * sbk + n * sbn] (+ bias[n])
struct TcStridedA {
    const float* a;
    int sam, sak;
    __device__ __forceinline__ float at(int m, int k) const { return a[(long long)m * sam + (long long)k * sak]; }
};

struct TcStridedB {  // this thread's column n
    const float* col;  // B + n * sbn
    int sbk;
    bool ok;
    __device__ __forceinline__ float at(int k) const { return ok ? col[(long long)k * sbk] : 0.0f; }
};

struct TcRowMajorOut {
    float* c;
    const float* bias;  // per column n, or null
    int N;
    __device__ __forceinline__ void put(int m, int n, float v) const {
        c[(long long)m * N + n] = bias ? v + bias[n] : v;
    }
};

template <class P>
__device__ __forceinline__ void tc_gemm_strided(float* __restrict__ C, const float* __restrict__ A,
                                                const float* __restrict__ B, const float* __restrict__ bias, int M,
                                                int N, int K, int sam, int sak, int sbk, int sbn) {
    const int m0 = blockIdx.y * TC_BM, n0 = blockIdx.x * TC_BN;
    const int n = n0 + tc_b_column();
    TcStridedB gb;
    gb.ok = n < N;
    gb.col = B + (long long)(gb.ok ? n : 0) * sbn;
    gb.sbk = sbk;
    const TcStridedA ga = {A, sam, sak};
    const TcRowMajorOut out = {C, bias, N};
    tc_gemm_tile<P>(ga, gb, out, M, N, 0, K, m0, n0);
}
