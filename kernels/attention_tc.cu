// attention_tc.cu — single-head self-attention on tensor cores: the matrix
// products of attention.cu (same op, same [B, C, N] channel-major q, k, v,
// out; lse [B, N]) run through nvcuda::wmma with bf16 (m16n16k16) or tf32
// (m16n16k8) inputs and f32 accumulators; softmax, lse, exp and the score
// gradients are f32 arithmetic, as written (compiled with --fmad=false).
//
//   attention_fwd_tc     one block per (query tile of BQ in {32, 16}, item),
//                        keys in tiles of 32, two passes over the keys (no
//                        N x N in global memory):
//                        pass 1  S = Q~^T K~ (wmma), x = S * scale (f32),
//                                online max / sum per query (one warp per
//                                query, lane = key, as attention.cu) ->
//                                lse_i = m_i + log l_i;
//                        pass 2  the same S, p_ij = exp(x_ij - lse_i) (the
//                                final normalised weights, f32), rounded to
//                                p~, out^T += p~ V~^T (wmma, the f32
//                                accumulator tile kept in shared memory, so
//                                each output sums its keys in order 0..N).
//   attention_bwd_dkdv_tc one block per (key tile of T in {32, 16}, item),
//                        query tiles of T in order: S^T = K~^T Q~ and
//                        dP^T = V~^T dO~ (wmma), p = exp(x - lse_i),
//                        ds = scale p (dp - D_i) (f32), rounded to p~, ds~;
//                        dv[c,j] += sum_i p~_ij dout~[c,i] and
//                        dk[c,j] += sum_i ds~_ij q~[c,i] (wmma, f32 tiles in
//                        shared memory).
//   attention_bwd_dq_tc  one block per (query tile of T, item), key tiles in
//                        order: S, dP, ds as above, dq[c,i] += sum_j ds~_ij k~[c,j].
// D_i = sum_c dout[c,i] out[c,i] comes from attention.cu's
// attention_bwd_rowdot_f32 (f64 sum). dq is its own pass (scores computed
// again) instead of float atomics: every sum has a fixed order, the results
// are deterministic.
//
// What is rounded where (~): q, k, v, dout when staged in shared memory
// (bf16 nearest even / tf32 nearest ties away, as tc_gemm.cuh), and the
// weights p and score gradients ds that the kernels compute in f32 before
// they enter a wmma product. Everything else is f32.
//
// Layout: every staged tile is stored as in global memory, [C][tokens]
// (ld = tile + 8); a product picks matrix_a / matrix_b row- or col-major
// to read it transposed or not, and the accumulator tiles are [C][tokens]
// f32 (ld = tile + 4), loaded and stored mem_col_major around each mma.
// Channels are zero-padded to a multiple of 16, tokens past N to the tile.
// The file declares no static shared memory, so the dynamic buffer (declared
// in each extern "C" kernel, as the emulator wants it) starts the block's
// shared window, aligned; regions are carved at multiples of 128 bytes.
// Dynamic shared memory (bytes, each region rounded up to 128; es = 2 for
// bf16, 4 for tf32; Cp = C rounded up to 16), as the host computes it in
// crates/tensor/src/gpu/launch/attention_tc.rs:
//   fwd   Cp(BQ+8)es + Cp*40 es + BQ*36*4 + BQ*40 es + Cp(BQ+4)4 + 2*BQ*4
//   dkdv  4 Cp(T+8)es + 2 T(T+4)4 + 2 T(T+8)es + 2 Cp(T+4)4 + 2*T*4
//   dq    4 Cp(T+8)es + 2 T(T+4)4 + T(T+8)es + Cp(T+4)4 + 2*T*4
// Launch: grid (ceil(N / tile), B), block 128 (4 warps).
// CPU twin: crates/tensor/src/cpu/reduced.rs attention_forward /
// attention_backward (the same roundings, f64 sums, each output with its
// error bound ingredients); bounds derived in crates/tensor/tests/attention_tc.rs.
// fp32 twin: attention.cu / cpu/attention.rs.
// The _bf16in kernels read q, k, v stored in bf16 (widened exactly while
// staged, so rounded to themselves): the bits of the _bf16 kernels.
// Version 1: one-stage staging, no register-resident accumulators (the
// f32 tiles round-trip through shared memory at every key / query tile).
#include "common.cuh"
#include "tc_gemm.cuh"

