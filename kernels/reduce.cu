// reduce.cu — the second pass of every split reduction: out[i] = the sum of
// ws[z * count + i] over the splits z = 0, 1, ..., splits-1, in that order.
//   sum_splits   used by the conv weight gradient's split-K, the conv and
//                linear bias gradients and group norm's dgamma/dbeta, whose
//                first passes write one partial per split: fixed-order
//                partials instead of float atomics, so the bits depend only
//                on the shape (the host picks splits from it, never from the
//                device).
// Launch: grid-stride over count, block 256, grid ceil(count / 256) capped
// at 8192.
// CPU twin: none of its own; each family's CPU twin sums in one pass (the
// split changes the rounding, within the families' tolerances).
// Versions: v1 plain loop (count is a few thousand to a few hundred
// thousand floats; memory-bound, reads each partial once).
#include "common.cuh"

extern "C" __global__ void sum_splits_f32(float* __restrict__ out, const float* __restrict__ ws, int splits,
                                          unsigned long long count) {
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < count;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int z = 0; z < splits; ++z) s += ws[(unsigned long long)z * count + i];
        out[i] = s;
    }
}
