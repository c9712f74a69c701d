// conv2d.cu — 2-D convolution (cross-correlation, as PyTorch) on NCHW f32,
// every pass an implicit GEMM: the im2col matrix is never built in global
// memory; each K step gathers its 16 x BN slice straight from the tensor
// into shared memory (zero padding by bounds checks).
//
// Geometry (all kernels): x [N, Ci, H, W], w [Co, Ci, KH, KW],
// y [N, Co, Ho, Wo], stride s, padding top pt and left pl (bottom/right
// padding only shows in Ho, Wo, computed by the host).
//
//   conv2d_fwd          y[n,o,p] = b[o] + sum_{c,ky,kx} w[o,c,ky,kx] x[n,c,iy,ix]
//                       GEMM M = Co, N = N*Ho*Wo, K = Ci*KH*KW
//   conv2d_bwd_data     dx[n,c,iy,ix] = sum_{o,ky,kx} w[o,c,ky,kx] dy[n,o,oy,ox]
//                       over the (oy, ox) with oy*s - pt + ky = iy (same for x)
//                       GEMM M = Ci, N = N*H*W, K = Co*KH*KW
//   conv2d_bwd_weight   dw[o,(c,ky,kx)] = sum_{n,oy,ox} dy[n,o,oy,ox] x[n,c,iy,ix]
//                       GEMM M = Co, N = Ci*KH*KW, K = N*Ho*Wo: split-K over
//                       gridDim.z; split z writes its partial tile to
//                       ws[z, Co, Ci*KH*KW] and sum_splits (reduce.cu) adds
//                       the splits in order (with one split the launch
//                       passes dw as ws)
//   conv2d_bwd_bias     part[s, o] = sum of dy[n,o,p] over the s-th of S
//                       equal ranges of the flattened (n, p); grid (Co, S);
//                       sum_splits adds the S partials in order
//
// Tiling (the three GEMMs): a BM x BN output tile per block, K steps of 16
// staged in shared memory (As[16][BM+4], Bs[16][BN+4], rows 16-byte aligned
// so a thread reads its 4 a's and 4 b's as one float4 each); 256 threads,
// each owning TM x TN contiguous outputs (m = TM ty + i, n = TN tx + j).
// Three shapes, chosen by the host from M alone:
//   wide   64 x 64,  4 x 4 per thread   (M > 32, unless 64-tiles pad more)
//   narrow 32 x 128, 4 x 4 per thread   (the 32-channel layers)
//   few     4 x 256, 4 x 1 per thread   (M <= 4: conv_out's 1 or 3 channels)
// Every output is one thread's serial sum over k = 0, 1, ... in order,
// padded with zero products to a multiple of 16 whatever the shape, so the
// three shapes give the same bits (and the split-K is chosen from the shape,
// never the tile). Gathers never divide per element: a thread walks its
// (c, ky, kx) or (img, oy, ox) by a fixed stride (Digits3); the weight
// gradient's columns come from a per-block table. Index math is 32-bit
// (the host checks every flattened size against i32) except the per-image
// base offsets.
// Launch: grid (ceil(GEMM N / BN), ceil(M / BM)[, splits]), block 256,
// static shared memory (see KERNELS.md); bias: grid (Co, S), block 256.
// CPU twin: crates/tensor/src/cpu/conv2d.rs (im2col + gemm).
// Versions: v2 (this file): three tile shapes, float4 shared reads, stepped
// gathers; no double buffering (KERNELS.md says why), the stride-2
// backward-data GEMM still multiplies the 3/4 zero taps. TF32 mma would need
// an emulator-friendly fallback (no inline PTX here).
#include "common.cuh"

#define CV_BK 16
#define CV_THREADS 256

// A flat index v = (hi * nmid + mid) * nlo + lo held as its digits, so that
// a thread walking v by a fixed stride never divides inside its loop.
struct Digits3 {
    int hi, mid, lo;

    __device__ __forceinline__ void set(int v, int nmid, int nlo) {
        hi = v / (nmid * nlo);
        const int rem = v - hi * (nmid * nlo);
        mid = rem / nlo;
        lo = rem - mid * nlo;
    }

    // this += stride, given the stride's digits (d.mid < nmid, d.lo < nlo).
    __device__ __forceinline__ void add(const Digits3& d, int nmid, int nlo) {
        lo += d.lo;
        const int c1 = lo >= nlo;
        lo -= c1 ? nlo : 0;
        mid += d.mid + c1;
        const int c2 = mid >= nmid;
        mid -= c2 ? nmid : 0;
        hi += d.hi + c2;
    }
};