#define ATT_TC_BKV 32
#define ATT_TC_NEG_BIG (-3.402823466e38f)

__device__ __forceinline__ int att_tc_pad16(int x) { return (x + 15) & ~15; }

// Next region of the dynamic buffer, `bytes` rounded up to 128 (keeps
// every wmma pointer 32-byte aligned).
__device__ __forceinline__ unsigned char* att_tc_take(unsigned char*& at, long long bytes) {
    unsigned char* r = at;
    at += (bytes + 127) & ~127LL;
    return r;
}

// dst[cc][j] (ld) = rounded src[cc, col0 + j] of one item's [c, n] matrix,
// zero past c (up to cp) and past n (up to tile). Two adjacent j per
// thread, one store: a 4-byte word of bf16 pairs has one writer. src is
// f32, or bf16 (X = __nv_bfloat16: q, k, v kept in bf16, widened exactly
// by tc_load and so rounded to themselves).
template <class P, class X>
__device__ __forceinline__ void att_tc_stage(typename P::S* dst, int ld, const X* __restrict__ src, int c,
                                             int cp, int n, int tile, int col0) {
    const int half = tile >> 1;
    for (int e = threadIdx.x; e < cp * half; e += blockDim.x) {
        const int cc = e / half, j = (e - cc * half) * 2;
        const bool row = cc < c;
        const float x0 = (row && col0 + j < n) ? tc_load(src[(long long)cc * n + col0 + j]) : 0.0f;
        const float x1 = (row && col0 + j + 1 < n) ? tc_load(src[(long long)cc * n + col0 + j + 1]) : 0.0f;
        P::store2(dst + cc * ld + j, x0, x1);
    }
}

// F[a][b] (f32, ld lf) = sum_c X[c][a] Y[c][b] for a < ta, b < tb, X and Y
// staged [c][token] (ld lx, ly). One 16 x 16 output fragment per warp at a
// time, c in order.
template <class P>
__device__ __forceinline__ void att_tc_scores(float* F, int lf, const typename P::S* X, int lx, int ta,
                                              const typename P::S* Y, int ly, int tb, int cp) {
    using namespace nvcuda;
    const int warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5, fb = tb / 16;
    for (int f = warp; f < (ta / 16) * fb; f += nwarps) {
        const int a0 = (f / fb) * 16, b0 = (f - (f / fb) * fb) * 16;
        wmma::fragment<wmma::accumulator, 16, 16, P::KS, float> acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int c0 = 0; c0 < cp; c0 += P::KS) {
            wmma::fragment<wmma::matrix_a, 16, 16, P::KS, typename P::F, wmma::col_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, P::KS, typename P::F, wmma::row_major> b;
            wmma::load_matrix_sync(a, X + c0 * lx + a0, lx);
            wmma::load_matrix_sync(b, Y + c0 * ly + b0, ly);
            wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(F + a0 * lf + b0, acc, lf, wmma::mem_row_major);
    }
}

