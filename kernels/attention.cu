// attention.cu — single-head self-attention over the H*W positions, with
// q, k, v, out channel-major [B, C, N] (what a 1x1 conv in NCHW produces):
//   s_ij = C^-0.5 sum_c q[c,i] k[c,j], p_ij = softmax_j(s_ij),
//   out[c,i] = sum_j p_ij v[c,j], lse_i = log sum_j exp(s_ij).
//
//   attention_fwd        flash-style: one block per (query tile of BQ, batch
//                        item); keys stream through shared memory 32 at a
//                        time with the online softmax (running max m and sum
//                        l per query, rescaling the output accumulator); the
//                        N x N weights never reach global memory. Saves lse.
//   attention_bwd_rowdot D_i = sum_c dout[c,i] out[c,i] (f64 accumulation,
//                        as the CPU), one thread per (b, i)
//   attention_bwd_dkdv   one block per (key tile of T, batch item): loops over
//                        query tiles, recomputes p_ij = exp(scale s_ij - lse_i),
//                        dp_ij = sum_c dout[c,i] v[c,j],
//                        ds_ij = scale p_ij (dp_ij - D_i), and accumulates
//                        dv[c,j] += sum_i p_ij dout[c,i], dk[c,j] += sum_i ds_ij q[c,i]
//   attention_bwd_dq     one block per (query tile of T, batch item): loops
//                        over key tiles, dq[c,i] += sum_j ds_ij k[c,j]
//   attention_weights_fwd p [B, N, N] from q, k and the forward's lse (for
//                        tests and inspection; one thread per weight)
// dq is a separate pass (recomputing p and ds) instead of float atomics, so
// every gradient is a fixed-order sum: deterministic, at the cost of doing
// the score products of the backward twice.
// Shared memory (floats, dynamic): fwd 2*C*BQ + 32*C + 32*(BQ+1) + 3*BQ;
// dkdv 6*C*T + 2*T*(T+1) + 2*T; dq 5*C*T + T*(T+1) + 2*T. The host picks
// BQ and T in {32, 16, 8}, the largest that fits its budget.
// Launch: fwd grid (ceil(N / BQ), B), block 256; dkdv and dq grid
// (ceil(N / T), B), block 256; rowdot block 256, grid ceil(B*N / 256);
// weights grid-stride block 256.
// CPU twin: crates/tensor/src/cpu/attention.rs.
// Versions: v1: FP32 FMA from shared memory, one block of 256 threads per
// tile; v2: the forward's threads each two scores (keys j, j + 16) and two
// output channels (c, c + C/2), the backward's dk/dv and dq loops two
// channels, so a shared load feeds two FMAs (same sums, same bits); the U-Net's attention is small (C = 64, N = 49 for MNIST; C = 256,
// N = 256 for CIFAR-10 at 16x16).
#include "common.cuh"

#define ATT_BKV 32
#define ATT_NEG_BIG (-3.402823466e38f)

