// cast.cu — element type conversions of GPU tensors between f32 and bf16:
//   cast_round_bf16  y[i] = bf16(x[i]), round to nearest even: the tensor
//                    cores' input rounding (tc_gemm.cuh's TcBf16), so an
//                    activation stored in bf16 feeds them the same values as
//                    the f32 one;
//   cast_widen_f32   y[i] = float(x[i]), exact.
// Launch: 1-D grid-stride over element pairs i = 2p, 2p + 1 (a 4-byte word
// of bf16 has one writer), block 256, grid min(ceil(n / 512), 8192)
// (crates/tensor/src/gpu/launch/cast.rs).
// CPU twin: half::bf16::from_f32 / to_f32 (the tests in
// crates/tensor/tests/cast.rs compare every element's bits).
// Versions: v1 only (memory bound: 6 bytes moved an element).
#include <cuda_bf16.h>

extern "C" __global__ void cast_round_bf16(__nv_bfloat16* __restrict__ y, const float* __restrict__ x,
                                           unsigned long long n) {
    const unsigned long long pairs = (n + 1) / 2;
    for (unsigned long long p = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; p < pairs;
         p += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long i = 2 * p;
        if (i + 1 < n)
            *reinterpret_cast<__nv_bfloat162*>(y + i) = __floats2bfloat162_rn(x[i], x[i + 1]);
        else
            y[i] = __float2bfloat16_rn(x[i]);
    }
}

extern "C" __global__ void cast_widen_f32(float* __restrict__ y, const __nv_bfloat16* __restrict__ x,
                                          unsigned long long n) {
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x)
        y[i] = __bfloat162float(x[i]);
}