__device__ __forceinline__ void lds(float (&v)[4], const float* p) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    v[0] = q.x;
    v[1] = q.y;
    v[2] = q.z;
    v[3] = q.w;
}

__device__ __forceinline__ void lds(float (&v)[1], const float* p) {
    v[0] = *p;
}

// acc[i][j] += As[k][tm + i] * Bs[k][tn + j] over the 16 k of a step, k in order.
template <int BM, int BN, int TM, int TN>
__device__ __forceinline__ void cv_mma(float (&acc)[TM][TN], const float (*As)[BM + 4], const float (*Bs)[BN + 4],
                                       int tm, int tn) {
#pragma unroll
    for (int kk = 0; kk < CV_BK; ++kk) {
        float a[TM], b[TN];
        lds(a, &As[kk][tm]);
        lds(b, &Bs[kk][tn]);
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
    }
}

template <int TM, int TN>
__device__ __forceinline__ void cv_zero(float (&acc)[TM][TN]) {
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
}

template <int BM, int BN, int TM, int TN>
__device__ __forceinline__ void conv_fwd_tile(float* __restrict__ y, const float* __restrict__ x,
                                              const float* __restrict__ w, const float* __restrict__ b,
                                              int has_bias, int n, int ci, int h, int wd, int co, int kh, int kw,
                                              int stride, int pad_top, int pad_left, int ho, int wo) {
    static_assert((BM / TM) * (BN / TN) == CV_THREADS && CV_THREADS % BN == 0, "256 threads per tile");
    constexpr int TX = BN / TN, D = CV_THREADS / BN, R = CV_BK / D;
    __shared__ __align__(16) float As[CV_BK][BM + 4];
    __shared__ __align__(16) float Bs[CV_BK][BN + 4];
    const int t = threadIdx.x, tn = TN * (t % TX), tm = TM * (t / TX);
    const int khw = kh * kw, K = ci * khw, howo = ho * wo, P = n * howo;
    const int q0 = blockIdx.x * BN, m0 = blockIdx.y * BM;

    // this thread's gather column q (fixed) and rows kb0, kb0 + D, ... of each step
    const int qq = t % BN, kb0 = t / BN;
    const int q = q0 + qq;
    const bool q_ok = q < P;
    int iy0 = 0, ix0 = 0;
    const float* xi = x;
    if (q_ok) {
        const int img = q / howo, p = q - img * howo;
        const int oy = p / wo, ox = p - oy * wo;
        iy0 = oy * stride - pad_top;
        ix0 = ox * stride - pad_left;
        xi = x + (long long)img * ci * h * wd;
    }
    Digits3 tap, dtap;  // (c, ky, kx) of the next row this thread gathers; of the stride D
    tap.set(kb0, kh, kw);
    dtap.set(D, kh, kw);

    float acc[TM][TN];
    cv_zero(acc);
    for (int k0 = 0; k0 < K; k0 += CV_BK) {
        // weights: row m of w is contiguous along k
        for (int e = t; e < CV_BK * BM; e += CV_THREADS) {
            const int kk = e & 15, mm = e >> 4;
            const int m = m0 + mm, k = k0 + kk;
            As[kk][mm] = (m < co && k < K) ? w[m * K + k] : 0.0f;
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            float v = 0.0f;
            if (q_ok && tap.hi < ci) {  // tap.hi < ci <=> k < K
                const int iy = iy0 + tap.mid, ix = ix0 + tap.lo;
                if (iy >= 0 && iy < h && ix >= 0 && ix < wd) v = xi[(tap.hi * h + iy) * wd + ix];
            }
            Bs[kb0 + D * r][qq] = v;
            tap.add(dtap, kh, kw);
        }
        __syncthreads();
        cv_mma<BM, BN, TM, TN>(acc, As, Bs, tm, tn);
        __syncthreads();
    }

#pragma unroll
    for (int j = 0; j < TN; ++j) {
        const int qo = q0 + tn + j;
        if (qo >= P) continue;
        const int img = qo / howo, p = qo - img * howo;
        float* yo = y + (long long)img * co * howo + p;
#pragma unroll
        for (int i = 0; i < TM; ++i) {
            const int m = m0 + tm + i;
            if (m < co) yo[m * howo] = has_bias ? b[m] + acc[i][j] : acc[i][j];
        }
    }
}

