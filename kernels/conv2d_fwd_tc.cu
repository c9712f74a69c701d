// conv2d_fwd_tc.cu — 2-D convolution forward on tensor cores (bf16 or tf32
// inputs, f32 accumulation): the implicit GEMM of conv2d.cu's forward pass
// on the shared wmma tile of tc_gemm.cuh.
//
//   y[n,o,oy,ox] = b[o] + sum_{c,ky,kx} w~[o,c,ky,kx] x~[n,c,oy*s-pt+ky,ox*s-pl+kx]
//   GEMM M = Co, N = N*Ho*Wo, K = Ci*KH*KW; A(o, k) = w[o, k] (w is [Co, K]),
//   B(k = (c,ky,kx), q = (n,oy,ox)) = x[...] or 0 in the padding;
//   ~ is the input rounding (bf16 nearest even / tf32 nearest ties away);
//   the bias is added in f32 after the sum.
// Geometry as conv2d.cu (x [N, Ci, H, W], w [Co, Ci, KH, KW],
// y [N, Co, Ho, Wo], stride s, pads pt / pl; the host computes Ho, Wo).
// Launch: grid (ceil(N*Ho*Wo / 64), ceil(Co / 64)), block 128, static
// shared memory only (crates/tensor/src/gpu/launch/conv2d_tc.rs).
// CPU twin: crates/tensor/src/cpu/reduced.rs conv2d_forward (the rounding
// oracle); fp32 twin: conv2d.cu / cpu/conv2d.rs.
// conv2d_fwd_tc_bf16in_f32 reads x stored in bf16 (an activation kept in
// bf16 between layers): the same values as the f32 x rounded while staged,
// so the same bits out as conv2d_fwd_tc_bf16_f32.
// Version 1: gathers divide per element (no Digits3 stepping yet), one
// shared stage (no double buffering).
#include "tc_gemm.cuh"

struct ConvFwdA {  // A(o, k) = w[o * K + k]
    const float* w;
    int K;
    __device__ __forceinline__ float at(int m, int k) const { return w[(long long)m * K + k]; }
};

template <class X>  // x's element type: float, or __nv_bfloat16
struct ConvFwdB {     // this thread's im2col column q = (img, oy, ox)
    const X* xi;      // x + img * Ci * H * W
    int iy0, ix0, h, wd, khw, kw;
    bool ok;
    __device__ __forceinline__ float at(int k) const {
        if (!ok) return 0.0f;
        const int c = k / khw, r = k - c * khw, ky = r / kw, kx = r - ky * kw;
        const int iy = iy0 + ky, ix = ix0 + kx;
        return iy >= 0 && iy < h && ix >= 0 && ix < wd ? tc_load(xi[((long long)c * h + iy) * wd + ix]) : 0.0f;
    }
};

struct ConvFwdOut {
    float* y;
    const float* b;
    int has_bias, co, howo;
    __device__ __forceinline__ void put(int m, int q, float v) const {
        const int img = q / howo, p = q - img * howo;
        y[((long long)img * co + m) * howo + p] = has_bias ? v + b[m] : v;
    }
};

template <class P, class X>
__device__ __forceinline__ void conv2d_fwd_tc(float* __restrict__ y, const X* __restrict__ x,
                                              const float* __restrict__ w, const float* __restrict__ b, int has_bias,
                                              int n, int ci, int h, int wd, int co, int kh, int kw, int stride,
                                              int pad_top, int pad_left, int ho, int wo) {
    const int khw = kh * kw, K = ci * khw, howo = ho * wo, Q = n * howo;
    const int m0 = blockIdx.y * TC_BM, n0 = blockIdx.x * TC_BN;
    ConvFwdB<X> gb;
    const int q = n0 + tc_b_column();
    gb.ok = q < Q;
    const int img = gb.ok ? q / howo : 0, p = q - img * howo, oy = p / wo, ox = p - oy * wo;
    gb.xi = x + (long long)img * ci * h * wd;
    gb.iy0 = oy * stride - pad_top;
    gb.ix0 = ox * stride - pad_left;
    gb.h = h;
    gb.wd = wd;
    gb.khw = khw;
    gb.kw = kw;
    const ConvFwdA ga = {w, K};
    const ConvFwdOut out = {y, b, has_bias, co, howo};
    tc_gemm_tile<P>(ga, gb, out, co, Q, 0, K, m0, n0);
}

extern "C" __global__ void __launch_bounds__(128) conv2d_fwd_tc_bf16_f32(float* __restrict__ y, const float* __restrict__ x,
                                              const float* __restrict__ w, const float* __restrict__ b, int has_bias,
                                              int n, int ci, int h, int wd, int co, int kh, int kw, int stride,
                                              int pad_top, int pad_left, int ho, int wo) {
    conv2d_fwd_tc<TcBf16, float>(y, x, w, b, has_bias, n, ci, h, wd, co, kh, kw, stride, pad_top, pad_left, ho, wo);
}

extern "C" __global__ void __launch_bounds__(128) conv2d_fwd_tc_tf32_f32(float* __restrict__ y, const float* __restrict__ x,
                                              const float* __restrict__ w, const float* __restrict__ b, int has_bias,
                                              int n, int ci, int h, int wd, int co, int kh, int kw, int stride,
                                              int pad_top, int pad_left, int ho, int wo) {
    conv2d_fwd_tc<TcTf32, float>(y, x, w, b, has_bias, n, ci, h, wd, co, kh, kw, stride, pad_top, pad_left, ho, wo);
}

extern "C" __global__ void __launch_bounds__(128) conv2d_fwd_tc_bf16in_f32(float* __restrict__ y, const __nv_bfloat16* __restrict__ x,
                                              const float* __restrict__ w, const float* __restrict__ b, int has_bias,
                                              int n, int ci, int h, int wd, int co, int kh, int kw, int stride,
                                              int pad_top, int pad_left, int ho, int wo) {
    conv2d_fwd_tc<TcBf16, __nv_bfloat16>(y, x, w, b, has_bias, n, ci, h, wd, co, kh, kw, stride, pad_top, pad_left, ho, wo);
}
