// mma.h — the CUDA emulator's stand-in for CUDA's WMMA API (nvcuda::wmma):
// fragments, fill_fragment, load_matrix_sync, store_matrix_sync, mma_sync
// and __float_to_tf32, for the shapes the project uses:
//   m16n16k16 with __nv_bfloat16 or __half inputs, and
//   m16n16k8 with precision::tf32 inputs (stored as float),
// each with a float accumulator, row- or col-major.
//
// As on a GPU, a fragment is spread over the 32 lanes of a warp: each lane
// holds num_elements of the tile (256 / 32 or 128 / 32), lane l element e
// being the tile's row-major element e * 32 + l (a GPU's mapping is
// unspecified: kernels must not rely on one). The *_sync calls are warp
// collectives (emu_warp_gather): every one of the 32 lanes must reach the
// same call with the same pointer, ldm and layout, or the launch fails;
// each lane then loads or stores only its own elements, so the hazard
// detector sees the real per-lane accesses. mma_sync exchanges the lanes'
// fragments by address (one gather); the first lane to resume computes the
// warp's whole D = A B + C into a per-warp scratch of the runtime
// (emu_warp_wmma_scratch) before any other lane resumes, and every lane
// copies its elements out, so D may alias C.
//
// Numerics: inputs are taken exactly as stored (bf16 / half values, or tf32
// values in a float, whose 13 low mantissa bits must be zero: a kernel that
// forgets __float_to_tf32 is a launch error); each product is exact in
// float; the K products are added to the accumulator in k order, each sum
// rounded to float (round to nearest even). A GPU's tensor core adds the
// products in an unspecified order and internal precision, so results agree
// within the fp32 accumulation error bound, not bit for bit.
#pragma once
#include "cuda_bf16.h"
#include "cuda_fp16.h"

namespace nvcuda {
namespace wmma {

struct row_major;
struct col_major;
struct matrix_a;
struct matrix_b;
struct accumulator;
namespace precision {
struct tf32;
}
enum layout_t { mem_row_major, mem_col_major };

// cvt.rna.tf32.f32: round to the nearest tf32 (10 mantissa bits), ties away
// from zero; the 13 low bits of the result are zero. Inf and NaN pass.
static inline float __float_to_tf32(float in) {
    uint32_t u = emu_f32_bits(in);
    if ((u & 0x7f800000u) == 0x7f800000u) return in;
    u = (u + 0x1000u) & ~0x1fffu;
    return emu_bits_f32(u);
}

template <class T>
struct emu_wmma_storage {
    typedef T type;
};
template <>
struct emu_wmma_storage<precision::tf32> {
    typedef float type;
};

// The (rows, cols) of a fragment's tile and whether (m, n, k, T) is a shape
// this stand-in provides.
template <class Use, int M, int N, int K>
struct emu_wmma_dims;
template <int M, int N, int K>
struct emu_wmma_dims<matrix_a, M, N, K> {
    enum { rows = M, cols = K };
};
template <int M, int N, int K>
struct emu_wmma_dims<matrix_b, M, N, K> {
    enum { rows = K, cols = N };
};
template <int M, int N, int K>
struct emu_wmma_dims<accumulator, M, N, K> {
    enum { rows = M, cols = N };
};

template <class Use, int M, int N, int K, class T>
constexpr bool emu_wmma_supported() {
    if (M != 16 || N != 16) return false;
    if (std::is_same<Use, accumulator>::value) return std::is_same<T, float>::value && (K == 16 || K == 8);
    if (K == 16) return std::is_same<T, __nv_bfloat16>::value || std::is_same<T, __half>::value;
    if (K == 8) return std::is_same<T, precision::tf32>::value;
    return false;
}

template <class Use, int M, int N, int K, class T, class Layout = void>
class fragment {
    static_assert(emu_wmma_supported<Use, M, N, K, T>(),
                  "the CUDA emulator's WMMA provides m16n16k16 (__nv_bfloat16, __half) and m16n16k8 "
                  "(precision::tf32) with float accumulators");
    static_assert(std::is_same<Use, accumulator>::value == std::is_same<Layout, void>::value,
                  "matrix_a / matrix_b fragments take row_major or col_major; accumulators take no layout");

