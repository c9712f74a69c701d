// conv2d.cu — 2-D convolution (cross-correlation, as PyTorch) on NCHW f32,
// every pass an implicit GEMM: the im2col matrix is never built in global
// memory; each K step gathers its 16 x 64 slice straight from the tensor
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
//                       ws[z, Co, Ci*KH*KW] and conv2d_bwd_weight_reduce sums
//                       the splits in order (deterministic; with one split
//                       the launch passes dw as ws and skips the reduce)
//   conv2d_bwd_bias     db[o] = sum_{n,p} dy[n,o,p], one block per channel
//
// Tiling (the three GEMMs): 64 x 64 output tile per block, K steps of 16
// staged in shared memory (As[16][65], Bs[16][65]); 256 threads, each
// owning 4 x 4 outputs interleaved by 16 (m = ty + 16 i, n = tx + 16 j) so
// shared reads are broadcasts or consecutive. Each thread's gather column
// (or row) is fixed for the whole K loop, so its pixel decomposition is
// computed once. Sums run over k in a fixed order: deterministic.
// Launch: fwd grid (ceil(N*Ho*Wo / 64), ceil(Co / 64)), bwd_data grid
// (ceil(N*H*W / 64), ceil(Ci / 64)), bwd_weight grid (ceil(Ci*KH*KW / 64),
// ceil(Co / 64), splits) with k_per_split a multiple of 16; all block 256,
// static shared memory 8.3 KiB. reduce: grid-stride, block 256.
// bias: grid Co, block 256.
// CPU twin: crates/tensor/src/cpu/conv2d.rs (im2col + gemm).
// Versions: v1 (this file): plain FP32 FMA tiles, no double buffering; the
// stride-2 backward-data GEMM multiplies the 3/4 zero taps too. A v2 with
// register double buffering or TF32 mma would need an emulator-friendly
// fallback (no inline PTX here).
#include "common.cuh"

#define CV_BM 64
#define CV_BN 64
#define CV_BK 16
#define CV_PAD 1

// acc[i][j] += As[k][ty + 16 i] * Bs[k][tx + 16 j] over the 16 k of a step.
__device__ __forceinline__ void cv_mma(float (&acc)[4][4], const float (*As)[CV_BM + CV_PAD],
                                       const float (*Bs)[CV_BN + CV_PAD], int tx, int ty) {
#pragma unroll
    for (int kk = 0; kk < CV_BK; ++kk) {
        float a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
        for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
}

extern "C" __global__ void conv2d_fwd_f32(float* __restrict__ y, const float* __restrict__ x,
                                          const float* __restrict__ w, const float* __restrict__ b, int has_bias,
                                          int n, int ci, int h, int wd, int co, int kh, int kw, int stride,
                                          int pad_top, int pad_left, int ho, int wo) {
    __shared__ float As[CV_BK][CV_BM + CV_PAD];
    __shared__ float Bs[CV_BK][CV_BN + CV_PAD];
    const int t = threadIdx.x, tx = t & 15, ty = t >> 4;
    const int khw = kh * kw;
    const int K = ci * khw;
    const int howo = ho * wo;
    const long long P = (long long)n * howo;
    const long long q0 = (long long)blockIdx.x * CV_BN;
    const int m0 = blockIdx.y * CV_BM;

    // this thread's gather column (fixed for the whole K loop)
    const int qq = t & 63;
    const long long q = q0 + qq;
    const bool q_ok = q < P;
    int iy0 = 0, ix0 = 0;
    long long xbase = 0;
    if (q_ok) {
        int img = (int)(q / howo), p = (int)(q - (long long)img * howo);
        int oy = p / wo, ox = p - oy * wo;
        iy0 = oy * stride - pad_top;
        ix0 = ox * stride - pad_left;
        xbase = (long long)img * ci * h * wd;
    }

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += CV_BK) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            // weights: row m of w is contiguous along k
            const int e = t + 256 * r;
            const int kk = e & 15, mm = e >> 4;
            const int m = m0 + mm, k = k0 + kk;
            As[kk][mm] = (m < co && k < K) ? w[(long long)m * K + k] : 0.0f;
            // input gather: column qq, row kb
            const int kb = (t >> 6) + 4 * r;
            const int k2 = k0 + kb;
            float v = 0.0f;
            if (q_ok && k2 < K) {
                const int c = k2 / khw, rem = k2 - c * khw;
                const int ky = rem / kw, kx = rem - ky * kw;
                const int iy = iy0 + ky, ix = ix0 + kx;
                if (iy >= 0 && iy < h && ix >= 0 && ix < wd) v = x[xbase + ((long long)c * h + iy) * wd + ix];
            }
            Bs[kb][qq] = v;
        }
        __syncthreads();
        cv_mma(acc, As, Bs, tx, ty);
        __syncthreads();
    }

