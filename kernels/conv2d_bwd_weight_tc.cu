// conv2d_bwd_weight_tc.cu — the weight gradient of a 2-D convolution on
// tensor cores (bf16 or tf32 inputs, f32 accumulation), split-K: the
// implicit GEMM of conv2d.cu's backward-weight pass on tc_gemm.cuh's tile.
//
//   dw[o,c,ky,kx] = sum_{n,oy,ox} dy~[n,o,oy,ox] x~[n,c,oy*s-pt+ky,ox*s-pl+kx]
//   GEMM M = Co, N = J = Ci*KH*KW, K = N*Ho*Wo; A(o, k = (n,p)) = dy[n,o,p],
//   B(k, j = (c,ky,kx)) = x[...] or 0 in the padding.
//   Split z sums k in [z * k_per_split, (z + 1) * k_per_split) into
//   ws[z, Co, J]; sum_splits (reduce.cu) adds the splits in order (one
//   split: the launch passes dw as ws). The split is conv2d.cu's (same
//   64 x 64 tile, K step 16): launch/conv2d.rs weight_grad_splits.
// Launch: grid (ceil(J / 64), ceil(Co / 64), splits), block 128, static
// shared memory (launch/conv2d_tc.rs).
// CPU twin: crates/tensor/src/cpu/reduced.rs conv2d_backward_weight.
// conv2d_bwd_weight_tc_bf16in_f32 reads x stored in bf16 (the forward's
// bf16-kept input): the same bits out as conv2d_bwd_weight_tc_bf16_f32.
// Version 1: per-element division in the gathers, one shared stage.
#include "tc_gemm.cuh"

struct ConvBwdWeightA {  // A(o, k = (img, p)) = dy[(img * Co + o) * Ho*Wo + p]
    const float* dy;
    int co, howo;
    __device__ __forceinline__ float at(int m, int k) const {
        const int img = k / howo, p = k - img * howo;
        return dy[((long long)img * co + m) * howo + p];
    }
};

template <class X>       // x's element type: float, or __nv_bfloat16
struct ConvBwdWeightB {  // this thread's column j = (c, ky, kx)
    const X* x;
    int ci, h, wd, wo, howo, stride, oy0, ox0;  // oy0 = ky - pt, ox0 = kx - pl
    long long coff;                              // c * H * W
    bool ok;
    __device__ __forceinline__ float at(int k) const {
        if (!ok) return 0.0f;
        const int img = k / howo, p = k - img * howo, oy = p / wo, ox = p - oy * wo;
        const int iy = oy * stride + oy0, ix = ox * stride + ox0;
        return iy >= 0 && iy < h && ix >= 0 && ix < wd ? tc_load(x[(long long)img * ci * h * wd + coff + iy * wd + ix]) : 0.0f;
    }
};

struct ConvBwdWeightOut {
    float* out;  // ws + z * Co * J
    int J;
    __device__ __forceinline__ void put(int m, int j, float v) const { out[(long long)m * J + j] = v; }
};

template <class P, class X>
__device__ __forceinline__ void conv2d_bwd_weight_tc(float* __restrict__ ws, const float* __restrict__ dy,
                                                     const X* __restrict__ x, int n, int ci, int h, int wd,
                                                     int co, int kh, int kw, int stride, int pad_top, int pad_left,
                                                     int ho, int wo, int k_per_split) {
    const int khw = kh * kw, J = ci * khw, howo = ho * wo, K = n * howo;
    const int m0 = blockIdx.y * TC_BM, n0 = blockIdx.x * TC_BN;
    const int kbeg = blockIdx.z * k_per_split;
    const int kend = k_per_split < K - kbeg ? kbeg + k_per_split : K;
    ConvBwdWeightB<X> gb;
    const int j = n0 + tc_b_column();
    gb.ok = j < J;
    const int c = gb.ok ? j / khw : 0, r = j - c * khw, ky = r / kw, kx = r - ky * kw;
    gb.x = x;
    gb.ci = ci;
    gb.h = h;
    gb.wd = wd;
    gb.wo = wo;
    gb.howo = howo;
    gb.stride = stride;
    gb.oy0 = ky - pad_top;
    gb.ox0 = kx - pad_left;
    gb.coff = (long long)c * h * wd;
    const ConvBwdWeightA ga = {dy, co, howo};
    const ConvBwdWeightOut out = {ws + (long long)blockIdx.z * co * J, J};
    tc_gemm_tile<P>(ga, gb, out, co, J, kbeg, kend, m0, n0);
}

extern "C" __global__ void __launch_bounds__(128) conv2d_bwd_weight_tc_bf16_f32(float* __restrict__ ws, const float* __restrict__ dy,
                                                     const float* __restrict__ x, int n, int ci, int h, int wd,
                                                     int co, int kh, int kw, int stride, int pad_top, int pad_left,
                                                     int ho, int wo, int k_per_split) {
    conv2d_bwd_weight_tc<TcBf16, float>(ws, dy, x, n, ci, h, wd, co, kh, kw, stride, pad_top, pad_left, ho, wo, k_per_split);
}

extern "C" __global__ void __launch_bounds__(128) conv2d_bwd_weight_tc_tf32_f32(float* __restrict__ ws, const float* __restrict__ dy,
                                                     const float* __restrict__ x, int n, int ci, int h, int wd,
                                                     int co, int kh, int kw, int stride, int pad_top, int pad_left,
                                                     int ho, int wo, int k_per_split) {
    conv2d_bwd_weight_tc<TcTf32, float>(ws, dy, x, n, ci, h, wd, co, kh, kw, stride, pad_top, pad_left, ho, wo, k_per_split);
}

extern "C" __global__ void __launch_bounds__(128) conv2d_bwd_weight_tc_bf16in_f32(float* __restrict__ ws, const float* __restrict__ dy,
                                                     const __nv_bfloat16* __restrict__ x, int n, int ci, int h, int wd,
                                                     int co, int kh, int kw, int stride, int pad_top, int pad_left,
                                                     int ho, int wo, int k_per_split) {
    conv2d_bwd_weight_tc<TcBf16, __nv_bfloat16>(ws, dy, x, n, ci, h, wd, co, kh, kw, stride, pad_top, pad_left, ho, wo, k_per_split);
}
