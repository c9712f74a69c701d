// layout.cu — data movement on NCHW buffers:
//   upsample_nearest2x_fwd  y [P, 2H, 2W] from x [P, H, W] (P = N*C planes)
//   upsample_nearest2x_bwd  dx [P, H, W] = sum of each 2x2 block of dy,
//                           added as (r0[2j] + r0[2j+1]) + (r1[2j] + r1[2j+1])
//                           exactly as the CPU does (bit-identical)
//   concat_channels_fwd     out [N, A+B] from a [N, A], b [N, B] per sample
//                           (A = Ca*H*W, B = Cb*H*W)
//   split_channels_fwd      the inverse: a, b from d [N, A+B]
//   add_channel_bias_fwd    y = x + bias[plane], bias [N*C], planes of HW
//   add_channel_bias_bwd    dbias[plane] = sum of dy over the plane
// Launch: elementwise kernels are 1-D grid-stride loops over their output
// (block 256, grid min(ceil(total / 256), 8192)); add_channel_bias_bwd
// gives one warp to each plane: block 256 (8 planes), grid ceil(P / 8).
// Its sum runs lane-strided then through a fixed shuffle tree:
// deterministic, f32 (the CPU sums in f64 in index order).
// CPU twin: crates/tensor/src/cpu/layout.rs.
// Versions: v1.
#include "common.cuh"

#define GRID_STRIDE(i, n)                                                                       \
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (unsigned long long)gridDim.x * blockDim.x)

extern "C" __global__ void upsample_nearest2x_fwd_f32(float* __restrict__ y, const float* __restrict__ x,
                                                      unsigned long long planes, int h, int w) {
    const unsigned long long ow = 2ull * w, plane_out = 4ull * h * w;
    const unsigned long long total = planes * plane_out;
    GRID_STRIDE(o, total) {
        unsigned long long p = o / plane_out, r = o - p * plane_out;
        unsigned long long oy = r / ow, ox = r - oy * ow;
        y[o] = x[p * (unsigned long long)h * w + (oy >> 1) * w + (ox >> 1)];
    }
}

extern "C" __global__ void upsample_nearest2x_bwd_f32(float* __restrict__ dx, const float* __restrict__ dy,
                                                      unsigned long long planes, int h, int w) {
    const unsigned long long hw = (unsigned long long)h * w, ow = 2ull * w;
    const unsigned long long total = planes * hw;
    GRID_STRIDE(i, total) {
        unsigned long long p = i / hw, r = i - p * hw;
        unsigned long long y = r / w, x = r - y * w;
        const float* r0 = dy + p * 4ull * hw + (2 * y) * ow;
        const float* r1 = r0 + ow;
        dx[i] = (r0[2 * x] + r0[2 * x + 1]) + (r1[2 * x] + r1[2 * x + 1]);
    }
}

extern "C" __global__ void concat_channels_fwd_f32(float* __restrict__ out, const float* __restrict__ a,
                                                   const float* __restrict__ b, unsigned long long n,
                                                   unsigned long long a_len, unsigned long long b_len) {
    const unsigned long long len = a_len + b_len, total = n * len;
    GRID_STRIDE(i, total) {
        unsigned long long s = i / len, r = i - s * len;
        out[i] = r < a_len ? a[s * a_len + r] : b[s * b_len + (r - a_len)];
    }
}

extern "C" __global__ void split_channels_fwd_f32(float* __restrict__ a, float* __restrict__ b,
                                                  const float* __restrict__ d, unsigned long long n,
                                                  unsigned long long a_len, unsigned long long b_len) {
    const unsigned long long len = a_len + b_len, total = n * len;
    GRID_STRIDE(i, total) {
        unsigned long long s = i / len, r = i - s * len;
        if (r < a_len)
            a[s * a_len + r] = d[i];
        else
            b[s * b_len + (r - a_len)] = d[i];
    }
}

extern "C" __global__ void add_channel_bias_fwd_f32(float* __restrict__ y, const float* __restrict__ x,
                                                    const float* __restrict__ bias, unsigned long long planes,
                                                    unsigned long long hw) {
    const unsigned long long total = planes * hw;
    GRID_STRIDE(i, total) { y[i] = x[i] + bias[i / hw]; }
}

extern "C" __global__ void add_channel_bias_bwd_f32(float* __restrict__ dbias, const float* __restrict__ dy,
                                                    unsigned long long planes, unsigned long long hw) {
    const int lane = threadIdx.x & 31;
    const unsigned long long p = (unsigned long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    float acc = 0.0f;
    if (p < planes) {
        const float* src = dy + p * hw;
        for (unsigned long long i = lane; i < hw; i += 32) acc += src[i];
    }
    acc = warp_sum(acc);  // all 32 lanes take part, in range or not
    if (p < planes && lane == 0) dbias[p] = acc;
}
