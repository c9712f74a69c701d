// emu_fp_convert.h — bit-exact conversions between float/double and the
// 16-bit float formats, as CUDA's cvt instructions do them: round to nearest
// even by default (rz/rd/ru where CUDA has them), subnormals kept, overflow
// to infinity, and every NaN becoming the canonical NaN 0x7fff (what CUDA's
// __float2half / __float2bfloat16 return). Part of the emulator's shim.
#pragma once
#include <stdint.h>
#include <string.h>
#include <math.h>

enum { EMU_RN = 0, EMU_RZ = 1, EMU_RD = 2, EMU_RU = 3 };

static inline uint32_t emu_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float emu_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// float -> IEEE binary16 bits.
static inline unsigned short emu_f32_to_f16_bits(float f, int mode) {
    const uint32_t x = emu_f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t u = x & 0x7fffffffu;
    if (u > 0x7f800000u) return 0x7fffu;
    if (u == 0x7f800000u) return (unsigned short)(sign | 0x7c00u);
    uint32_t h, rem, halfway;
    if (u >= 0x47800000u) {  // |f| >= 65536: beyond the largest finite half
        h = 0x7bffu;
        rem = 1;
        halfway = 0;  // "more than half an ulp": rounds up to inf under RN
    } else if (u >= 0x38800000u) {  // normal half range, |f| >= 2^-14
        const uint32_t e = (u >> 23) - 112u;
        h = (e << 10) | ((u >> 13) & 0x3ffu);
        rem = u & 0x1fffu;
        halfway = 0x1000u;
    } else if (u < 0x33000000u) {  // |f| < 2^-25: below half the smallest subnormal
        h = 0;
        rem = u != 0;
        halfway = 2;  // never reached: rounds to zero under RN
    } else {  // subnormal half
        const uint32_t e = u >> 23;
        const uint32_t m = (u & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126u - e;  // 14..24
        h = m >> shift;
        rem = m & ((1u << shift) - 1u);
        halfway = 1u << (shift - 1u);
    }
    bool up;
    switch (mode) {
        case EMU_RZ: up = false; break;
        case EMU_RD: up = sign && rem != 0; break;
        case EMU_RU: up = !sign && rem != 0; break;
        default: up = rem > halfway || (rem == halfway && (h & 1u)); break;
    }
    if (up) h += 1;  // a carry into the exponent is the correct result (up to inf)
    return (unsigned short)(sign | h);
}

// IEEE binary16 bits -> float (exact; NaN -> canonical NaN).
static inline float emu_f16_bits_to_f32(unsigned short hb) {
    const uint32_t sign = (uint32_t)(hb & 0x8000u) << 16;
    uint32_t e = (hb >> 10) & 0x1fu;
    uint32_t m = hb & 0x3ffu;
    if (e == 0x1fu) return m ? emu_bits_f32(0x7fffffffu) : emu_bits_f32(sign | 0x7f800000u);
    if (e == 0) {
        if (m == 0) return emu_bits_f32(sign);
        e = 113;
        while (!(m & 0x400u)) {
            m <<= 1;
            e -= 1;
        }
        m &= 0x3ffu;
        return emu_bits_f32(sign | (e << 23) | (m << 13));
    }
    return emu_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

// float -> bfloat16 bits.
static inline unsigned short emu_f32_to_bf16_bits(float f, int mode) {
    const uint32_t x = emu_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
    const uint32_t sign = x & 0x80000000u;
    const uint32_t rem = x & 0xffffu;
    uint32_t h = x >> 16;
    if ((x & 0x7fffffffu) == 0x7f800000u) return (unsigned short)h;
    bool up;
    switch (mode) {
        case EMU_RZ: up = false; break;
        case EMU_RD: up = sign && rem != 0; break;
        case EMU_RU: up = !sign && rem != 0; break;
        default: up = rem > 0x8000u || (rem == 0x8000u && (h & 1u)); break;
    }
    if (up) h += 1;
    return (unsigned short)h;
}

static inline float emu_bf16_bits_to_f32(unsigned short b) { return emu_bits_f32((uint32_t)b << 16); }

// double -> float rounded toward zero with a sticky last bit ("round to
// odd"): rounding that to a 16-bit format once more gives the correctly
// rounded double -> 16-bit result (float has > 2 spare bits).
static inline float emu_f64_to_f32_odd(double d) {
    if (d != d) return emu_bits_f32(0x7fffffffu);
    float f = (float)d;
    if (isinf(f) && !isinf(d)) f = f > 0 ? 3.40282347e38f : -3.40282347e38f;
    else if (fabs((double)f) > fabs(d)) f = nextafterf(f, 0.0f);
    if ((double)f != d) f = emu_bits_f32(emu_f32_bits(f) | 1u);
    return f;
}

// Exact a*b+c rounded to odd in double, for 16-bit fma (a, b, c 16-bit values).
static inline double emu_fma_odd(double a, double b, double c) {
    const double p = a * b;  // exact: 11 + 11 (or 8 + 8) significant bits
    const double s = p + c;
    const double bb = s - p;
    const double err = (p - (s - bb)) + (c - bb);  // TwoSum: s + err == p + c exactly
    if (err == 0.0 || isinf(s)) return s;
    double r = s;
    if ((err > 0) != (s > 0)) r = nextafter(s, 0.0);  // round toward zero
    uint64_t bits;
    memcpy(&bits, &r, 8);
    bits |= 1u;
    memcpy(&r, &bits, 8);
    return r;
}