extern "C" __global__ void attention_fwd_f32(float* __restrict__ out, float* __restrict__ lse,
                                             const float* __restrict__ q, const float* __restrict__ k,
                                             const float* __restrict__ v, int c, int n, float scale, int bq) {
    extern __shared__ float smem[];
    float* Qs = smem;                    // [c][bq]
    float* KVs = Qs + c * bq;            // [c][32], K then V
    float* St = KVs + c * ATT_BKV;       // [32][bq + 1], scores then weights
    float* Os = St + ATT_BKV * (bq + 1); // [c][bq]
    float* ms = Os + c * bq;             // [bq] running max
    float* ls = ms + bq;                 // [bq] running sum
    float* als = ls + bq;                // [bq] rescale of this tile

    const int t = threadIdx.x, lane = t & 31, warp = t >> 5, nwarps = blockDim.x >> 5;
    const int i0 = blockIdx.x * bq;
    const long long base = (long long)blockIdx.y * c * n;
    const int sp = bq + 1;

    for (int e = t; e < c * bq; e += blockDim.x) {
        const int cc = e / bq, i = e - cc * bq;
        Qs[e] = (i0 + i < n) ? q[base + (long long)cc * n + i0 + i] : 0.0f;
        Os[e] = 0.0f;
    }
    for (int i = t; i < bq; i += blockDim.x) {
        ms[i] = ATT_NEG_BIG;
        ls[i] = 0.0f;
        als[i] = 0.0f;
    }
    __syncthreads();

    for (int j0 = 0; j0 < n; j0 += ATT_BKV) {
        for (int e = t; e < c * ATT_BKV; e += blockDim.x) {
            const int cc = e >> 5, j = e & 31;
            KVs[e] = (j0 + j < n) ? k[base + (long long)cc * n + j0 + j] : 0.0f;
        }
        __syncthreads();
        // raw scores, scaled; masked keys get the most negative float. Each
        // thread two keys (j, j + 16) of one query: one load of q for two
        // products; each score still sums over c in order.
        for (int e = t; e < (ATT_BKV / 2) * bq; e += blockDim.x) {
            const int j = e / bq, i = e - j * bq;
            float s0 = 0.0f, s1 = 0.0f;
            for (int cc = 0; cc < c; ++cc) {
                const float qv = Qs[cc * bq + i];
                s0 += qv * KVs[cc * ATT_BKV + j];
                s1 += qv * KVs[cc * ATT_BKV + j + ATT_BKV / 2];
            }
            St[j * sp + i] = (j0 + j < n) ? s0 * scale : ATT_NEG_BIG;
            St[(j + ATT_BKV / 2) * sp + i] = (j0 + j + ATT_BKV / 2 < n) ? s1 * scale : ATT_NEG_BIG;
        }
        __syncthreads();
        // online softmax: one warp per query row, lane = key
        for (int i = warp; i < bq; i += nwarps) {
            const float s = St[lane * sp + i];
            const float m_old = ms[i];
            const float m_new = fmaxf(m_old, warp_max(s));
            const float p = expf(s - m_new);
            St[lane * sp + i] = p;
            const float sum = warp_sum(p);
            if (lane == 0) {
                const float alpha = expf(m_old - m_new);
                ls[i] = ls[i] * alpha + sum;
                ms[i] = m_new;
                als[i] = alpha;
            }
        }
        __syncthreads();
        for (int e = t; e < c * ATT_BKV; e += blockDim.x) {
            const int cc = e >> 5, j = e & 31;
            KVs[e] = (j0 + j < n) ? v[base + (long long)cc * n + j0 + j] : 0.0f;
        }
        __syncthreads();
        // each thread two channels (cc, cc + half) of one query: one load of
        // the weight for two products; each output sums over j in order
        const int half = (c + 1) >> 1;
        for (int e = t; e < half * bq; e += blockDim.x) {
            const int cc = e / bq, i = e - cc * bq;
            const int cc1 = (cc + half < c) ? cc + half : cc;  // odd c: the last row alone
            const float a = als[i];
            float o0 = Os[cc * bq + i] * a, o1 = Os[cc1 * bq + i] * a;
            for (int j = 0; j < ATT_BKV; ++j) {
                const float p = St[j * sp + i];
                o0 += p * KVs[cc * ATT_BKV + j];
                o1 += p * KVs[cc1 * ATT_BKV + j];
            }
            Os[cc * bq + i] = o0;
            if (cc1 != cc) Os[cc1 * bq + i] = o1;
        }
        __syncthreads();
    }

    for (int e = t; e < c * bq; e += blockDim.x) {
        const int cc = e / bq, i = e - cc * bq;
        if (i0 + i < n) out[base + (long long)cc * n + i0 + i] = Os[e] / ls[i];
    }
    for (int i = t; i < bq; i += blockDim.x)
        if (i0 + i < n) lse[(long long)blockIdx.y * n + i0 + i] = ms[i] + logf(ls[i]);
}

extern "C" __global__ void attention_bwd_rowdot_f32(float* __restrict__ dvec, const float* __restrict__ dout,
                                                    const float* __restrict__ out, int b, int c, int n) {
    const long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (long long)b * n) return;  // no barrier in this kernel
    const long long item = e / n, i = e - item * n;
    const long long base = item * c * n + i;
    double acc = 0.0;
    for (int cc = 0; cc < c; ++cc) acc += (double)dout[base + (long long)cc * n] * (double)out[base + (long long)cc * n];
    dvec[e] = (float)acc;
}

