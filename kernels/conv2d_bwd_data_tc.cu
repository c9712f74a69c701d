// conv2d_bwd_data_tc.cu — the input gradient of a 2-D convolution on tensor
// cores (bf16 or tf32 inputs, f32 accumulation): the implicit GEMM of
// conv2d.cu's backward-data pass on the wmma tile of tc_gemm.cuh.
//
//   dx[n,c,iy,ix] = sum over (o, ky, kx) with oy*s - pt + ky = iy and
//                   ox*s - pl + kx = ix of w~[o,c,ky,kx] dy~[n,o,oy,ox]
//   GEMM M = Ci, N = N*H*W, K = Co*KH*KW; A(c, k = (o,ky,kx)) = w[o,c,ky,kx],
//   B(k, q = (n,iy,ix)) = dy[n,o,oy,ox] where the tap hits an output, else 0
//   (stride 2: three of four taps are zero products, as in conv2d.cu).
// Geometry as conv2d.cu. Launch: grid (ceil(N*H*W / 64), ceil(Ci / 64)),
// block 128, static shared memory (launch/conv2d_tc.rs).
// CPU twin: crates/tensor/src/cpu/reduced.rs conv2d_backward_data.
// Version 1: per-element division in the gathers, one shared stage.
#include "tc_gemm.cuh"

struct ConvBwdDataA {  // A(c, k = (o, tap)) = w[(o * Ci + c) * KH*KW + tap]
    const float* w;
    int ci, khw;
    __device__ __forceinline__ float at(int m, int k) const {
        const int o = k / khw, tap = k - o * khw;
        return w[((long long)o * ci + m) * khw + tap];
    }
};

struct ConvBwdDataB {  // this thread's column q = (img, iy, ix)
    const float* dyi;  // dy + img * Co * Ho * Wo
    int sy, sx;        // iy + pt, ix + pl
    int khw, kw, stride, ho, wo;
    bool ok;
    __device__ __forceinline__ float at(int k) const {
        if (!ok) return 0.0f;
        const int o = k / khw, r = k - o * khw, ky = r / kw, kx = r - ky * kw;
        const int yy = sy - ky, xx = sx - kx;
        if (yy < 0 || xx < 0) return 0.0f;
        const int oy = yy / stride, ox = xx / stride;
        if (oy * stride != yy || ox * stride != xx || oy >= ho || ox >= wo) return 0.0f;
        return dyi[((long long)o * ho + oy) * wo + ox];
    }
};

struct ConvBwdDataOut {
    float* dx;
    int ci, hw;
    __device__ __forceinline__ void put(int m, int q, float v) const {
        const int img = q / hw, p = q - img * hw;
        dx[((long long)img * ci + m) * hw + p] = v;
    }
};

template <class P>
__device__ __forceinline__ void conv2d_bwd_data_tc(float* __restrict__ dx, const float* __restrict__ dy,
                                                   const float* __restrict__ w, int n, int ci, int h, int wd, int co,
                                                   int kh, int kw, int stride, int pad_top, int pad_left, int ho,
                                                   int wo) {
    const int khw = kh * kw, K = co * khw, hw = h * wd, Q = n * hw;
    const int m0 = blockIdx.y * TC_BM, n0 = blockIdx.x * TC_BN;
    ConvBwdDataB gb;
    const int q = n0 + tc_b_column();
    gb.ok = q < Q;
    const int img = gb.ok ? q / hw : 0, p = q - img * hw, iy = p / wd, ix = p - iy * wd;
    gb.dyi = dy + (long long)img * co * ho * wo;
    gb.sy = iy + pad_top;
    gb.sx = ix + pad_left;
    gb.khw = khw;
    gb.kw = kw;
    gb.stride = stride;
    gb.ho = ho;
    gb.wo = wo;
    const ConvBwdDataA ga = {w, ci, khw};
    const ConvBwdDataOut out = {dx, ci, hw};
    tc_gemm_tile<P>(ga, gb, out, ci, Q, 0, K, m0, n0);
}

extern "C" __global__ void __launch_bounds__(128) conv2d_bwd_data_tc_bf16_f32(float* __restrict__ dx, const float* __restrict__ dy,
                                                   const float* __restrict__ w, int n, int ci, int h, int wd, int co,
                                                   int kh, int kw, int stride, int pad_top, int pad_left, int ho,
                                                   int wo) {
    conv2d_bwd_data_tc<TcBf16>(dx, dy, w, n, ci, h, wd, co, kh, kw, stride, pad_top, pad_left, ho, wo);
}

extern "C" __global__ void __launch_bounds__(128) conv2d_bwd_data_tc_tf32_f32(float* __restrict__ dx, const float* __restrict__ dy,
                                                   const float* __restrict__ w, int n, int ci, int h, int wd, int co,
                                                   int kh, int kw, int stride, int pad_top, int pad_left, int ho,
                                                   int wo) {
    conv2d_bwd_data_tc<TcTf32>(dx, dy, w, n, ci, h, wd, co, kh, kw, stride, pad_top, pad_left, ho, wo);
}
