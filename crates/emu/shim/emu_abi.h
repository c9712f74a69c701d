// emu_abi.h — the few definitions shared by the shim (compiled into every
// kernel) and the fiber runtime (src/runtime.cc). Not for kernels to include.
#pragma once
#include <stdint.h>

// Every CUDA thread runs on its own fiber stack: a region of EMU_STACK_SIZE
// bytes aligned to EMU_STACK_SIZE. The lowest EMU_STACK_GUARD bytes are
// PROT_NONE; the fiber's control block sits near the top, so kernel code
// finds "itself" (threadIdx, blockIdx, ...) by masking its stack pointer:
// no thread-local lookups, no globals. The control block (and the stack
// below it) is shifted by a per-region "colour" of up to 64 KiB, so that the
// hot top of every fiber's stack does not fall into the same cache set.
#define EMU_STACK_SIZE (512u * 1024u)
#define EMU_STACK_SHIFT 19
#define EMU_STACK_GUARD (64u * 1024u)
#define EMU_CB_RESERVE 256u
#define EMU_CB_OFFSET(base) \
    (EMU_STACK_SIZE - EMU_CB_RESERVE - ((((uintptr_t)(base) >> EMU_STACK_SHIFT) * 1088u) & 0xffc0u))

// The largest dynamic shared memory a block may have: sm_90's 227 KiB.
#define EMU_MAX_SHARED_BYTES (227u * 1024u)

struct emu_uint3_ {
    unsigned int x, y, z;
};

// Per-block built-ins, owned by the worker running the block.
struct EmuBlockBuiltins {
    emu_uint3_ block_idx;
    emu_uint3_ block_dim;
    emu_uint3_ grid_dim;
};

// The public head of a fiber's control block (at the top of its stack region).
struct EmuFiberPublic {
    emu_uint3_ thread_idx;
    unsigned int linear;  // linear thread index in the block
    const EmuBlockBuiltins* builtins;
    void* worker;  // runtime-private
};

// Warp-collective operation codes (emu_warp_op).
enum {
    EMU_OP_SHFL_IDX = 1,
    EMU_OP_SHFL_UP = 2,
    EMU_OP_SHFL_DOWN = 3,
    EMU_OP_SHFL_XOR = 4,
    EMU_OP_BALLOT = 5,
    EMU_OP_ALL = 6,
    EMU_OP_ANY = 7,
    EMU_OP_SYNCWARP = 8,
    EMU_OP_MATCH_ANY = 9,
    EMU_OP_MATCH_ALL = 10,
    EMU_OP_REDUCE_ADD_U = 11,
    EMU_OP_REDUCE_MIN_U = 12,
    EMU_OP_REDUCE_MAX_U = 13,
    EMU_OP_REDUCE_MIN_I = 14,
    EMU_OP_REDUCE_MAX_I = 15,
    EMU_OP_REDUCE_AND = 16,
    EMU_OP_REDUCE_OR = 17,
    EMU_OP_REDUCE_XOR = 18,
    // wmma::*_sync: a full-warp gather of one 64-bit value per lane
    // (emu_warp_gather); distinct codes so that lanes at different wmma
    // calls never complete one collective together.
    EMU_OP_WMMA_LOAD = 19,
    EMU_OP_WMMA_STORE = 20,
    EMU_OP_WMMA_MMA = 21,
};

// Block barrier kinds (emu_syncthreads).
enum {
    EMU_BAR_PLAIN = 0,
    EMU_BAR_COUNT = 1,
    EMU_BAR_AND = 2,
    EMU_BAR_OR = 3,
};

#ifdef __cplusplus
extern "C" {
#endif
// All of these may only be called from kernel code (on a fiber).
int emu_syncthreads(int kind, int predicate);
// value: the lane's payload (zero-extended), b: srcLane / delta / laneMask,
// width: shuffle segment width; returns the lane's result.
uint64_t emu_warp_op(int op, unsigned int mask, uint64_t value, int b, int width, int value_bytes);
// A warp collective (op: EMU_OP_WMMA_*) that hands every lane of the group
// the values of all 32 lanes: out[l] is lane l's value, 0 for a lane that
// does not exist, has exited or is not in the mask.
void emu_warp_gather(int op, unsigned int mask, uint64_t value, uint64_t out[32]);
// After a gather: the warp's 256-float scratch; *first = 1 for the first
// lane to ask (it computes what the scratch holds), 0 for the rest.
float* emu_warp_wmma_scratch(int* first);
void emu_nanosleep(unsigned int ns);
__attribute__((noreturn)) void emu_trap(const char* what, const char* file, int line);
#ifdef __cplusplus
}
#endif

static inline const struct EmuFiberPublic* emu_self(void) {
    uintptr_t sp;
#if defined(__x86_64__)
    __asm__("movq %%rsp, %0" : "=r"(sp));
#elif defined(__aarch64__)
    __asm__("mov %0, sp" : "=r"(sp));
#else
    sp = (uintptr_t)__builtin_frame_address(0);
#endif
    const uintptr_t base = sp & ~(uintptr_t)(EMU_STACK_SIZE - 1);
    return (const struct EmuFiberPublic*)(base + EMU_CB_OFFSET(base));
}