// p and ds of one (query tile, key tile) pair into Pt / dSt [tk][tq + 1]
// (p may be null when only ds is wanted). Lanes walk queries i.
__device__ __forceinline__ void att_bwd_scores(float* Pt, float* dSt, const float* Qs, const float* dOs,
                                               const float* Ks, const float* Vs, const float* lse_s,
                                               const float* D_s, int c, int n, int T, int i0, int j0,
                                               float scale) {
    const int sp = T + 1;
    for (int e = threadIdx.x; e < T * T; e += blockDim.x) {
        const int j = e / T, i = e - j * T;
        float p = 0.0f, ds = 0.0f;
        if (i0 + i < n && j0 + j < n) {
            float s = 0.0f, dp = 0.0f;
            for (int cc = 0; cc < c; ++cc) {
                s += Qs[cc * T + i] * Ks[cc * T + j];
                dp += dOs[cc * T + i] * Vs[cc * T + j];
            }
            p = expf(s * scale - lse_s[i]);
            ds = scale * p * (dp - D_s[i]);
        }
        if (Pt) Pt[j * sp + i] = p;
        dSt[j * sp + i] = ds;
    }
}

// Loads a [c][T] tile of columns [col0, col0 + T) of one item's [c, n]
// matrix (zeros past n).
__device__ __forceinline__ void att_load_tile(float* dst, const float* __restrict__ src, int c, int n, int T,
                                              int col0) {
    for (int e = threadIdx.x; e < c * T; e += blockDim.x) {
        const int cc = e / T, j = e - cc * T;
        dst[e] = (col0 + j < n) ? src[(long long)cc * n + col0 + j] : 0.0f;
    }
}

extern "C" __global__ void attention_bwd_dkdv_f32(float* __restrict__ dk, float* __restrict__ dv,
                                                  const float* __restrict__ dout, const float* __restrict__ q,
                                                  const float* __restrict__ k, const float* __restrict__ v,
                                                  const float* __restrict__ lse, const float* __restrict__ dvec,
                                                  int c, int n, float scale, int T) {
    extern __shared__ float smem[];
    const int ct = c * T, sp = T + 1;
    float* Ks = smem;
    float* Vs = Ks + ct;
    float* Qs = Vs + ct;
    float* dOs = Qs + ct;
    float* dKs = dOs + ct;
    float* dVs = dKs + ct;
    float* Pt = dVs + ct;
    float* dSt = Pt + T * sp;
    float* lse_s = dSt + T * sp;
    float* D_s = lse_s + T;

    const int t = threadIdx.x;
    const int j0 = blockIdx.x * T;
    const long long base = (long long)blockIdx.y * c * n;
    const long long rbase = (long long)blockIdx.y * n;

    att_load_tile(Ks, k + base, c, n, T, j0);
    att_load_tile(Vs, v + base, c, n, T, j0);
    for (int e = t; e < ct; e += blockDim.x) {
        dKs[e] = 0.0f;
        dVs[e] = 0.0f;
    }

    for (int i0 = 0; i0 < n; i0 += T) {
        att_load_tile(Qs, q + base, c, n, T, i0);
        att_load_tile(dOs, dout + base, c, n, T, i0);
        for (int i = t; i < T; i += blockDim.x) {
            lse_s[i] = (i0 + i < n) ? lse[rbase + i0 + i] : 0.0f;
            D_s[i] = (i0 + i < n) ? dvec[rbase + i0 + i] : 0.0f;
        }
        __syncthreads();
        att_bwd_scores(Pt, dSt, Qs, dOs, Ks, Vs, lse_s, D_s, c, n, T, i0, j0, scale);
        __syncthreads();
        // lanes walk keys j; each thread two channels (cc, cc + half), so a
        // load of p and ds feeds two FMAs each; sums over i in order
        const int half = (c + 1) >> 1;
        for (int e = t; e < half * T; e += blockDim.x) {
            const int cc = e / T, j = e - cc * T;
            const int cc1 = (cc + half < c) ? cc + half : cc;  // odd c: the last row alone
            const int e0 = cc * T + j, e1 = cc1 * T + j;
            float av0 = dVs[e0], ak0 = dKs[e0], av1 = dVs[e1], ak1 = dKs[e1];
            for (int i = 0; i < T; ++i) {
                const float p = Pt[j * sp + i], ds = dSt[j * sp + i];
                av0 += p * dOs[cc * T + i];
                ak0 += ds * Qs[cc * T + i];
                av1 += p * dOs[cc1 * T + i];
                ak1 += ds * Qs[cc1 * T + i];
            }
            dVs[e0] = av0;
            dKs[e0] = ak0;
            if (cc1 != cc) {
                dVs[e1] = av1;
                dKs[e1] = ak1;
            }
        }
        __syncthreads();
    }

    for (int e = t; e < ct; e += blockDim.x) {
        const int cc = e / T, j = e - cc * T;
        if (j0 + j < n) {
            dk[base + (long long)cc * n + j0 + j] = dKs[e];
            dv[base + (long long)cc * n + j0 + j] = dVs[e];
        }
    }
}

