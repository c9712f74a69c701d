// cuda_bf16.h — the CUDA emulator's stand-in for CUDA's header:
// __nv_bfloat16 and __nv_bfloat162 with bit-exact conversions (see
// emu_fp_convert.h) and arithmetic computed in float and rounded once.
#pragma once
#include "emu_fp_convert.h"
#include "cuda_fp16.h"

struct __nv_bfloat16_raw {
    unsigned short x;
};
struct __nv_bfloat162_raw {
    unsigned short x, y;
};

struct __attribute__((aligned(2))) __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    constexpr __nv_bfloat16(const __nv_bfloat16_raw& r) : __x(r.x) {}
    __nv_bfloat16(float f) : __x(emu_f32_to_bf16_bits(f, EMU_RN)) {}
    __nv_bfloat16(double d) : __x(emu_f32_to_bf16_bits(emu_f64_to_f32_odd(d), EMU_RN)) {}
    __nv_bfloat16(int i) : __x(emu_f32_to_bf16_bits(emu_f64_to_f32_odd((double)i), EMU_RN)) {}
    __nv_bfloat16(unsigned int i) : __x(emu_f32_to_bf16_bits(emu_f64_to_f32_odd((double)i), EMU_RN)) {}
    __nv_bfloat16(short i) : __x(emu_f32_to_bf16_bits((float)i, EMU_RN)) {}
    __nv_bfloat16(unsigned short i) : __x(emu_f32_to_bf16_bits((float)i, EMU_RN)) {}
    __nv_bfloat16(long long i) : __x(emu_f32_to_bf16_bits(emu_f64_to_f32_odd((double)i), EMU_RN)) {}
    __nv_bfloat16(unsigned long long i) : __x(emu_f32_to_bf16_bits(emu_f64_to_f32_odd((double)i), EMU_RN)) {}
    __nv_bfloat16& operator=(const __nv_bfloat16_raw& r) {
        __x = r.x;
        return *this;
    }
    operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
    operator float() const { return emu_bf16_bits_to_f32(__x); }
};
typedef __nv_bfloat16 nv_bfloat16;

struct __attribute__((aligned(4))) __nv_bfloat162 {
    __nv_bfloat16 x, y;
    __nv_bfloat162() = default;
    constexpr __nv_bfloat162(const __nv_bfloat16& a, const __nv_bfloat16& b) : x(a), y(b) {}
    __nv_bfloat162(const __nv_bfloat162_raw& r) : x(__nv_bfloat16_raw{r.x}), y(__nv_bfloat16_raw{r.y}) {}
    operator __nv_bfloat162_raw() const { return __nv_bfloat162_raw{x.__x, y.__x}; }
};
typedef __nv_bfloat162 nv_bfloat162;

static inline __nv_bfloat16 emu_bf16_from_bits(unsigned short b) { return __nv_bfloat16(__nv_bfloat16_raw{b}); }

static inline __nv_bfloat16 __float2bfloat16(float f) { return emu_bf16_from_bits(emu_f32_to_bf16_bits(f, EMU_RN)); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return emu_bf16_from_bits(emu_f32_to_bf16_bits(f, EMU_RN)); }
static inline __nv_bfloat16 __float2bfloat16_rz(float f) { return emu_bf16_from_bits(emu_f32_to_bf16_bits(f, EMU_RZ)); }
static inline __nv_bfloat16 __float2bfloat16_rd(float f) { return emu_bf16_from_bits(emu_f32_to_bf16_bits(f, EMU_RD)); }
static inline __nv_bfloat16 __float2bfloat16_ru(float f) { return emu_bf16_from_bits(emu_f32_to_bf16_bits(f, EMU_RU)); }
static inline __nv_bfloat16 __double2bfloat16(double d) {
    return emu_bf16_from_bits(emu_f32_to_bf16_bits(emu_f64_to_f32_odd(d), EMU_RN));
}
static inline float __bfloat162float(__nv_bfloat16 h) { return emu_bf16_bits_to_f32(h.__x); }
static inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
static inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }
static inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 h) { return h.x; }
static inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 h) { return h.y; }
static inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat162(a, b); }
static inline __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 a) { return __nv_bfloat162(a, a); }
static inline __nv_bfloat162 __float2bfloat162_rn(float f) { return __nv_bfloat162(__float2bfloat16_rn(f), __float2bfloat16_rn(f)); }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return __nv_bfloat162(__float2bfloat16_rn(a), __float2bfloat16_rn(b));
}
static inline float2 __bfloat1622float2(__nv_bfloat162 h) { return make_float2(__bfloat162float(h.x), __bfloat162float(h.y)); }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
static inline short __bfloat16_as_short(__nv_bfloat16 h) { return (short)h.__x; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return emu_bf16_from_bits(u); }
static inline __nv_bfloat16 __short_as_bfloat16(short s) { return emu_bf16_from_bits((unsigned short)s); }
static inline __nv_bfloat16 __int2bfloat16_rn(int i) { return __double2bfloat16((double)i); }
static inline int __bfloat162int_rn(__nv_bfloat16 h) { return __float2int_rn(__bfloat162float(h)); }
static inline int __bfloat162int_rz(__nv_bfloat16 h) { return __float2int_rz(__bfloat162float(h)); }
static inline __half __bfloat162half_rn(__nv_bfloat16 h) { return __float2half_rn(__bfloat162float(h)); }