template <int BM, int BN, int TM, int TN>
__device__ __forceinline__ void conv_bwd_data_tile(float* __restrict__ dx, const float* __restrict__ dy,
                                                   const float* __restrict__ w, int n, int ci, int h, int wd, int co,
                                                   int kh, int kw, int stride, int pad_top, int pad_left, int ho,
                                                   int wo) {
    static_assert((BM / TM) * (BN / TN) == CV_THREADS && CV_THREADS % BN == 0, "256 threads per tile");
    constexpr int TX = BN / TN, D = CV_THREADS / BN, R = CV_BK / D;
    __shared__ __align__(16) float As[CV_BK][BM + 4];
    __shared__ __align__(16) float Bs[CV_BK][BN + 4];
    const int t = threadIdx.x, tn = TN * (t % TX), tm = TM * (t / TX);
    const int khw = kh * kw, K = co * khw;
    const int hw = h * wd, howo = ho * wo, P = n * hw;
    const int q0 = blockIdx.x * BN, m0 = blockIdx.y * BM;

    const int qq = t % BN, kb0 = t / BN;
    const int q = q0 + qq;
    const bool q_ok = q < P;
    int sy = 0, sx = 0;  // input position plus padding
    const float* dyi = dy;
    if (q_ok) {
        const int img = q / hw, p = q - img * hw;
        const int iy = p / wd, ix = p - iy * wd;
        sy = iy + pad_top;
        sx = ix + pad_left;
        dyi = dy + (long long)img * co * howo;
    }
    Digits3 tap, dtap;  // B rows: (o, ky, kx), walked by D
    tap.set(kb0, kh, kw);
    dtap.set(D, kh, kw);
    Digits3 wk, dwk;  // A column k0 + (t & 15) as (o, 0, tap), walked by 16
    wk.set(t & 15, 1, khw);
    dwk.set(CV_BK, 1, khw);

    float acc[TM][TN];
    cv_zero(acc);
    for (int k0 = 0; k0 < K; k0 += CV_BK) {
        // A(m = input channel, k = (o, ky, kx)) = w[o, m, ky, kx]; e & 15 == t & 15
        for (int e = t; e < CV_BK * BM; e += CV_THREADS) {
            const int kk = e & 15, mm = e >> 4;
            const int m = m0 + mm;
            As[kk][mm] = (m < ci && wk.hi < co) ? w[(wk.hi * ci + m) * khw + wk.lo] : 0.0f;
        }
        wk.add(dwk, 1, khw);
        // B(k = (o, ky, kx), q = (img, iy, ix)) = dy[img, o, oy, ox]
#pragma unroll
        for (int r = 0; r < R; ++r) {
            float v = 0.0f;
            if (q_ok && tap.hi < co) {
                const int yy = sy - tap.mid, xx = sx - tap.lo;
                if (yy >= 0 && xx >= 0) {
                    const int oy = yy / stride, ox = xx / stride;
                    if (oy * stride == yy && ox * stride == xx && oy < ho && ox < wo)
                        v = dyi[(tap.hi * ho + oy) * wo + ox];
                }
            }
            Bs[kb0 + D * r][qq] = v;
            tap.add(dtap, kh, kw);
        }
        __syncthreads();
        cv_mma<BM, BN, TM, TN>(acc, As, Bs, tm, tn);
        __syncthreads();
    }

#pragma unroll
    for (int j = 0; j < TN; ++j) {
        const int qo = q0 + tn + j;
        if (qo >= P) continue;
        const int img = qo / hw, p = qo - img * hw;
        float* dxo = dx + (long long)img * ci * hw + p;
#pragma unroll
        for (int i = 0; i < TM; ++i) {
            const int m = m0 + tm + i;
            if (m < ci) dxo[m * hw] = acc[i][j];
        }
    }
}