  public:
    typedef T element_type;
    typedef typename emu_wmma_storage<T>::type storage_element_type;
    enum {
        tile_rows = emu_wmma_dims<Use, M, N, K>::rows,
        tile_cols = emu_wmma_dims<Use, M, N, K>::cols,
        num_elements = tile_rows * tile_cols / 32,
        num_storage_elements = num_elements,
    };
    storage_element_type x[num_elements];
};

template <class Use, int M, int N, int K, class T, class L, class V>
static inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& v) {
    typedef typename fragment<Use, M, N, K, T, L>::storage_element_type S;
    const S s = S(v);
    for (int e = 0; e < fragment<Use, M, N, K, T, L>::num_elements; ++e) f.x[e] = s;
}

// One collective for the "waits until all warp lanes have arrived" of every
// *_sync call; checks that all 32 lanes came, with the same arguments.
static inline void emu_wmma_arrive(int op, const char* what, const void* p, unsigned ldm, int layout,
                                   const char* file, int line) {
    uint64_t h = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull ^ ((uint64_t)ldm << 1 | (uint64_t)layout) * 0xC2B2AE3D27D4EB4Full;
    if (h == 0) h = 1;
    uint64_t all[32];
    emu_warp_gather(op, 0xffffffffu, h, all);
    for (int l = 0; l < 32; ++l)
        if (all[l] != h) emu_trap(all[l] == 0 ? "wmma: all 32 lanes of the warp must take part in a *_sync call" : what, file, line);
}

#define EMU_WMMA_CHECK(cond, msg) ((cond) ? (void)0 : emu_trap(msg, __FILE__, __LINE__))

template <class Frag, class P>
static inline void emu_wmma_load(Frag& f, const P* p, unsigned ldm, bool row_major_mem, int op) {
    static_assert(sizeof(P) == sizeof(typename Frag::storage_element_type), "pointer type");
    EMU_WMMA_CHECK(((uintptr_t)p & 31u) == 0, "wmma::load_matrix_sync: the pointer must be 256-bit (32-byte) aligned");
    EMU_WMMA_CHECK((ldm * sizeof(P)) % 16 == 0,
                   "wmma::load_matrix_sync: ldm must be a multiple of 16 bytes (8 half/bf16, 4 float elements)");
    emu_wmma_arrive(op,
                    "wmma::load_matrix_sync: all 32 lanes of the warp must call it with the same pointer, ldm and "
                    "layout",
                    p, ldm, row_major_mem, __FILE__, __LINE__);
    const unsigned lane = emu_self()->linear & 31u;
    for (int e = 0; e < Frag::num_elements; ++e) {
        const unsigned idx = (unsigned)e * 32u + lane, r = idx / Frag::tile_cols, c = idx % Frag::tile_cols;
        f.x[e] = p[row_major_mem ? (size_t)r * ldm + c : (size_t)c * ldm + r];
    }
}

template <class Use, int M, int N, int K, class T, class L>
static inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f,
                                    const typename fragment<Use, M, N, K, T, L>::storage_element_type* p, unsigned ldm) {
    static_assert(!std::is_same<Use, accumulator>::value, "an accumulator load takes a layout_t");
    emu_wmma_load(f, p, ldm, std::is_same<L, row_major>::value, EMU_OP_WMMA_LOAD);
}
template <int M, int N, int K>
static inline void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm,
                                    layout_t layout) {
    emu_wmma_load(f, p, ldm, layout == mem_row_major, EMU_OP_WMMA_LOAD);
}

template <int M, int N, int K>
static inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                                     layout_t layout) {
    typedef fragment<accumulator, M, N, K, float> Frag;
    EMU_WMMA_CHECK(((uintptr_t)p & 31u) == 0, "wmma::store_matrix_sync: the pointer must be 256-bit (32-byte) aligned");
    EMU_WMMA_CHECK(ldm % 4 == 0, "wmma::store_matrix_sync: ldm must be a multiple of 4 float elements");
    emu_wmma_arrive(EMU_OP_WMMA_STORE,
                    "wmma::store_matrix_sync: all 32 lanes of the warp must call it with the same pointer, ldm and "
                    "layout",
                    p, ldm, layout == mem_row_major, __FILE__, __LINE__);
    const unsigned lane = emu_self()->linear & 31u;
    for (int e = 0; e < Frag::num_elements; ++e) {
        const unsigned idx = (unsigned)e * 32u + lane, r = idx / Frag::tile_cols, c = idx % Frag::tile_cols;
        p[layout == mem_row_major ? (size_t)r * ldm + c : (size_t)c * ldm + r] = f.x[e];
    }
}