#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const long long qo = q0 + tx + 16 * j;
        if (qo >= P) continue;
        const int img = (int)(qo / howo), p = (int)(qo - (long long)img * howo);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + ty + 16 * i;
            if (m < co) y[((long long)img * co + m) * howo + p] = has_bias ? b[m] + acc[i][j] : acc[i][j];
        }
    }
}

extern "C" __global__ void conv2d_bwd_data_f32(float* __restrict__ dx, const float* __restrict__ dy,
                                               const float* __restrict__ w, int n, int ci, int h, int wd, int co,
                                               int kh, int kw, int stride, int pad_top, int pad_left, int ho,
                                               int wo) {
    __shared__ float As[CV_BK][CV_BM + CV_PAD];
    __shared__ float Bs[CV_BK][CV_BN + CV_PAD];
    const int t = threadIdx.x, tx = t & 15, ty = t >> 4;
    const int khw = kh * kw;
    const int K = co * khw;
    const int hw = h * wd, howo = ho * wo;
    const long long P = (long long)n * hw;
    const long long q0 = (long long)blockIdx.x * CV_BN;
    const int m0 = blockIdx.y * CV_BM;

    const int qq = t & 63;
    const long long q = q0 + qq;
    const bool q_ok = q < P;
    int sy = 0, sx = 0;  // input position plus padding
    long long dybase = 0;
    if (q_ok) {
        int img = (int)(q / hw), p = (int)(q - (long long)img * hw);
        int iy = p / wd, ix = p - iy * wd;
        sy = iy + pad_top;
        sx = ix + pad_left;
        dybase = (long long)img * co * howo;
    }

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += CV_BK) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            // A(m = input channel, k = (o, ky, kx)) = w[o, m, ky, kx]
            const int e = t + 256 * r;
            const int kk = e & 15, mm = e >> 4;
            const int m = m0 + mm, k = k0 + kk;
            float a = 0.0f;
            if (m < ci && k < K) {
                const int o = k / khw, rem = k - o * khw;
                a = w[((long long)o * ci + m) * khw + rem];
            }
            As[kk][mm] = a;
            // B(k = (o, ky, kx), q = (img, iy, ix)) = dy[img, o, oy, ox]
            const int kb = (t >> 6) + 4 * r;
            const int k2 = k0 + kb;
            float v = 0.0f;
            if (q_ok && k2 < K) {
                const int o = k2 / khw, rem = k2 - o * khw;
                const int ky = rem / kw, kx = rem - ky * kw;
                const int yy = sy - ky, xx = sx - kx;
                if (yy >= 0 && xx >= 0) {
                    const int oy = yy / stride, ox = xx / stride;
                    if (oy * stride == yy && ox * stride == xx && oy < ho && ox < wo)
                        v = dy[dybase + ((long long)o * ho + oy) * wo + ox];
                }
            }
            Bs[kb][qq] = v;
        }
        __syncthreads();
        cv_mma(acc, As, Bs, tx, ty);
        __syncthreads();
    }

#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const long long qo = q0 + tx + 16 * j;
        if (qo >= P) continue;
        const int img = (int)(qo / hw), p = (int)(qo - (long long)img * hw);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + ty + 16 * i;
            if (m < ci) dx[((long long)img * ci + m) * hw + p] = acc[i][j];
        }
    }
}

