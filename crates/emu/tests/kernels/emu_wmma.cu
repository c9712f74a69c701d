// WMMA (nvcuda::wmma) test kernels for tests/wmma.rs: a tiled GEMM in the
// shape the project's tensor-core kernels use (f32 in global memory,
// converted to bf16 / tf32 while staged in shared memory, fp32 accumulate),
// in every fragment layout, with planted bugs behind `plant`; plus one-tile
// kernels for the accumulator load and the emulator's own checks.
#include <mma.h>
#include <cuda_bf16.h>
using namespace nvcuda;

#define WT_BM 32
#define WT_BN 32
#define WT_BK 16
#define WT_PAD 8  // a row of a shared tile holds BK + PAD elements: ldm != BK

template <bool C, class A, class B>
struct wt_if {
    typedef A type;
};
template <class A, class B>
struct wt_if<false, A, B> {
    typedef B type;
};

__device__ __forceinline__ void store_pair(float* p, const float v[2]) {
    p[0] = v[0];
    p[1] = v[1];
}
__device__ __forceinline__ void store_pair(__nv_bfloat16* p, const float v[2]) {
    *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(v[0], v[1]);
}

// plant: 0 correct; 1 wrong ldm for A; 2 A loaded transposed (fragment
// layout opposite to the tile's); 3 wrong tile index (a warp stores its
// tile at the transposed warp position).
template <bool TF32, bool A_ROW, bool B_ROW>
__device__ void wmma_gemm(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M,
                          int N, int K, int plant) {
    typedef typename wt_if<TF32, float, __nv_bfloat16>::type S;
    typedef typename wt_if<TF32, wmma::precision::tf32, __nv_bfloat16>::type FT;
    constexpr int KS = TF32 ? 8 : 16;  // k of one mma
    typedef typename wt_if<A_ROW, wmma::row_major, wmma::col_major>::type LA;
    typedef typename wt_if<A_ROW, wmma::col_major, wmma::row_major>::type LA_T;
    typedef typename wt_if<B_ROW, wmma::row_major, wmma::col_major>::type LB;
    // A tile: BM x BK, row-major [BM][BK+PAD] or col-major [BK][BM+PAD]
    __shared__ __align__(32) S As[A_ROW ? WT_BM * (WT_BK + WT_PAD) : WT_BK * (WT_BM + WT_PAD)];
    __shared__ __align__(32) S Bs[B_ROW ? WT_BK * (WT_BN + WT_PAD) : WT_BN * (WT_BK + WT_PAD)];
    __shared__ __align__(32) float Cs[WT_BM * (WT_BN + 4)];
    const int lda = A_ROW ? WT_BK + WT_PAD : WT_BM + WT_PAD;
    const int ldb = B_ROW ? WT_BN + WT_PAD : WT_BK + WT_PAD;
    const int tid = threadIdx.x, warp = tid / 32;
    const int wy = warp / 2, wx = warp % 2;
    const int m0 = blockIdx.y * WT_BM, n0 = blockIdx.x * WT_BN;

    float pair[2];
    wmma::fragment<wmma::accumulator, 16, 16, KS, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int k0 = 0; k0 < K; k0 += WT_BK) {
        // Two elements per thread and store, adjacent in the tile's memory
        // order: 16-bit elements share 4-byte words, and one word must have
        // one writer per barrier interval.
        for (int i = tid; i < WT_BM * WT_BK / 2; i += blockDim.x) {
            const int p = 2 * i;  // index in the tile's storage order
            const int r = A_ROW ? p / WT_BK : p % WT_BM, c = A_ROW ? p % WT_BK : p / WT_BM;
            for (int h = 0; h < 2; ++h) {
                const int rr = A_ROW ? r : r + h, cc = A_ROW ? c + h : c, gm = m0 + rr, gk = k0 + cc;
                const float v = gm < M && gk < K ? A[(size_t)gm * K + gk] : 0.0f;
                pair[h] = v;
            }
            store_pair(&As[A_ROW ? r * lda + c : c * lda + r], pair);
        }
        for (int i = tid; i < WT_BK * WT_BN / 2; i += blockDim.x) {
            const int p = 2 * i;
            const int r = B_ROW ? p / WT_BN : p % WT_BK, c = B_ROW ? p % WT_BN : p / WT_BK;
            for (int h = 0; h < 2; ++h) {
                const int rr = B_ROW ? r : r + h, cc = B_ROW ? c + h : c, gk = k0 + rr, gn = n0 + cc;
                const float v = gk < K && gn < N ? B[(size_t)gk * N + gn] : 0.0f;
                pair[h] = v;
            }
            store_pair(&Bs[B_ROW ? r * ldb + c : c * ldb + r], pair);
        }
        __syncthreads();
        for (int kk = 0; kk < WT_BK; kk += KS) {
            const S* ap = A_ROW ? &As[(wy * 16) * lda + kk] : &As[kk * lda + wy * 16];
            const S* bp = B_ROW ? &Bs[kk * ldb + wx * 16] : &Bs[(wx * 16) * ldb + kk];
            wmma::fragment<wmma::matrix_b, 16, 16, KS, FT, LB> b;
            wmma::load_matrix_sync(b, bp, ldb);
            if (plant == 2) {
                wmma::fragment<wmma::matrix_a, 16, 16, KS, FT, LA_T> a;
                wmma::load_matrix_sync(a, ap, lda);
                if (TF32) {
                    for (int e = 0; e < a.num_elements; ++e) a.x[e] = wmma::__float_to_tf32(a.x[e]);
                    for (int e = 0; e < b.num_elements; ++e) b.x[e] = wmma::__float_to_tf32(b.x[e]);
                }
                wmma::mma_sync(acc, a, b, acc);
            } else {
                wmma::fragment<wmma::matrix_a, 16, 16, KS, FT, LA> a;
                wmma::load_matrix_sync(a, ap, plant == 1 ? WT_BK : lda);
                if (TF32) {
                    for (int e = 0; e < a.num_elements; ++e) a.x[e] = wmma::__float_to_tf32(a.x[e]);
                    for (int e = 0; e < b.num_elements; ++e) b.x[e] = wmma::__float_to_tf32(b.x[e]);
                }
                wmma::mma_sync(acc, a, b, acc);
            }
        }
        __syncthreads();
    }
    const int sy = plant == 3 ? wx : wy, sx = plant == 3 ? wy : wx;
    wmma::store_matrix_sync(&Cs[(sy * 16) * (WT_BN + 4) + sx * 16], acc, WT_BN + 4, wmma::mem_row_major);
    __syncthreads();
    for (int i = tid; i < WT_BM * WT_BN; i += blockDim.x) {
        const int r = i / WT_BN, c = i % WT_BN, gm = m0 + r, gn = n0 + c;
        if (gm < M && gn < N) C[(size_t)gm * N + gn] = Cs[r * (WT_BN + 4) + c];
    }
}

