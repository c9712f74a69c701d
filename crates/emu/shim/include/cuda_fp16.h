// cuda_fp16.h — the CUDA emulator's stand-in for CUDA's header: __half and
// __half2 with bit-exact conversions (see emu_fp_convert.h) and arithmetic
// computed in float and rounded once (exact for + - * / and sqrt, since
// float has more than 2 * 11 + 2 significant bits).
#pragma once
#include "emu_fp_convert.h"

struct __half_raw {
    unsigned short x;
};
struct __half2_raw {
    unsigned short x, y;
};

struct __attribute__((aligned(2))) __half {
    unsigned short __x;
    __half() = default;
    constexpr __half(const __half_raw& r) : __x(r.x) {}
    __half(float f) : __x(emu_f32_to_f16_bits(f, EMU_RN)) {}
    __half(double d) : __x(emu_f32_to_f16_bits(emu_f64_to_f32_odd(d), EMU_RN)) {}
    __half(int i) : __x(emu_f32_to_f16_bits((float)i, EMU_RN)) {}
    __half(unsigned int i) : __x(emu_f32_to_f16_bits((float)i, EMU_RN)) {}
    __half(short i) : __x(emu_f32_to_f16_bits((float)i, EMU_RN)) {}
    __half(unsigned short i) : __x(emu_f32_to_f16_bits((float)i, EMU_RN)) {}
    __half(long long i) : __x(emu_f32_to_f16_bits(emu_f64_to_f32_odd((double)i), EMU_RN)) {}
    __half(unsigned long long i) : __x(emu_f32_to_f16_bits(emu_f64_to_f32_odd((double)i), EMU_RN)) {}
    __half& operator=(const __half_raw& r) {
        __x = r.x;
        return *this;
    }
    operator __half_raw() const { return __half_raw{__x}; }
    operator float() const { return emu_f16_bits_to_f32(__x); }
};
typedef __half half;

struct __attribute__((aligned(4))) __half2 {
    __half x, y;
    __half2() = default;
    constexpr __half2(const __half& a, const __half& b) : x(a), y(b) {}
    __half2(const __half2_raw& r) : x(__half_raw{r.x}), y(__half_raw{r.y}) {}
    operator __half2_raw() const { return __half2_raw{x.__x, y.__x}; }
};
typedef __half2 half2;

static inline __half emu_half_from_bits(unsigned short b) { return __half(__half_raw{b}); }

// conversions
static inline __half __float2half(float f) { return emu_half_from_bits(emu_f32_to_f16_bits(f, EMU_RN)); }
static inline __half __float2half_rn(float f) { return emu_half_from_bits(emu_f32_to_f16_bits(f, EMU_RN)); }
static inline __half __float2half_rz(float f) { return emu_half_from_bits(emu_f32_to_f16_bits(f, EMU_RZ)); }
static inline __half __float2half_rd(float f) { return emu_half_from_bits(emu_f32_to_f16_bits(f, EMU_RD)); }
static inline __half __float2half_ru(float f) { return emu_half_from_bits(emu_f32_to_f16_bits(f, EMU_RU)); }
static inline __half __double2half(double d) {
    return emu_half_from_bits(emu_f32_to_f16_bits(emu_f64_to_f32_odd(d), EMU_RN));
}
static inline float __half2float(__half h) { return emu_f16_bits_to_f32(h.__x); }
static inline float __low2float(__half2 h) { return __half2float(h.x); }
static inline float __high2float(__half2 h) { return __half2float(h.y); }
static inline __half __low2half(__half2 h) { return h.x; }
static inline __half __high2half(__half2 h) { return h.y; }
static inline __half2 __halves2half2(__half a, __half b) { return __half2(a, b); }
static inline __half2 __half2half2(__half a) { return __half2(a, a); }
static inline __half2 __float2half2_rn(float f) { return __half2(__float2half_rn(f), __float2half_rn(f)); }
static inline __half2 __floats2half2_rn(float a, float b) { return __half2(__float2half_rn(a), __float2half_rn(b)); }
static inline __half2 __lows2half2(__half2 a, __half2 b) { return __half2(a.x, b.x); }
static inline __half2 __highs2half2(__half2 a, __half2 b) { return __half2(a.y, b.y); }
static inline __half2 __lowhigh2highlow(__half2 a) { return __half2(a.y, a.x); }
static inline float2 __half22float2(__half2 h) { return make_float2(__half2float(h.x), __half2float(h.y)); }
static inline unsigned short __half_as_ushort(__half h) { return h.__x; }
static inline short __half_as_short(__half h) { return (short)h.__x; }
static inline __half __ushort_as_half(unsigned short u) { return emu_half_from_bits(u); }
static inline __half __short_as_half(short s) { return emu_half_from_bits((unsigned short)s); }
static inline __half __int2half_rn(int i) { return __float2half_rn((float)i); }
static inline __half __uint2half_rn(unsigned i) { return __float2half_rn((float)i); }
static inline __half __short2half_rn(short i) { return __float2half_rn((float)i); }
static inline __half __ushort2half_rn(unsigned short i) { return __float2half_rn((float)i); }
static inline int __half2int_rn(__half h) { return __float2int_rn(__half2float(h)); }
static inline int __half2int_rz(__half h) { return __float2int_rz(__half2float(h)); }
static inline int __half2int_rd(__half h) { return __float2int_rd(__half2float(h)); }
static inline int __half2int_ru(__half h) { return __float2int_ru(__half2float(h)); }
static inline unsigned __half2uint_rn(__half h) { return __float2uint_rn(__half2float(h)); }
static inline unsigned __half2uint_rz(__half h) { return __float2uint_rz(__half2float(h)); }