static inline __nv_bfloat16 emu_bf(float f) { return __float2bfloat16_rn(f); }
static inline __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b) { return emu_bf((float)a + (float)b); }
static inline __nv_bfloat16 __hsub(__nv_bfloat16 a, __nv_bfloat16 b) { return emu_bf((float)a - (float)b); }
static inline __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b) { return emu_bf((float)a * (float)b); }
static inline __nv_bfloat16 __hdiv(__nv_bfloat16 a, __nv_bfloat16 b) { return emu_bf((float)a / (float)b); }
static inline __nv_bfloat16 __hneg(__nv_bfloat16 a) { return emu_bf16_from_bits(a.__x ^ 0x8000u); }
static inline __nv_bfloat16 __habs(__nv_bfloat16 a) { return emu_bf16_from_bits(a.__x & 0x7fffu); }
static inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
    return __double2bfloat16(emu_fma_odd((float)a, (float)b, (float)c));
}
static inline __nv_bfloat16 __hmax(__nv_bfloat16 a, __nv_bfloat16 b) { return emu_bf(fmaxf((float)a, (float)b)); }
static inline __nv_bfloat16 __hmin(__nv_bfloat16 a, __nv_bfloat16 b) { return emu_bf(fminf((float)a, (float)b)); }
static inline bool __heq(__nv_bfloat16 a, __nv_bfloat16 b) { return (float)a == (float)b; }
static inline bool __hlt(__nv_bfloat16 a, __nv_bfloat16 b) { return (float)a < (float)b; }
static inline bool __hle(__nv_bfloat16 a, __nv_bfloat16 b) { return (float)a <= (float)b; }
static inline bool __hgt(__nv_bfloat16 a, __nv_bfloat16 b) { return (float)a > (float)b; }
static inline bool __hge(__nv_bfloat16 a, __nv_bfloat16 b) { return (float)a >= (float)b; }
static inline bool __hisnan(__nv_bfloat16 a) { return (a.__x & 0x7fffu) > 0x7f80u; }
static inline __nv_bfloat16 hsqrt(__nv_bfloat16 a) { return emu_bf(sqrtf((float)a)); }
static inline __nv_bfloat16 hexp(__nv_bfloat16 a) { return emu_bf(expf((float)a)); }
static inline __nv_bfloat16 hlog(__nv_bfloat16 a) { return emu_bf(logf((float)a)); }

static inline __nv_bfloat16 operator+(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __hadd(a, b); }
static inline __nv_bfloat16 operator-(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __hsub(a, b); }
static inline __nv_bfloat16 operator*(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __hmul(a, b); }
static inline __nv_bfloat16 operator/(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __hdiv(a, b); }
static inline __nv_bfloat16 operator-(const __nv_bfloat16& a) { return __hneg(a); }
static inline __nv_bfloat16& operator+=(__nv_bfloat16& a, const __nv_bfloat16& b) { return a = a + b; }
static inline __nv_bfloat16& operator-=(__nv_bfloat16& a, const __nv_bfloat16& b) { return a = a - b; }
static inline __nv_bfloat16& operator*=(__nv_bfloat16& a, const __nv_bfloat16& b) { return a = a * b; }
static inline __nv_bfloat16& operator/=(__nv_bfloat16& a, const __nv_bfloat16& b) { return a = a / b; }
static inline bool operator==(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __heq(a, b); }
static inline bool operator!=(const __nv_bfloat16& a, const __nv_bfloat16& b) { return !__heq(a, b) && a == a && b == b; }
static inline bool operator<(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __hlt(a, b); }
static inline bool operator<=(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __hle(a, b); }
static inline bool operator>(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __hgt(a, b); }
static inline bool operator>=(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __hge(a, b); }

static inline __nv_bfloat162 __hadd2(__nv_bfloat162 a, __nv_bfloat162 b) { return __nv_bfloat162(a.x + b.x, a.y + b.y); }
static inline __nv_bfloat162 __hmul2(__nv_bfloat162 a, __nv_bfloat162 b) { return __nv_bfloat162(a.x * b.x, a.y * b.y); }
static inline __nv_bfloat162 __hfma2(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {
    return __nv_bfloat162(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y));
}

static inline __nv_bfloat16 atomicAdd(__nv_bfloat16* a, __nv_bfloat16 v) {
    unsigned short old = __atomic_load_n(&a->__x, __ATOMIC_SEQ_CST);
    for (;;) {
        unsigned short nv = (emu_bf16_from_bits(old) + v).__x;
        if (__atomic_compare_exchange_n(&a->__x, &old, nv, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            return emu_bf16_from_bits(old);
    }
}