// layout: bit 0 set = A tile col-major, bit 1 set = B tile col-major.
template <bool TF32>
__device__ void wmma_gemm_any(const float* A, const float* B, float* C, int M, int N, int K, int layout, int plant) {
    switch (layout) {
        case 0: wmma_gemm<TF32, true, true>(A, B, C, M, N, K, plant); break;
        case 1: wmma_gemm<TF32, false, true>(A, B, C, M, N, K, plant); break;
        case 2: wmma_gemm<TF32, true, false>(A, B, C, M, N, K, plant); break;
        default: wmma_gemm<TF32, false, false>(A, B, C, M, N, K, plant); break;
    }
}
extern "C" __global__ void emu_test_wmma_gemm_bf16(const float* A, const float* B, float* C, int M, int N, int K,
                                                   int layout, int plant) {
    wmma_gemm_any<false>(A, B, C, M, N, K, layout, plant);
}
extern "C" __global__ void emu_test_wmma_gemm_tf32(const float* A, const float* B, float* C, int M, int N, int K,
                                                   int layout, int plant) {
    wmma_gemm_any<true>(A, B, C, M, N, K, layout, plant);
}

// One tile, one warp: D = A B + C with C loaded from memory in `c_layout`
// (0 row-major, 1 col-major) and D stored in `d_layout`; bf16 A (16x16,
// row-major bits) and B (16x16, col-major bits).
extern "C" __global__ void emu_test_wmma_tile_bf16(const unsigned short* a, const unsigned short* b, const float* c,
                                                   float* d, int c_layout, int d_layout) {
    __shared__ __align__(32) __nv_bfloat16 as[256], bs[256];
    __shared__ __align__(32) float cs[256], ds[256];
    for (int i = threadIdx.x; i < 128; i += 32) {  // pairs: one writer per 4-byte word
        as[2 * i] = __ushort_as_bfloat16(a[2 * i]);
        as[2 * i + 1] = __ushort_as_bfloat16(a[2 * i + 1]);
        bs[2 * i] = __ushort_as_bfloat16(b[2 * i]);
        bs[2 * i + 1] = __ushort_as_bfloat16(b[2 * i + 1]);
    }
    for (int i = threadIdx.x; i < 256; i += 32) cs[i] = c[i];
    __syncwarp();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::load_matrix_sync(fa, as, 16);
    wmma::load_matrix_sync(fb, bs, 16);
    wmma::load_matrix_sync(fc, cs, 16, c_layout ? wmma::mem_col_major : wmma::mem_row_major);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(ds, fc, 16, d_layout ? wmma::mem_col_major : wmma::mem_row_major);
    __syncwarp();
    for (int i = threadIdx.x; i < 256; i += 32) d[i] = ds[i];
}

// __float_to_tf32 on every input (bit patterns).
extern "C" __global__ void emu_test_float_to_tf32(const float* x, float* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = wmma::__float_to_tf32(x[i]);
}

// What the emulator must reject. which: 0 only lanes 0-15 load (divergent);
// 1 lanes pass different pointers; 2 a misaligned pointer; 3 a tf32 input
// not rounded with __float_to_tf32; 4 lanes read store_matrix_sync's output
// of other lanes without __syncwarp (a race); 5 ldm not a multiple of 16 bytes.
extern "C" __global__ void emu_bug_wmma_misuse(const float* x, float* y, int which) {
    __shared__ __align__(32) float t[512];
    for (int i = threadIdx.x; i < 512; i += 32) t[i] = wmma::__float_to_tf32(x[i]);
    __syncwarp();
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> a;
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> b;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> c;
    wmma::fill_fragment(c, 0.0f);
    if (which == 0) {
        if (threadIdx.x < 16) wmma::load_matrix_sync(a, t, 8);
    } else if (which == 1) {
        wmma::load_matrix_sync(a, t + (threadIdx.x & 1) * 128, 8);
    } else if (which == 2) {
        wmma::load_matrix_sync(a, t + 4, 8);
    } else if (which == 5) {
        wmma::load_matrix_sync(a, t, 6);
    } else {
        wmma::load_matrix_sync(a, t, 8);
    }
    wmma::load_matrix_sync(b, t + 128, 16);
    if (which == 3) a.x[0] = x[threadIdx.x];  // raw float: low bits set
    wmma::mma_sync(c, a, b, c);
    wmma::store_matrix_sync(t + 256, c, 16, wmma::mem_row_major);
    if (which != 4) __syncwarp();
    y[threadIdx.x] = t[256 + (threadIdx.x * 7 + 3) % 256];
}
