// group_norm.cu — group normalisation of x [N, C, HW] with G groups of
// consecutive channels, optionally fused with SiLU:
//   y = silu?((x - mean_g) * rstd_g * gamma_c + beta_c),
//   rstd = 1 / sqrt(var + eps), biased variance, two passes (mean, then the
//   squared deviations) as the CPU does.
//
//   group_norm_fwd         one block per (image, group) slab of
//                          cpg * HW contiguous elements; saves mean, rstd [N*G]
//   group_norm_bwd         one block per slab: per channel of the group,
//                          pg = sum dz * xhat, pb = sum dz (dz = dy, times
//                          silu'(xhat * gamma + beta) when fused) written to
//                          workspaces pg, pb [N*C]; then
//                          dx = rstd (gamma dz - mean(gamma dz)
//                                     - xhat mean(gamma dz xhat))
//   group_norm_bwd_params  qg[s, c] = sum of pg[n, c] over the images n of
//                          split s (s*R .. s*R+R-1), qb likewise from pb, in
//                          image order, one thread per (channel, split);
//                          sum_splits (reduce.cu) adds the S splits in order
//                          into dgamma, dbeta (one split: written directly)
// Launch: fwd/bwd grid N*G, block 256 (any multiple of 32 up to 1024);
// bwd_params: block 256, grid (ceil(C / 256), S).
// All sums are f32 per thread over a fixed stride, then block_sum (fixed
// tree): deterministic. (The CPU accumulates in f64; differences are f32
// rounding, ~1e-7 relative.)
// CPU twin: crates/tensor/src/cpu/group_norm.rs.
// Versions: v1 re-reads the slab from global memory (L1/L2 resident: a slab
// is at most a few tens of KiB in the U-Net) instead of holding it in
// shared memory.
#include "common.cuh"

extern "C" __global__ void group_norm_fwd_f32(float* __restrict__ y, float* __restrict__ mean_out,
                                              float* __restrict__ rstd_out, const float* __restrict__ x,
                                              const float* __restrict__ gamma, const float* __restrict__ beta,
                                              int c, int hw, int groups, float eps, int fuse_silu) {
    __shared__ float scratch[32];
    const int slab = blockIdx.x;  // image * groups + group
    const int cpg = c / groups;
    const int c0 = (slab % groups) * cpg;
    const long long len = (long long)cpg * hw;
    const float* xs = x + (long long)slab * len;
    float* ys = y + (long long)slab * len;

    float s = 0.0f;
    for (long long i = threadIdx.x; i < len; i += blockDim.x) s += xs[i];
    const float mean = block_sum(s, scratch) / (float)len;

    float q = 0.0f;
    for (long long i = threadIdx.x; i < len; i += blockDim.x) {
        float d = xs[i] - mean;
        q += d * d;
    }
    const float var = block_sum(q, scratch) / (float)len;
    const float rstd = 1.0f / sqrtf(var + eps);

    for (long long i = threadIdx.x; i < len; i += blockDim.x) {
        int ch = c0 + (int)(i / hw);
        float z = (xs[i] - mean) * (rstd * gamma[ch]) + beta[ch];
        ys[i] = fuse_silu ? silu_f(z) : z;
    }
    if (threadIdx.x == 0) {
        mean_out[slab] = mean;
        rstd_out[slab] = rstd;
    }
}

extern "C" __global__ void group_norm_bwd_f32(float* __restrict__ dx, float* __restrict__ pg,
                                              float* __restrict__ pb, const float* __restrict__ dy,
                                              const float* __restrict__ x, const float* __restrict__ gamma,
                                              const float* __restrict__ beta, const float* __restrict__ mean_in,
                                              const float* __restrict__ rstd_in, int c, int hw, int groups,
                                              int fuse_silu) {
    __shared__ float scratch[64];
    const int slab = blockIdx.x;
    const int img = slab / groups;
    const int cpg = c / groups;
    const int c0 = (slab % groups) * cpg;
    const long long len = (long long)cpg * hw;
    const long long base = (long long)slab * len;
    const float mean = mean_in[slab], rstd = rstd_in[slab];

    // pass 1: per channel sums of dz * xhat and dz; accumulate gamma-weighted
    // totals for the dx formula (every thread gets every block sum).
    float tot_b = 0.0f, tot_g = 0.0f;
    for (int j = 0; j < cpg; ++j) {
        const int ch = c0 + j;
        const float g = gamma[ch], bt = beta[ch];
        const float* dyc = dy + base + (long long)j * hw;
        const float* xc = x + base + (long long)j * hw;
        float sg = 0.0f, sb = 0.0f;
        for (int i = threadIdx.x; i < hw; i += blockDim.x) {
            float xhat = (xc[i] - mean) * rstd;
            float dz = dyc[i];
            if (fuse_silu) dz *= silu_grad_f(xhat * g + bt);
            sg += dz * xhat;
            sb += dz;
        }
        block_sum2(sg, sb, scratch);
        if (threadIdx.x == 0) {
            pg[(long long)img * c + ch] = sg;
            pb[(long long)img * c + ch] = sb;
        }
        tot_b += g * sb;
        tot_g += g * sg;
    }
    const float mean_dxhat = tot_b / (float)len;
    const float mean_dxhat_xhat = tot_g / (float)len;

    // pass 2: dx
    for (long long i = threadIdx.x; i < len; i += blockDim.x) {
        const int ch = c0 + (int)(i / hw);
        const float g = gamma[ch];
        float xhat = (x[base + i] - mean) * rstd;
        float dz = dy[base + i];
        if (fuse_silu) dz *= silu_grad_f(xhat * g + beta[ch]);
        dx[base + i] = rstd * (g * dz - mean_dxhat - xhat * mean_dxhat_xhat);
    }
}

extern "C" __global__ void group_norm_bwd_params_f32(float* __restrict__ qg, float* __restrict__ qb,
                                                     const float* __restrict__ pg, const float* __restrict__ pb,
                                                     int n, int c, int imgs_per_split) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;  // no barrier in this kernel
    const int beg = blockIdx.y * imgs_per_split;
    const int end = imgs_per_split < n - beg ? beg + imgs_per_split : n;
    float sg = 0.0f, sb = 0.0f;
    for (int i = beg; i < end; ++i) {
        sg += pg[(long long)i * c + ch];
        sb += pb[(long long)i * c + ch];
    }
    qg[(long long)blockIdx.y * c + ch] = sg;
    qb[(long long)blockIdx.y * c + ch] = sb;
}
