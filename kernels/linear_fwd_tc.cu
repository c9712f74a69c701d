// linear_fwd_tc.cu — fully connected layer forward on tensor cores (bf16 or
// tf32 inputs, f32 accumulation): y [N, Out] = x~ w~^T (+ b) for
// x [N, In], w [Out, In], b [Out], as tc_gemm.cuh's strided GEMM:
//   M = N, N = Out, K = In; A(m, k) = x[m * In + k], B(k, o) = w[o * In + k]
//   (the bias is added in f32 after the sum, unrounded).
// Launch: grid (ceil(Out / 64), ceil(N / 64)), block 128, static shared
// memory (crates/tensor/src/gpu/launch/linear_tc.rs).
// CPU twin: crates/tensor/src/cpu/reduced.rs linear_forward; fp32 twin:
// linear.cu / cpu/linear.rs.
#include "tc_gemm.cuh"

extern "C" __global__ void __launch_bounds__(128) linear_fwd_tc_bf16_f32(float* __restrict__ y, const float* __restrict__ x,
                                                                      const float* __restrict__ w, const float* __restrict__ b,
                                                                      int has_bias, int n, int d_in, int d_out) {
    tc_gemm_strided<TcBf16>(y, x, w, has_bias ? b : (const float*)0, n, d_out, d_in, d_in, 1, 1, d_in);
}

extern "C" __global__ void __launch_bounds__(128) linear_fwd_tc_tf32_f32(float* __restrict__ y, const float* __restrict__ x,
                                                                      const float* __restrict__ w, const float* __restrict__ b,
                                                                      int has_bias, int n, int d_in, int d_out) {
    tc_gemm_strided<TcTf32>(y, x, w, has_bias ? b : (const float*)0, n, d_out, d_in, d_in, 1, 1, d_in);
}