extern "C" __global__ void attention_bwd_dq_f32(float* __restrict__ dq, const float* __restrict__ dout,
                                                const float* __restrict__ q, const float* __restrict__ k,
                                                const float* __restrict__ v, const float* __restrict__ lse,
                                                const float* __restrict__ dvec, int c, int n, float scale, int T) {
    extern __shared__ float smem[];
    const int ct = c * T, sp = T + 1;
    float* Qs = smem;
    float* dOs = Qs + ct;
    float* dQs = dOs + ct;
    float* Ks = dQs + ct;
    float* Vs = Ks + ct;
    float* dSt = Vs + ct;
    float* lse_s = dSt + T * sp;
    float* D_s = lse_s + T;

    const int t = threadIdx.x;
    const int i0 = blockIdx.x * T;
    const long long base = (long long)blockIdx.y * c * n;
    const long long rbase = (long long)blockIdx.y * n;

    att_load_tile(Qs, q + base, c, n, T, i0);
    att_load_tile(dOs, dout + base, c, n, T, i0);
    for (int e = t; e < ct; e += blockDim.x) dQs[e] = 0.0f;
    for (int i = t; i < T; i += blockDim.x) {
        lse_s[i] = (i0 + i < n) ? lse[rbase + i0 + i] : 0.0f;
        D_s[i] = (i0 + i < n) ? dvec[rbase + i0 + i] : 0.0f;
    }

    for (int j0 = 0; j0 < n; j0 += T) {
        att_load_tile(Ks, k + base, c, n, T, j0);
        att_load_tile(Vs, v + base, c, n, T, j0);
        __syncthreads();
        att_bwd_scores((float*)0, dSt, Qs, dOs, Ks, Vs, lse_s, D_s, c, n, T, i0, j0, scale);
        __syncthreads();
        // lanes walk queries i; each thread two channels (cc, cc + half)
        const int half = (c + 1) >> 1;
        for (int e = t; e < half * T; e += blockDim.x) {
            const int cc = e / T, i = e - cc * T;
            const int cc1 = (cc + half < c) ? cc + half : cc;  // odd c: the last row alone
            float a0 = dQs[cc * T + i], a1 = dQs[cc1 * T + i];
            for (int j = 0; j < T; ++j) {
                const float ds = dSt[j * sp + i];
                a0 += ds * Ks[cc * T + j];
                a1 += ds * Ks[cc1 * T + j];
            }
            dQs[cc * T + i] = a0;
            if (cc1 != cc) dQs[cc1 * T + i] = a1;
        }
        __syncthreads();
    }

    for (int e = t; e < ct; e += blockDim.x) {
        const int cc = e / T, i = e - cc * T;
        if (i0 + i < n) dq[base + (long long)cc * n + i0 + i] = dQs[e];
    }
}

extern "C" __global__ void attention_weights_fwd_f32(float* __restrict__ p, const float* __restrict__ q,
                                                     const float* __restrict__ k, const float* __restrict__ lse,
                                                     int b, int c, int n, float scale) {
    const unsigned long long total = (unsigned long long)b * n * n;
    for (unsigned long long e = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long item = e / ((unsigned long long)n * n);
        const unsigned long long r = e - item * n * n;
        const int i = (int)(r / n), j = (int)(r - (unsigned long long)i * n);
        const float* qb = q + item * c * n;
        const float* kb = k + item * c * n;
        float s = 0.0f;
        for (int cc = 0; cc < c; ++cc) s += qb[(long long)cc * n + i] * kb[(long long)cc * n + j];
        p[e] = expf(s * scale - lse[item * n + i]);
    }
}