// arithmetic: computed in float, rounded once to nearest even
static inline __half emu_h(float f) { return __float2half_rn(f); }
static inline __half __hadd(__half a, __half b) { return emu_h((float)a + (float)b); }
static inline __half __hsub(__half a, __half b) { return emu_h((float)a - (float)b); }
static inline __half __hmul(__half a, __half b) { return emu_h((float)a * (float)b); }
static inline __half __hdiv(__half a, __half b) { return emu_h((float)a / (float)b); }
static inline __half __hneg(__half a) { return emu_half_from_bits(a.__x ^ 0x8000u); }
static inline __half __habs(__half a) { return emu_half_from_bits(a.__x & 0x7fffu); }
static inline __half __hfma(__half a, __half b, __half c) {
    return __double2half(emu_fma_odd((float)a, (float)b, (float)c));
}
static inline __half __hadd_sat(__half a, __half b) { return emu_h(__saturatef((float)a + (float)b)); }
static inline __half __hmul_sat(__half a, __half b) { return emu_h(__saturatef((float)a * (float)b)); }
static inline __half __hmax(__half a, __half b) { return emu_h(fmaxf((float)a, (float)b)); }
static inline __half __hmin(__half a, __half b) { return emu_h(fminf((float)a, (float)b)); }
static inline bool __heq(__half a, __half b) { return (float)a == (float)b; }
static inline bool __hne(__half a, __half b) { return (float)a != (float)b && a == a && b == b; }
static inline bool __hlt(__half a, __half b) { return (float)a < (float)b; }
static inline bool __hle(__half a, __half b) { return (float)a <= (float)b; }
static inline bool __hgt(__half a, __half b) { return (float)a > (float)b; }
static inline bool __hge(__half a, __half b) { return (float)a >= (float)b; }
static inline bool __hisnan(__half a) { return (a.__x & 0x7fffu) > 0x7c00u; }
static inline int __hisinf(__half a) { return (a.__x & 0x7fffu) == 0x7c00u ? ((a.__x & 0x8000u) ? -1 : 1) : 0; }
static inline __half hsqrt(__half a) { return emu_h(sqrtf((float)a)); }
static inline __half hrsqrt(__half a) { return emu_h(1.0f / sqrtf((float)a)); }
static inline __half hrcp(__half a) { return emu_h(1.0f / (float)a); }
static inline __half hexp(__half a) { return emu_h(expf((float)a)); }
static inline __half hexp2(__half a) { return emu_h(exp2f((float)a)); }
static inline __half hlog(__half a) { return emu_h(logf((float)a)); }
static inline __half hlog2(__half a) { return emu_h(log2f((float)a)); }
static inline __half hsin(__half a) { return emu_h(sinf((float)a)); }
static inline __half hcos(__half a) { return emu_h(cosf((float)a)); }
static inline __half htanh(__half a) { return emu_h(tanhf((float)a)); }
static inline __half hfloor(__half a) { return emu_h(floorf((float)a)); }
static inline __half hceil(__half a) { return emu_h(ceilf((float)a)); }
static inline __half htrunc(__half a) { return emu_h(truncf((float)a)); }
static inline __half hrint(__half a) { return emu_h(rintf((float)a)); }

