// emu_api.h — the C interface between the emulator's shared object (the
// fiber runtime plus every compiled kernel) and its Rust wrapper
// (src/lib.rs mirrors these structs with #[repr(C)]). Bump EMU_API_VERSION
// on any change.
#pragma once
#include <stddef.h>
#include <stdint.h>

#define EMU_API_VERSION 6u

// Kernel parameter kinds, deduced from the C++ parameter types.
enum {
    EMU_KIND_OTHER = 0,  // struct by value, bool, 8/16-bit integers, ...
    EMU_KIND_PTR = 1,
    EMU_KIND_I32 = 2,
    EMU_KIND_U32 = 3,
    EMU_KIND_I64 = 4,
    EMU_KIND_U64 = 5,
    EMU_KIND_F32 = 6,
    EMU_KIND_F64 = 7,
};

// Error categories returned by the API calls (0 = success).
enum {
    EMU_OK = 0,
    EMU_ERR_CONFIG = 1,          // bad grid/block/shared memory
    EMU_ERR_ARGS = 2,            // wrong argument count, size or pointer
    EMU_ERR_FAULT = 3,           // out-of-bounds / invalid address / stack overflow / SIGFPE
    EMU_ERR_SYNC = 4,            // barrier or warp-collective misuse
    EMU_ERR_TRAP = 5,            // __trap() or a failed device assert
    EMU_ERR_MEMORY = 6,          // a host-side copy/free outside a live allocation
    EMU_ERR_OOM = 7,             // mmap failed
    EMU_ERR_UNKNOWN_KERNEL = 8,
    EMU_ERR_INIT = 9,
    EMU_ERR_RACE = 10,           // a shared-memory hazard or a global-memory conflict between blocks
};

typedef void (*emu_entry_fn)(void** args);

typedef struct EmuKernelDesc {
    const char* name;
    const char* file;    // path relative to the workspace
    const char* params;  // the parameter list as written
    uint32_t n_args;
    const uint32_t* arg_sizes;
    const uint32_t* arg_kinds;
    const char* const* arg_names;
    emu_entry_fn entry;
    uint32_t flags;  // EMU_FLAG_*
    uint32_t _pad;
} EmuKernelDesc;

// The kernel's file (or a header in its directory) declares a static
// __shared__ variable: static shared memory is re-poisoned before each block.
#define EMU_FLAG_STATIC_SHARED 1u

typedef struct EmuLaunch {
    uint32_t kernel;  // index into the kernel table
    uint32_t grid[3];
    uint32_t block[3];
    uint32_t shared_bytes;
    uint32_t order;  // 0 forward, 1 reverse, 2 shuffle(seed), 3 warp-ahead, 4 warp-ahead-reverse
    uint32_t use_ucontext;
    uint64_t seed;
    uint32_t n_args;
    uint32_t checks;  // 1: shared-memory hazards, 2: global-memory conflicts between blocks
    void* const* args;          // pointers to each argument's value
    const uint32_t* arg_sizes;  // the size of each argument as the caller packed it
} EmuLaunch;

typedef struct EmuApi {
    uint32_t version;
    uint32_t kernel_count;
    const EmuKernelDesc* kernels;
    const char* switch_kind;  // "x86-64 fibers" or "ucontext fibers"
    // All functions write a NUL-terminated message into err (errlen bytes)
    // on failure and return an EMU_ERR_* code; none uses thread-local state.
    int (*init)(uint32_t n_workers, char* err, size_t errlen);
    uint32_t (*n_workers)(void);
    int (*alloc)(size_t bytes, uint64_t* out, char* err, size_t errlen);
    int (*free)(uint64_t ptr, char* err, size_t errlen);
    int (*htod)(uint64_t dst, const void* src, size_t n, char* err, size_t errlen);
    int (*dtoh)(void* dst, uint64_t src, size_t n, char* err, size_t errlen);
    int (*dtod)(uint64_t dst, uint64_t src, size_t n, char* err, size_t errlen);
    int (*memset)(uint64_t dst, int byte, size_t n, char* err, size_t errlen);
    int (*launch)(const EmuLaunch* launch, char* err, size_t errlen);
    // The live allocation containing addr: its pointer and size; 0 if none.
    int (*alloc_info)(uint64_t addr, uint64_t* base, uint64_t* bytes);
    uint64_t (*live_allocations)(void);
    // Makes [ptr, ptr + n) inside a live allocation a guard gap: filled with
    // the canary and checked, like the slack around the buffer, after every
    // launch touching the allocation and at its free.
    int (*guard_gap)(uint64_t ptr, size_t n, char* err, size_t errlen);
} EmuApi;

#ifdef __cplusplus
extern "C" {
#endif
const EmuApi* diffuse_emu_api(void);
#ifdef __cplusplus
}
#endif