template <int BM, int BN, int TM, int TN>
__device__ __forceinline__ void conv_bwd_weight_tile(float* __restrict__ ws, const float* __restrict__ dy,
                                                     const float* __restrict__ x, int n, int ci, int h, int wd,
                                                     int co, int kh, int kw, int stride, int pad_top, int pad_left,
                                                     int ho, int wo, int k_per_split) {
    static_assert((BM / TM) * (BN / TN) == CV_THREADS, "256 threads per tile");
    constexpr int TX = BN / TN;
    __shared__ __align__(16) float As[CV_BK][BM + 4];
    __shared__ __align__(16) float Bs[CV_BK][BN + 4];
    __shared__ int4 cols[BN];  // GEMM column j: (c*H*W, ky, kx, j < J)
    const int t = threadIdx.x, tn = TN * (t % TX), tm = TM * (t / TX);
    const int khw = kh * kw;
    const int J = ci * khw;  // GEMM columns
    const int howo = ho * wo, K = n * howo;
    const int n0 = blockIdx.x * BN, m0 = blockIdx.y * BM;
    const int kbeg = blockIdx.z * k_per_split;
    const int kend = k_per_split < K - kbeg ? kbeg + k_per_split : K;

    for (int jj = t; jj < BN; jj += CV_THREADS) {
        const int j = n0 + jj;
        Digits3 d;
        d.set(j < J ? j : 0, kh, kw);
        cols[jj] = make_int4(d.hi * h * wd, d.mid, d.lo, j < J);
    }
    __syncthreads();

    // this thread loads row kk of both tiles: GEMM k = (img, oy, ox), walked by 16
    const int kk = t & 15;
    Digits3 pix, dpix;
    pix.set(kbeg + kk, ho, wo);
    dpix.set(CV_BK, ho, wo);

    float acc[TM][TN];
    cv_zero(acc);
    for (int k0 = kbeg; k0 < kend; k0 += CV_BK) {
        const bool k_ok = k0 + kk < kend;
        const int p = pix.mid * wo + pix.lo;
        const int iy0 = pix.mid * stride - pad_top, ix0 = pix.lo * stride - pad_left;
        const long long img = k_ok ? pix.hi : 0;
        const float* dyi = dy + img * co * howo + p;  // A(m = o, k) = dy[img, o, p]
        const float* xi = x + img * ci * h * wd;     // B(k, j = (c, ky, kx)) = x[img, c, iy, ix]
        for (int e = t; e < CV_BK * BM; e += CV_THREADS) {
            const int mm = e >> 4, m = m0 + mm;
            As[kk][mm] = (k_ok && m < co) ? dyi[m * howo] : 0.0f;
        }
        for (int e = t; e < CV_BK * BN; e += CV_THREADS) {
            const int jj = e >> 4;
            const int4 cj = cols[jj];
            float v = 0.0f;
            if (k_ok && cj.w) {
                const int iy = iy0 + cj.y, ix = ix0 + cj.z;
                if (iy >= 0 && iy < h && ix >= 0 && ix < wd) v = xi[cj.x + iy * wd + ix];
            }
            Bs[kk][jj] = v;
        }
        pix.add(dpix, ho, wo);
        __syncthreads();
        cv_mma<BM, BN, TM, TN>(acc, As, Bs, tm, tn);
        __syncthreads();
    }

    float* out = ws + (long long)blockIdx.z * co * J;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + tm + i;
        if (m >= co) continue;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int jj = n0 + tn + j;
            if (jj < J) out[m * J + jj] = acc[i][j];
        }
    }
}

// ---- the three tile shapes of each GEMM pass (same parameters, same bits)

extern "C" __global__ void __launch_bounds__(256, 4) conv2d_fwd_f32(float* __restrict__ y, const float* __restrict__ x,
                                          const float* __restrict__ w, const float* __restrict__ b, int has_bias,
                                          int n, int ci, int h, int wd, int co, int kh, int kw, int stride,
                                          int pad_top, int pad_left, int ho, int wo) {
    conv_fwd_tile<64, 64, 4, 4>(y, x, w, b, has_bias, n, ci, h, wd, co, kh, kw, stride, pad_top, pad_left, ho, wo);
}

extern "C" __global__ void __launch_bounds__(256, 4) conv2d_fwd_narrow_f32(float* __restrict__ y, const float* __restrict__ x,
                                                 const float* __restrict__ w, const float* __restrict__ b,
                                                 int has_bias, int n, int ci, int h, int wd, int co, int kh, int kw,
                                                 int stride, int pad_top, int pad_left, int ho, int wo) {
    conv_fwd_tile<32, 128, 4, 4>(y, x, w, b, has_bias, n, ci, h, wd, co, kh, kw, stride, pad_top, pad_left, ho, wo);
}

extern "C" __global__ void __launch_bounds__(256, 6) conv2d_fwd_few_f32(float* __restrict__ y, const float* __restrict__ x,
                                              const float* __restrict__ w, const float* __restrict__ b, int has_bias,
                                              int n, int ci, int h, int wd, int co, int kh, int kw, int stride,
                                              int pad_top, int pad_left, int ho, int wo) {
    conv_fwd_tile<4, 256, 4, 1>(y, x, w, b, has_bias, n, ci, h, wd, co, kh, kw, stride, pad_top, pad_left, ho, wo);
}