static inline __half operator+(const __half& a, const __half& b) { return __hadd(a, b); }
static inline __half operator-(const __half& a, const __half& b) { return __hsub(a, b); }
static inline __half operator*(const __half& a, const __half& b) { return __hmul(a, b); }
static inline __half operator/(const __half& a, const __half& b) { return __hdiv(a, b); }
static inline __half operator-(const __half& a) { return __hneg(a); }
static inline __half operator+(const __half& a) { return a; }
static inline __half& operator+=(__half& a, const __half& b) { return a = a + b; }
static inline __half& operator-=(__half& a, const __half& b) { return a = a - b; }
static inline __half& operator*=(__half& a, const __half& b) { return a = a * b; }
static inline __half& operator/=(__half& a, const __half& b) { return a = a / b; }
static inline bool operator==(const __half& a, const __half& b) { return __heq(a, b); }
static inline bool operator!=(const __half& a, const __half& b) { return __hne(a, b); }
static inline bool operator<(const __half& a, const __half& b) { return __hlt(a, b); }
static inline bool operator<=(const __half& a, const __half& b) { return __hle(a, b); }
static inline bool operator>(const __half& a, const __half& b) { return __hgt(a, b); }
static inline bool operator>=(const __half& a, const __half& b) { return __hge(a, b); }

static inline __half2 __hadd2(__half2 a, __half2 b) { return __half2(a.x + b.x, a.y + b.y); }
static inline __half2 __hsub2(__half2 a, __half2 b) { return __half2(a.x - b.x, a.y - b.y); }
static inline __half2 __hmul2(__half2 a, __half2 b) { return __half2(a.x * b.x, a.y * b.y); }
static inline __half2 __h2div(__half2 a, __half2 b) { return __half2(a.x / b.x, a.y / b.y); }
static inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) { return __half2(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)); }
static inline __half2 __hneg2(__half2 a) { return __half2(-a.x, -a.y); }
static inline __half2 __habs2(__half2 a) { return __half2(__habs(a.x), __habs(a.y)); }
static inline __half2 __hmax2(__half2 a, __half2 b) { return __half2(__hmax(a.x, b.x), __hmax(a.y, b.y)); }
static inline __half2 __hmin2(__half2 a, __half2 b) { return __half2(__hmin(a.x, b.x), __hmin(a.y, b.y)); }
static inline __half2 operator+(const __half2& a, const __half2& b) { return __hadd2(a, b); }
static inline __half2 operator-(const __half2& a, const __half2& b) { return __hsub2(a, b); }
static inline __half2 operator*(const __half2& a, const __half2& b) { return __hmul2(a, b); }
static inline __half2 operator/(const __half2& a, const __half2& b) { return __h2div(a, b); }
static inline __half2& operator+=(__half2& a, const __half2& b) { return a = a + b; }
static inline __half2& operator*=(__half2& a, const __half2& b) { return a = a * b; }

static inline __half atomicAdd(__half* a, __half v) {
    unsigned short old = __atomic_load_n(&a->__x, __ATOMIC_SEQ_CST);
    for (;;) {
        unsigned short nv = (emu_half_from_bits(old) + v).__x;
        if (__atomic_compare_exchange_n(&a->__x, &old, nv, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            return emu_half_from_bits(old);
    }
}
