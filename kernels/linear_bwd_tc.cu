// linear_bwd_tc.cu — fully connected layer backward on tensor cores (bf16 or
// tf32 inputs, f32 accumulation), for x [N, In], w [Out, In], dy [N, Out]:
//   linear_bwd_data_tc    dx [N, In]   = dy~ w~     M = N,   N = In, K = Out
//   linear_bwd_weight_tc  dw [Out, In] = dy~^T x~   M = Out, N = In, K = N
// as tc_gemm.cuh's strided GEMM (the bias gradient, a plain column sum, is
// linear.cu's linear_bwd_bias_f32).
// Launch: grid (ceil(In / 64), ceil(M / 64)), block 128, static shared
// memory (crates/tensor/src/gpu/launch/linear_tc.rs).
// CPU twin: crates/tensor/src/cpu/reduced.rs linear_backward_data / _weight.
#include "tc_gemm.cuh"

extern "C" __global__ void __launch_bounds__(128) linear_bwd_data_tc_bf16_f32(float* __restrict__ dx, const float* __restrict__ dy,
                                                                           const float* __restrict__ w, int n, int d_in, int d_out) {
    tc_gemm_strided<TcBf16>(dx, dy, w, (const float*)0, n, d_in, d_out, d_out, 1, d_in, 1);
}

extern "C" __global__ void __launch_bounds__(128) linear_bwd_data_tc_tf32_f32(float* __restrict__ dx, const float* __restrict__ dy,
                                                                           const float* __restrict__ w, int n, int d_in, int d_out) {
    tc_gemm_strided<TcTf32>(dx, dy, w, (const float*)0, n, d_in, d_out, d_out, 1, d_in, 1);
}

extern "C" __global__ void __launch_bounds__(128) linear_bwd_weight_tc_bf16_f32(float* __restrict__ dw, const float* __restrict__ dy,
                                                                             const float* __restrict__ x, int n, int d_in, int d_out) {
    tc_gemm_strided<TcBf16>(dw, dy, x, (const float*)0, d_out, d_in, n, 1, d_out, d_in, 1);
}

extern "C" __global__ void __launch_bounds__(128) linear_bwd_weight_tc_tf32_f32(float* __restrict__ dw, const float* __restrict__ dy,
                                                                             const float* __restrict__ x, int n, int d_in, int d_out) {
    tc_gemm_strided<TcTf32>(dw, dy, x, (const float*)0, d_out, d_in, n, 1, d_out, d_in, 1);
}