static inline float emu_wmma_input(float v) {
    const uint32_t u = emu_f32_bits(v);
    if ((u & 0x7f800000u) != 0x7f800000u && (u & 0x1fffu))
        emu_trap("wmma::mma_sync: a tf32 input has bits below tf32 precision (round it with wmma::__float_to_tf32)",
                 __FILE__, __LINE__);
    return v;
}
static inline float emu_wmma_input(__nv_bfloat16 v) { return (float)v; }
static inline float emu_wmma_input(__half v) { return (float)v; }

// Element (r, c) of a fragment tile whose lanes' fragments are at lanes[].
template <class Frag>
static inline float emu_wmma_elem(const Frag* const lanes[32], int r, int c) {
    const unsigned idx = (unsigned)(r * Frag::tile_cols + c);
    return emu_wmma_input(lanes[idx & 31u]->x[idx >> 5]);
}

// D = A B + C for the whole 16 x 16 tile, into d (row-major), from the 32
// lanes' fragments: the inputs converted to float once, then for each
// element the K products added to C in k order, each sum rounded to float
// (the loops run over j innermost so they vectorise; the order of each
// element's sum is unchanged). Reads of the lanes' fragments are register
// traffic on a GPU, not memory the hazard detector models.
template <int M, int N, int K, class FA, class FB, class FC>
__attribute__((no_sanitize_thread)) static void emu_wmma_tile(float* d, const FA* const la[32],
                                                              const FB* const lb[32], const FC* const lc[32]) {
    float a[M][K], b[K][N];
    for (int i = 0; i < M; ++i)
        for (int k = 0; k < K; ++k) a[i][k] = emu_wmma_elem<FA>(la, i, k);
    for (int k = 0; k < K; ++k)
        for (int j = 0; j < N; ++j) b[k][j] = emu_wmma_elem<FB>(lb, k, j);
    for (int i = 0; i < M; ++i) {
        float acc[N];
        for (int j = 0; j < N; ++j) {  // C is float: taken as it is
            const unsigned idx = (unsigned)(i * N + j);
            acc[j] = lc[idx & 31u]->x[idx >> 5];
        }
        for (int k = 0; k < K; ++k) {
            const float aik = a[i][k];
            for (int j = 0; j < N; ++j) acc[j] += aik * b[k][j];
        }
        for (int j = 0; j < N; ++j) d[i * N + j] = acc[j];
    }
}

template <int M, int N, int K, class T, class LA, class LB>
static inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
                            const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
    typedef fragment<matrix_a, M, N, K, T, LA> FA;
    typedef fragment<matrix_b, M, N, K, T, LB> FB;
    typedef fragment<accumulator, M, N, K, float> FC;
    struct Operands {
        const FA* a;
        const FB* b;
        const FC* c;
    } mine = {&a, &b, &c};
    uint64_t all[32];
    emu_warp_gather(EMU_OP_WMMA_MMA, 0xffffffffu, (uint64_t)(uintptr_t)&mine, all);
    int first = 0;
    float* tile = emu_warp_wmma_scratch(&first);
    if (first) {
        // The first lane to resume computes the warp's tile once, while
        // every lane's operands are still as they were at the gather.
        const FA* la[32];
        const FB* lb[32];
        const FC* lc[32];
        for (int l = 0; l < 32; ++l) {
            if (all[l] == 0) emu_trap("wmma::mma_sync: all 32 lanes of the warp must take part", __FILE__, __LINE__);
            const Operands* o = (const Operands*)(uintptr_t)all[l];
            la[l] = o->a;
            lb[l] = o->b;
            lc[l] = o->c;
        }
        emu_wmma_tile<M, N, K>(tile, la, lb, lc);
    }
    // No second collective before D is written (D may be C, A's or B's
    // storage): fibers switch only at synchronisation points, so the first
    // lane read every operand before any other lane resumed.
    const unsigned lane = emu_self()->linear & 31u;
    for (int e = 0; e < FC::num_elements; ++e) d.x[e] = tile[(unsigned)e * 32u + lane];
}

#undef EMU_WMMA_CHECK

}  // namespace wmma
}  // namespace nvcuda
