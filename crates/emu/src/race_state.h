// race_state.h — the hazard detector's state (included by runtime.cc inside
// its anonymous namespace; the logic is in race_check.h).
//
// Kernels are compiled with -fsanitize=thread, so every load and store of
// kernel code calls a __tsan_readN/__tsan_writeN hook; the hooks (defined in
// race_check.h, no TSan runtime is linked) keep shadow state for shared
// memory and for the device allocations a launch's pointer arguments point
// into, and report hazards as launch errors.
#pragma once
#include <stdint.h>

// Which checks a launch runs (EmuLaunch::checks).
enum : uint32_t {
    kCheckShared = 1u,  // shared-memory hazards between threads of a block
    kCheckGlobal = 2u,  // global-memory conflicts between blocks of a grid
};

// Shadow of one 4-byte word of shared memory: the last write and the reads
// since, each with its thread, barrier interval and warp interval. Epochs
// come from one per-worker clock that only grows, so a record whose epoch
// is not the current one is stale: nothing is cleared between blocks.
struct SmemShadow {
    uint32_t w_bar;    // barrier interval of the last write (0: none)
    uint32_t w_wep;    // the writer's warp interval
    uint16_t w_tid;    // writer (linear thread index)
    uint16_t r_tid;    // reader A: the first reader of the interval (or of a later warp interval of its warp)
    uint32_t r_bar;    // barrier interval of the reads recorded (0: none)
    uint32_t r_wep;    // reader A's warp interval
    uint32_t r_lanes;  // lanes of reader A's warp that read in warp interval r_wep
    uint16_t r2_tid;   // the first reader from another warp than A's (kNoThread: none)
    uint16_t pad;
    const void* w_pc;  // source locations (return addresses into kernel code)
    const void* r_pc;
    const void* r2_pc;
};

constexpr uint16_t kNoThread = 0xffff;

// One device allocation a launch may touch, with its shadow: per 4-byte
// word, [launch tag:16][writing block:24][reading block:24] (0: none,
// kManyBlocks: several).
struct GlobalRange {
    uintptr_t lo;
    size_t len;
    uint64_t* shadow;
    uintptr_t ptr;  // the allocation as the user sees it
    size_t bytes;
};
constexpr uint32_t kManyBlocks = 0xffffff;

struct RaceWorker {
    uint32_t checks = 0;  // this launch's kCheck* bits
    uint32_t clock = 0;   // source of epochs
    uint32_t bar = 0;     // the current barrier interval
    uint32_t warp[32] = {};  // each warp's current warp interval
    // shared memory: this module's whole TLS block (the dynamic buffer in
    // .tdata, every kernel's static __shared__ variables in .tbss)
    uintptr_t smem_lo = 0;
    size_t smem_len = 0;
    SmemShadow* shadow = nullptr;
    // global memory
    uint32_t block_tag = 0;  // this block, as stored in global shadow
    uint64_t launch_tag = 0;  // already shifted to bits 48..63
    uintptr_t g_lo = 0;
    size_t g_span = 0;
    const GlobalRange* ranges = nullptr;
    size_t n_ranges = 0;
};