extern "C" __global__ void __launch_bounds__(256, 4) conv2d_bwd_data_f32(float* __restrict__ dx, const float* __restrict__ dy,
                                               const float* __restrict__ w, int n, int ci, int h, int wd, int co,
                                               int kh, int kw, int stride, int pad_top, int pad_left, int ho,
                                               int wo) {
    conv_bwd_data_tile<64, 64, 4, 4>(dx, dy, w, n, ci, h, wd, co, kh, kw, stride, pad_top, pad_left, ho, wo);
}

extern "C" __global__ void __launch_bounds__(256, 4) conv2d_bwd_data_narrow_f32(float* __restrict__ dx, const float* __restrict__ dy,
                                                      const float* __restrict__ w, int n, int ci, int h, int wd,
                                                      int co, int kh, int kw, int stride, int pad_top, int pad_left,
                                                      int ho, int wo) {
    conv_bwd_data_tile<32, 128, 4, 4>(dx, dy, w, n, ci, h, wd, co, kh, kw, stride, pad_top, pad_left, ho, wo);
}

extern "C" __global__ void __launch_bounds__(256, 6) conv2d_bwd_data_few_f32(float* __restrict__ dx, const float* __restrict__ dy,
                                                   const float* __restrict__ w, int n, int ci, int h, int wd, int co,
                                                   int kh, int kw, int stride, int pad_top, int pad_left, int ho,
                                                   int wo) {
    conv_bwd_data_tile<4, 256, 4, 1>(dx, dy, w, n, ci, h, wd, co, kh, kw, stride, pad_top, pad_left, ho, wo);
}

extern "C" __global__ void __launch_bounds__(256, 4) conv2d_bwd_weight_f32(float* __restrict__ ws, const float* __restrict__ dy,
                                                 const float* __restrict__ x, int n, int ci, int h, int wd, int co,
                                                 int kh, int kw, int stride, int pad_top, int pad_left, int ho,
                                                 int wo, int k_per_split) {
    conv_bwd_weight_tile<64, 64, 4, 4>(ws, dy, x, n, ci, h, wd, co, kh, kw, stride, pad_top, pad_left, ho, wo,
                                       k_per_split);
}

extern "C" __global__ void __launch_bounds__(256, 4) conv2d_bwd_weight_narrow_f32(float* __restrict__ ws, const float* __restrict__ dy,
                                                        const float* __restrict__ x, int n, int ci, int h, int wd,
                                                        int co, int kh, int kw, int stride, int pad_top,
                                                        int pad_left, int ho, int wo, int k_per_split) {
    conv_bwd_weight_tile<32, 128, 4, 4>(ws, dy, x, n, ci, h, wd, co, kh, kw, stride, pad_top, pad_left, ho, wo,
                                        k_per_split);
}

extern "C" __global__ void __launch_bounds__(256, 6) conv2d_bwd_weight_few_f32(float* __restrict__ ws, const float* __restrict__ dy,
                                                     const float* __restrict__ x, int n, int ci, int h, int wd,
                                                     int co, int kh, int kw, int stride, int pad_top, int pad_left,
                                                     int ho, int wo, int k_per_split) {
    conv_bwd_weight_tile<4, 256, 4, 1>(ws, dy, x, n, ci, h, wd, co, kh, kw, stride, pad_top, pad_left, ho, wo,
                                       k_per_split);
}

// part[s * co + o] = sum of dy[img, o, p] over the s-th range of `chunk`
// flattened (img, p) indices; blockIdx.x = o, blockIdx.y = s. Each thread
// walks its indices by 256 with (img, p) held as digits (no division).
extern "C" __global__ void conv2d_bwd_bias_f32(float* __restrict__ part, const float* __restrict__ dy, int n,
                                               int co, int howo, int chunk) {
    __shared__ float scratch[32];
    const int o = blockIdx.x, total = n * howo;
    const int beg = blockIdx.y * chunk;
    const int end = chunk < total - beg ? beg + chunk : total;
    Digits3 at, step;  // (0, img, p)
    at.set(beg + threadIdx.x, n, howo);
    step.set(CV_THREADS, n, howo);
    float s = 0.0f;
    for (int i = beg + threadIdx.x; i < end; i += CV_THREADS) {
        s += dy[((long long)at.mid * co + o) * howo + at.lo];
        at.add(step, n, howo);
    }
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) part[blockIdx.y * co + o] = s;
}