extern "C" __global__ void conv2d_bwd_weight_f32(float* __restrict__ ws, const float* __restrict__ dy,
                                                 const float* __restrict__ x, int n, int ci, int h, int wd, int co,
                                                 int kh, int kw, int stride, int pad_top, int pad_left, int ho,
                                                 int wo, int k_per_split) {
    __shared__ float As[CV_BK][CV_BM + CV_PAD];
    __shared__ float Bs[CV_BK][CV_BN + CV_PAD];
    const int t = threadIdx.x, tx = t & 15, ty = t >> 4;
    const int khw = kh * kw;
    const int J = ci * khw;  // GEMM columns
    const int howo = ho * wo;
    const long long K = (long long)n * howo;
    const int n0 = blockIdx.x * CV_BN, m0 = blockIdx.y * CV_BM;
    const long long kbeg = (long long)blockIdx.z * k_per_split;
    long long kend = kbeg + k_per_split;
    if (kend > K) kend = K;

    // this thread's k row within a step and its 4 gather columns (fixed)
    const int kk = t & 15;
    int jc[4], jy[4], jx[4];
    bool j_ok[4];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
        const int j = n0 + (t >> 4) + 16 * r;
        j_ok[r] = j < J;
        const int c = j_ok[r] ? j / khw : 0, rem = j_ok[r] ? j - c * khw : 0;
        jc[r] = c;
        jy[r] = rem / kw;
        jx[r] = rem - jy[r] * kw;
    }

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (long long k0 = kbeg; k0 < kend; k0 += CV_BK) {
        const long long k = k0 + kk;
        const bool k_ok = k < kend;
        int img = 0, p = 0, iy0 = 0, ix0 = 0;
        if (k_ok) {
            img = (int)(k / howo);
            p = (int)(k - (long long)img * howo);
            const int oy = p / wo, ox = p - oy * wo;
            iy0 = oy * stride - pad_top;
            ix0 = ox * stride - pad_left;
        }
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int mm = (t >> 4) + 16 * r;
            // A(m = o, k = (img, p)) = dy[img, o, p]
            const int m = m0 + mm;
            As[kk][mm] = (k_ok && m < co) ? dy[((long long)img * co + m) * howo + p] : 0.0f;
            // B(k = (img, oy, ox), j = (c, ky, kx)) = x[img, c, iy, ix]
            float v = 0.0f;
            if (k_ok && j_ok[r]) {
                const int iy = iy0 + jy[r], ix = ix0 + jx[r];
                if (iy >= 0 && iy < h && ix >= 0 && ix < wd)
                    v = x[(((long long)img * ci + jc[r]) * h + iy) * wd + ix];
            }
            Bs[kk][mm] = v;
        }
        __syncthreads();
        cv_mma(acc, As, Bs, tx, ty);
        __syncthreads();
    }

    float* out = ws + (long long)blockIdx.z * co * J;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty + 16 * i;
        if (m >= co) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int jj = n0 + tx + 16 * j;
            if (jj < J) out[(long long)m * J + jj] = acc[i][j];
        }
    }
}

// dw[i] = sum over splits z (in order) of ws[z * count + i].
extern "C" __global__ void conv2d_bwd_weight_reduce_f32(float* __restrict__ dw, const float* __restrict__ ws,
                                                        int splits, unsigned long long count) {
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < count;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int z = 0; z < splits; ++z) s += ws[(unsigned long long)z * count + i];
        dw[i] = s;
    }
}

// db[o] = sum over images and pixels of dy[img, o, :], one block per channel.
extern "C" __global__ void conv2d_bwd_bias_f32(float* __restrict__ db, const float* __restrict__ dy, int n, int co,
                                               int howo) {
    __shared__ float scratch[32];
    const int o = blockIdx.x;
    float s = 0.0f;
    for (int img = 0; img < n; ++img) {
        const float* src = dy + ((long long)img * co + o) * howo;
        for (int p = threadIdx.x; p < howo; p += blockDim.x) s += src[p];
    }
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) db[o] = s;
}
