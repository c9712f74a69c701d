// philox.cuh — Philox4x32-10 and Box-Muller, the CUDA twin of
// crates/tensor/src/philox.rs. The integer part is bit-identical to the Rust
// code; the normals use f32 logf/sqrtf/cosf/sinf (within an ulp or two of
// Rust's, not bit-identical).
//
// Layout: element i of (seed, step, stream) uses block b = i / 4 and lane
// i % 4 of philox(counter = [b lo, b hi, step, stream],
// key = [seed lo, seed hi]); normals pair lanes (0, 1) and (2, 3).
// Uniforms are ((x >> 8) + 0.5) * 2^-24, in the open interval (0, 1).
// Dropout keeps element i iff (bits >> 8) >= threshold, threshold computed
// on the host as round(p * 2^24).
#pragma once

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

struct philox_u32x4 {
    unsigned int v[4];
};

// The Philox4x32 bijection with 10 rounds.
__device__ __forceinline__ philox_u32x4 philox4x32_10(unsigned int c0, unsigned int c1, unsigned int c2,
                                                      unsigned int c3, unsigned int k0, unsigned int k1) {
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        unsigned int hi0 = __umulhi(PHILOX_M0, c0), lo0 = PHILOX_M0 * c0;
        unsigned int hi1 = __umulhi(PHILOX_M1, c2), lo1 = PHILOX_M1 * c2;
        unsigned int n0 = hi1 ^ c1 ^ k0;
        unsigned int n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    philox_u32x4 r;
    r.v[0] = c0;
    r.v[1] = c1;
    r.v[2] = c2;
    r.v[3] = c3;
    return r;
}

// The four raw words of block `block` for (seed, step, stream).
__device__ __forceinline__ philox_u32x4 philox_block_bits(unsigned long long seed, unsigned int step,
                                                          unsigned int stream, unsigned long long block) {
    return philox4x32_10((unsigned int)block, (unsigned int)(block >> 32), step, stream, (unsigned int)seed,
                         (unsigned int)(seed >> 32));
}

// 24 bits to a uniform in (0, 1); exact in f32.
__device__ __forceinline__ float philox_uniform_open(unsigned int x) {
    return ((float)(x >> 8) + 0.5f) * (1.0f / 16777216.0f);
}

// Box-Muller on two words: two independent standard normals.
__device__ __forceinline__ void philox_box_muller(unsigned int a, unsigned int b, float& z0, float& z1) {
    float u1 = philox_uniform_open(a);
    float u2 = philox_uniform_open(b);
    float r = sqrtf(-2.0f * logf(u1));
    float theta = 6.28318530717958647692f * u2;  // TAU, rounded to f32 as in Rust
    z0 = r * cosf(theta);
    z1 = r * sinf(theta);
}

// Four normals of one block.
struct philox_f32x4 {
    float v[4];
};

__device__ __forceinline__ philox_f32x4 philox_normal4(unsigned long long seed, unsigned int step,
                                                       unsigned int stream, unsigned long long block) {
    philox_u32x4 x = philox_block_bits(seed, step, stream, block);
    philox_f32x4 z;
    philox_box_muller(x.v[0], x.v[1], z.v[0], z.v[1]);
    philox_box_muller(x.v[2], x.v[3], z.v[2], z.v[3]);
    return z;
}

__device__ __forceinline__ bool philox_keep(unsigned int word, unsigned int threshold) {
    return (word >> 8) >= threshold;
}