// Acc[c][a] (f32, ld lacc) += sum_b W[a][b] Y[c][b] for a < ta, b < tb,
// c < cp: W row-major rounded weights (ld lw), Y staged [c][token] (ld ly).
// b in order, after what Acc already holds.
template <class P>
__device__ __forceinline__ void att_tc_accumulate(float* Acc, int lacc, const typename P::S* W, int lw, int ta,
                                                  int tb, const typename P::S* Y, int ly, int cp) {
    using namespace nvcuda;
    const int warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5, fa = ta / 16;
    for (int f = warp; f < fa * (cp / 16); f += nwarps) {
        const int a0 = (f - (f / fa) * fa) * 16, c0 = (f / fa) * 16;
        wmma::fragment<wmma::accumulator, 16, 16, P::KS, float> acc;
        wmma::load_matrix_sync(acc, Acc + c0 * lacc + a0, lacc, wmma::mem_col_major);
        for (int b0 = 0; b0 < tb; b0 += P::KS) {
            wmma::fragment<wmma::matrix_a, 16, 16, P::KS, typename P::F, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, P::KS, typename P::F, wmma::col_major> b;
            wmma::load_matrix_sync(a, W + a0 * lw + b0, lw);
            wmma::load_matrix_sync(b, Y + c0 * ly + b0, ly);
            wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(Acc + c0 * lacc + a0, acc, lacc, wmma::mem_col_major);
    }
}

// out[c, tile0 + a] = Acc[c][a] for c < c, valid a.
__device__ __forceinline__ void att_tc_write(float* __restrict__ dst, const float* Acc, int lacc, int c, int n,
                                             int tile, int col0) {
    for (int e = threadIdx.x; e < c * tile; e += blockDim.x) {
        const int cc = e / tile, a = e - cc * tile;
        if (col0 + a < n) dst[(long long)cc * n + col0 + a] = Acc[cc * lacc + a];
    }
}

template <class P, class X>  // X: q, k, v's element type (float, or __nv_bfloat16)
__device__ __forceinline__ void attention_fwd_tc(float* smem, float* __restrict__ out, float* __restrict__ lse,
                                                 const X* __restrict__ q, const X* __restrict__ k,
                                                 const X* __restrict__ v, int c, int n, float scale, int bq) {
    typedef typename P::S S;
    const int cp = att_tc_pad16(c), lq = bq + 8, lk = ATT_TC_BKV + 8, ls = ATT_TC_BKV + 4, lo = bq + 4;
    const int es = (int)sizeof(S);
    unsigned char* at = reinterpret_cast<unsigned char*>(smem);
    S* Qs = reinterpret_cast<S*>(att_tc_take(at, (long long)cp * lq * es));        // [cp][bq + 8]
    S* KVs = reinterpret_cast<S*>(att_tc_take(at, (long long)cp * lk * es));       // [cp][40]: K, then V
    float* Ss = reinterpret_cast<float*>(att_tc_take(at, (long long)bq * ls * 4));  // [bq][36] scores
    S* Ps = reinterpret_cast<S*>(att_tc_take(at, (long long)bq * lk * es));        // [bq][40] weights p~
    float* Os = reinterpret_cast<float*>(att_tc_take(at, (long long)cp * lo * 4));  // [cp][bq + 4] out
    float* ms = reinterpret_cast<float*>(att_tc_take(at, (long long)bq * 4));       // running max, then lse
    float* ls_ = reinterpret_cast<float*>(att_tc_take(at, (long long)bq * 4));      // running sum

    const int t = threadIdx.x, lane = t & 31, warp = t >> 5, nwarps = blockDim.x >> 5;
    const int i0 = blockIdx.x * bq;
    const long long base = (long long)blockIdx.y * c * n;

    att_tc_stage<P>(Qs, lq, q + base, c, cp, n, bq, i0);
    for (int e = t; e < cp * lo; e += blockDim.x) Os[e] = 0.0f;
    for (int i = t; i < bq; i += blockDim.x) {
        ms[i] = ATT_TC_NEG_BIG;
        ls_[i] = 0.0f;
    }
    __syncthreads();

    // pass 1: lse
    for (int j0 = 0; j0 < n; j0 += ATT_TC_BKV) {
        att_tc_stage<P>(KVs, lk, k + base, c, cp, n, ATT_TC_BKV, j0);
        __syncthreads();
        att_tc_scores<P>(Ss, ls, Qs, lq, bq, KVs, lk, ATT_TC_BKV, cp);
        __syncthreads();
        for (int i = warp; i < bq; i += nwarps) {
            const float s = (j0 + lane < n) ? Ss[i * ls + lane] * scale : ATT_TC_NEG_BIG;
            const float m_old = ms[i];
            const float m_new = fmaxf(m_old, warp_max(s));
            const float sum = warp_sum(expf(s - m_new));
            if (lane == 0) {
                ls_[i] = ls_[i] * expf(m_old - m_new) + sum;
                ms[i] = m_new;
            }
        }
        __syncthreads();
    }
    for (int i = t; i < bq; i += blockDim.x) {
        const float l = ms[i] + logf(ls_[i]);
        ms[i] = l;
        if (i0 + i < n) lse[(long long)blockIdx.y * n + i0 + i] = l;
    }
    __syncthreads();

    // pass 2: out = sum_j p~_ij v~_j, p the normalised weights
    for (int j0 = 0; j0 < n; j0 += ATT_TC_BKV) {
        att_tc_stage<P>(KVs, lk, k + base, c, cp, n, ATT_TC_BKV, j0);
        __syncthreads();
        att_tc_scores<P>(Ss, ls, Qs, lq, bq, KVs, lk, ATT_TC_BKV, cp);
        __syncthreads();
        for (int e = t; e < bq * (ATT_TC_BKV / 2); e += blockDim.x) {  // keys j, j + 1
            const int i = e / (ATT_TC_BKV / 2), j = (e - i * (ATT_TC_BKV / 2)) * 2;
            const bool row = i0 + i < n;
            const float p0 = (row && j0 + j < n) ? expf(Ss[i * ls + j] * scale - ms[i]) : 0.0f;
            const float p1 = (row && j0 + j + 1 < n) ? expf(Ss[i * ls + j + 1] * scale - ms[i]) : 0.0f;
            P::store2(Ps + i * lk + j, p0, p1);
        }
        att_tc_stage<P>(KVs, lk, v + base, c, cp, n, ATT_TC_BKV, j0);  // K is no longer read
        __syncthreads();
        att_tc_accumulate<P>(Os, lo, Ps, lk, bq, ATT_TC_BKV, KVs, lk, cp);
        __syncthreads();
    }
    att_tc_write(out + base, Os, lo, c, n, bq, i0);
}

// p and ds of one (query, key) pair from its raw score, dp, lse and D;
// both 0 outside the n x n matrix.
__device__ __forceinline__ void att_tc_pds(float& p, float& ds, bool valid, float s, float dp, float l, float d,
                                           float scale) {
    p = valid ? expf(s * scale - l) : 0.0f;
    ds = valid ? scale * p * (dp - d) : 0.0f;
}

template <class P, class X>
__device__ __forceinline__ void attention_bwd_dkdv_tc(float* smem, float* __restrict__ dk, float* __restrict__ dv,
                                                      const float* __restrict__ dout, const X* __restrict__ q,
                                                      const X* __restrict__ k, const X* __restrict__ v,
                                                      const float* __restrict__ lse, const float* __restrict__ dvec,
                                                      int c, int n, float scale, int T) {
    typedef typename P::S S;
    const int cp = att_tc_pad16(c), lt = T + 8, lf = T + 4, es = (int)sizeof(S);
    unsigned char* at = reinterpret_cast<unsigned char*>(smem);
    S* Ks = reinterpret_cast<S*>(att_tc_take(at, (long long)cp * lt * es));  // [cp][T + 8], this key tile
    S* Vs = reinterpret_cast<S*>(att_tc_take(at, (long long)cp * lt * es));
    S* Qs = reinterpret_cast<S*>(att_tc_take(at, (long long)cp * lt * es));  // the query tile
    S* dOs = reinterpret_cast<S*>(att_tc_take(at, (long long)cp * lt * es));
    float* St = reinterpret_cast<float*>(att_tc_take(at, (long long)T * lf * 4));   // [j][i] raw scores
    float* dPt = reinterpret_cast<float*>(att_tc_take(at, (long long)T * lf * 4));  // [j][i] dp
    S* Pr = reinterpret_cast<S*>(att_tc_take(at, (long long)T * lt * es));          // [j][i] p~
    S* dSr = reinterpret_cast<S*>(att_tc_take(at, (long long)T * lt * es));         // [j][i] ds~
    float* dKs = reinterpret_cast<float*>(att_tc_take(at, (long long)cp * lf * 4)); // [cp][T + 4]
    float* dVs = reinterpret_cast<float*>(att_tc_take(at, (long long)cp * lf * 4));
    float* lse_s = reinterpret_cast<float*>(att_tc_take(at, (long long)T * 4));
    float* D_s = reinterpret_cast<float*>(att_tc_take(at, (long long)T * 4));

    const int t = threadIdx.x;
    const int j0 = blockIdx.x * T;
    const long long base = (long long)blockIdx.y * c * n, rbase = (long long)blockIdx.y * n;

    att_tc_stage<P>(Ks, lt, k + base, c, cp, n, T, j0);
    att_tc_stage<P>(Vs, lt, v + base, c, cp, n, T, j0);
    for (int e = t; e < cp * lf; e += blockDim.x) {
        dKs[e] = 0.0f;
        dVs[e] = 0.0f;
    }
    for (int i0 = 0; i0 < n; i0 += T) {
        att_tc_stage<P>(Qs, lt, q + base, c, cp, n, T, i0);
        att_tc_stage<P>(dOs, lt, dout + base, c, cp, n, T, i0);
        for (int i = t; i < T; i += blockDim.x) {
            lse_s[i] = (i0 + i < n) ? lse[rbase + i0 + i] : 0.0f;
            D_s[i] = (i0 + i < n) ? dvec[rbase + i0 + i] : 0.0f;
        }
        __syncthreads();
        att_tc_scores<P>(St, lf, Ks, lt, T, Qs, lt, T, cp);   // S^T[j][i] = sum_c k[c,j] q[c,i]
        att_tc_scores<P>(dPt, lf, Vs, lt, T, dOs, lt, T, cp); // dP^T[j][i] = sum_c v[c,j] dout[c,i]
        __syncthreads();
        for (int e = t; e < T * (T / 2); e += blockDim.x) {  // queries i, i + 1
            const int j = e / (T / 2), i = (e - j * (T / 2)) * 2;
            const bool col = j0 + j < n;
            float p0, ds0, p1, ds1;
            att_tc_pds(p0, ds0, col && i0 + i < n, St[j * lf + i], dPt[j * lf + i], lse_s[i], D_s[i], scale);
            att_tc_pds(p1, ds1, col && i0 + i + 1 < n, St[j * lf + i + 1], dPt[j * lf + i + 1], lse_s[i + 1],
                       D_s[i + 1], scale);
            P::store2(Pr + j * lt + i, p0, p1);
            P::store2(dSr + j * lt + i, ds0, ds1);
        }
        __syncthreads();
        att_tc_accumulate<P>(dVs, lf, Pr, lt, T, T, dOs, lt, cp);  // dv[c,j] += sum_i p~_ij dout~[c,i]
        att_tc_accumulate<P>(dKs, lf, dSr, lt, T, T, Qs, lt, cp);  // dk[c,j] += sum_i ds~_ij q~[c,i]
        __syncthreads();
    }
    att_tc_write(dk + base, dKs, lf, c, n, T, j0);
    att_tc_write(dv + base, dVs, lf, c, n, T, j0);
}

template <class P, class X>
__device__ __forceinline__ void attention_bwd_dq_tc(float* smem, float* __restrict__ dq, const float* __restrict__ dout,
                                                    const X* __restrict__ q, const X* __restrict__ k,
                                                    const X* __restrict__ v, const float* __restrict__ lse,
                                                    const float* __restrict__ dvec, int c, int n, float scale, int T) {
    typedef typename P::S S;
    const int cp = att_tc_pad16(c), lt = T + 8, lf = T + 4, es = (int)sizeof(S);
    unsigned char* at = reinterpret_cast<unsigned char*>(smem);
    S* Qs = reinterpret_cast<S*>(att_tc_take(at, (long long)cp * lt * es));  // [cp][T + 8], this query tile
    S* dOs = reinterpret_cast<S*>(att_tc_take(at, (long long)cp * lt * es));
    S* Ks = reinterpret_cast<S*>(att_tc_take(at, (long long)cp * lt * es));  // the key tile
    S* Vs = reinterpret_cast<S*>(att_tc_take(at, (long long)cp * lt * es));
    float* Sf = reinterpret_cast<float*>(att_tc_take(at, (long long)T * lf * 4));   // [i][j] raw scores
    float* dPf = reinterpret_cast<float*>(att_tc_take(at, (long long)T * lf * 4));  // [i][j] dp
    S* dSr = reinterpret_cast<S*>(att_tc_take(at, (long long)T * lt * es));         // [i][j] ds~
    float* dQs = reinterpret_cast<float*>(att_tc_take(at, (long long)cp * lf * 4)); // [cp][T + 4]
    float* lse_s = reinterpret_cast<float*>(att_tc_take(at, (long long)T * 4));
    float* D_s = reinterpret_cast<float*>(att_tc_take(at, (long long)T * 4));

    const int t = threadIdx.x;
    const int i0 = blockIdx.x * T;
    const long long base = (long long)blockIdx.y * c * n, rbase = (long long)blockIdx.y * n;

    att_tc_stage<P>(Qs, lt, q + base, c, cp, n, T, i0);
    att_tc_stage<P>(dOs, lt, dout + base, c, cp, n, T, i0);
    for (int e = t; e < cp * lf; e += blockDim.x) dQs[e] = 0.0f;
    for (int i = t; i < T; i += blockDim.x) {
        lse_s[i] = (i0 + i < n) ? lse[rbase + i0 + i] : 0.0f;
        D_s[i] = (i0 + i < n) ? dvec[rbase + i0 + i] : 0.0f;
    }
    for (int j0 = 0; j0 < n; j0 += T) {
        att_tc_stage<P>(Ks, lt, k + base, c, cp, n, T, j0);
        att_tc_stage<P>(Vs, lt, v + base, c, cp, n, T, j0);
        __syncthreads();
        att_tc_scores<P>(Sf, lf, Qs, lt, T, Ks, lt, T, cp);   // S[i][j]
        att_tc_scores<P>(dPf, lf, dOs, lt, T, Vs, lt, T, cp); // dP[i][j]
        __syncthreads();
        for (int e = t; e < T * (T / 2); e += blockDim.x) {  // keys j, j + 1
            const int i = e / (T / 2), j = (e - i * (T / 2)) * 2;
            const bool row = i0 + i < n;
            float p0, ds0, p1, ds1;
            att_tc_pds(p0, ds0, row && j0 + j < n, Sf[i * lf + j], dPf[i * lf + j], lse_s[i], D_s[i], scale);
            att_tc_pds(p1, ds1, row && j0 + j + 1 < n, Sf[i * lf + j + 1], dPf[i * lf + j + 1], lse_s[i], D_s[i],
                       scale);
            P::store2(dSr + i * lt + j, ds0, ds1);
        }
        __syncthreads();
        att_tc_accumulate<P>(dQs, lf, dSr, lt, T, T, Ks, lt, cp);  // dq[c,i] += sum_j ds~_ij k~[c,j]
        __syncthreads();
    }
    att_tc_write(dq + base, dQs, lf, c, n, T, i0);
}

extern "C" __global__ void __launch_bounds__(128) attention_fwd_tc_bf16_f32(float* __restrict__ out, float* __restrict__ lse, const float* __restrict__ q,
                              const float* __restrict__ k, const float* __restrict__ v, int c, int n, float scale,
                              int bq) {
    extern __shared__ float smem[];
    attention_fwd_tc<TcBf16, float>(smem, out, lse, q, k, v, c, n, scale, bq);
}

extern "C" __global__ void __launch_bounds__(128) attention_fwd_tc_tf32_f32(float* __restrict__ out, float* __restrict__ lse, const float* __restrict__ q,
                              const float* __restrict__ k, const float* __restrict__ v, int c, int n, float scale,
                              int bq) {
    extern __shared__ float smem[];
    attention_fwd_tc<TcTf32, float>(smem, out, lse, q, k, v, c, n, scale, bq);
}

extern "C" __global__ void __launch_bounds__(128) attention_bwd_dkdv_tc_bf16_f32(float* __restrict__ dk, float* __restrict__ dv, const float* __restrict__ dout,
                                   const float* __restrict__ q, const float* __restrict__ k,
                                   const float* __restrict__ v, const float* __restrict__ lse,
                                   const float* __restrict__ dvec, int c, int n, float scale, int t) {
    extern __shared__ float smem[];
    attention_bwd_dkdv_tc<TcBf16, float>(smem, dk, dv, dout, q, k, v, lse, dvec, c, n, scale, t);
}

extern "C" __global__ void __launch_bounds__(128) attention_bwd_dkdv_tc_tf32_f32(float* __restrict__ dk, float* __restrict__ dv, const float* __restrict__ dout,
                                   const float* __restrict__ q, const float* __restrict__ k,
                                   const float* __restrict__ v, const float* __restrict__ lse,
                                   const float* __restrict__ dvec, int c, int n, float scale, int t) {
    extern __shared__ float smem[];
    attention_bwd_dkdv_tc<TcTf32, float>(smem, dk, dv, dout, q, k, v, lse, dvec, c, n, scale, t);
}

extern "C" __global__ void __launch_bounds__(128) attention_bwd_dq_tc_bf16_f32(float* __restrict__ dq, const float* __restrict__ dout, const float* __restrict__ q,
                                 const float* __restrict__ k, const float* __restrict__ v,
                                 const float* __restrict__ lse, const float* __restrict__ dvec, int c, int n,
                                 float scale, int t) {
    extern __shared__ float smem[];
    attention_bwd_dq_tc<TcBf16, float>(smem, dq, dout, q, k, v, lse, dvec, c, n, scale, t);
}

extern "C" __global__ void __launch_bounds__(128) attention_bwd_dq_tc_tf32_f32(float* __restrict__ dq, const float* __restrict__ dout, const float* __restrict__ q,
                                 const float* __restrict__ k, const float* __restrict__ v,
                                 const float* __restrict__ lse, const float* __restrict__ dvec, int c, int n,
                                 float scale, int t) {
    extern __shared__ float smem[];
    attention_bwd_dq_tc<TcTf32, float>(smem, dq, dout, q, k, v, lse, dvec, c, n, scale, t);
}

// q, k, v stored in bf16 (a bf16 training cache keeps them so): the same
// bits as the _bf16_f32 kernels on their f32 originals.
extern "C" __global__ void __launch_bounds__(128) attention_fwd_tc_bf16in_f32(float* __restrict__ out, float* __restrict__ lse, const __nv_bfloat16* __restrict__ q,
                              const __nv_bfloat16* __restrict__ k, const __nv_bfloat16* __restrict__ v, int c, int n, float scale,
                              int bq) {
    extern __shared__ float smem[];
    attention_fwd_tc<TcBf16, __nv_bfloat16>(smem, out, lse, q, k, v, c, n, scale, bq);
}

extern "C" __global__ void __launch_bounds__(128) attention_bwd_dkdv_tc_bf16in_f32(float* __restrict__ dk, float* __restrict__ dv, const float* __restrict__ dout,
                                   const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                                   const __nv_bfloat16* __restrict__ v, const float* __restrict__ lse,
                                   const float* __restrict__ dvec, int c, int n, float scale, int t) {
    extern __shared__ float smem[];
    attention_bwd_dkdv_tc<TcBf16, __nv_bfloat16>(smem, dk, dv, dout, q, k, v, lse, dvec, c, n, scale, t);
}

extern "C" __global__ void __launch_bounds__(128) attention_bwd_dq_tc_bf16in_f32(float* __restrict__ dq, const float* __restrict__ dout, const __nv_bfloat16* __restrict__ q,
                                 const __nv_bfloat16* __restrict__ k, const __nv_bfloat16* __restrict__ v,
                                 const float* __restrict__ lse, const float* __restrict__ dvec, int c, int n,
                                 float scale, int t) {
    extern __shared__ float smem[];
    attention_bwd_dq_tc<TcBf16, __nv_bfloat16>(smem, dq, dout, q, k, v, lse, dvec, c, n, scale, t);
}
