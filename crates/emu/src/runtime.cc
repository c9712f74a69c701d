// runtime.cc — the CUDA emulator's fiber runtime. Built by build.rs into one
// shared object together with every kernel (kernels/*.cu, tests/kernels/*.cu)
// and loaded by src/lib.rs with dlopen.
//
// - Device memory: every allocation is its own mmap region
//   [guard page][data pages][guard page]; the buffer ends 16-byte aligned
//   against the trailing guard, the slack around it holds a canary. An
//   overrun faults (SIGSEGV caught on the worker, reported as a launch
//   error); writes into the slack are found by the canary check after every
//   launch. Fresh memory is filled with 0xff bytes (NaN as f32/f64/f16/bf16).
// - Execution: a pool of worker threads takes blocks; a block's CUDA threads
//   are fibers (hand-written x86-64 switch, ucontext elsewhere or on request)
//   run by a scheduler that switches only at __syncthreads*, warp
//   collectives and __nanosleep, in forward, reverse or shuffled order.
// - Shared memory: kernels' static __shared__ variables are thread_local and
//   live in this module's .tbss; the dynamic buffer (.tdata) backs every
//   `extern __shared__` name. Both are refilled with 0xff before each block.
#include "emu_abi.h"
#include "emu_api.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#define EMU_HIDDEN __attribute__((visibility("hidden")))
#ifndef EMU_SOURCE_ROOT
#define EMU_SOURCE_ROOT ""
#endif

// ------------------------------------------------------------------ generated
extern "C" {
extern const EmuKernelDesc emu_kernel_table[];
extern const uint32_t emu_kernel_table_len;
// Defined (with the extern __shared__ aliases) in the generated registry.
extern thread_local unsigned char emu_dynamic_smem[];
extern const uint32_t emu_dynamic_smem_bytes;  // usable size, page-rounded; one guard page follows
}

namespace {

#include "race_state.h"

constexpr size_t kPage = 4096;
constexpr size_t kGuard = 64 * 1024;  // PROT_NONE on both sides of every device allocation
constexpr uint32_t kMaxThreads = 1024;
constexpr uint32_t kCanary = 0xFFC0DEADu;  // a NaN as f32; its high half a NaN as f16/bf16
constexpr unsigned char kPoison = 0xff;

size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

void set_err(char* err, size_t errlen, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
void set_err(char* err, size_t errlen, const char* fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

std::string strf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string strf(const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

// "0-15, 17, 20-31" for a set of lane/thread numbers.
std::string ranges(const std::vector<uint32_t>& v) {
    std::string s;
    size_t i = 0;
    while (i < v.size()) {
        size_t j = i;
        while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
        if (!s.empty()) s += ", ";
        s += j == i ? strf("%u", v[i]) : strf("%u-%u", v[i], v[j]);
        i = j + 1;
    }
    return s.empty() ? "none" : s;
}
std::string mask_ranges(uint32_t m) {
    std::vector<uint32_t> v;
    for (uint32_t l = 0; l < 32; ++l)
        if (m >> l & 1) v.push_back(l);
    return ranges(v);
}

// ------------------------------------------------------------------ memory
struct Alloc {
    uintptr_t region;  // start of the mapping (leading guard page)
    size_t region_len;
    uintptr_t ptr;  // what the caller sees
    size_t bytes;
    uintptr_t data;  // first data page
    size_t data_len;
    bool freed;
    uint64_t* shadow = nullptr;  // the hazard detector's, one word per 4 data bytes (made on first use)
    // Guard gaps inside the buffer ([from, to), canary-filled): the space
    // between the views of a flat buffer (api_guard_gap).
    std::vector<std::pair<uintptr_t, uintptr_t>> gaps;
};

struct Memory {
    std::mutex mu;
    std::map<uintptr_t, Alloc> live;  // by region start
    std::deque<Alloc> quarantine;     // freed regions kept PROT_NONE for a while
    size_t quarantine_bytes = 0;
};
Memory* g_mem = new Memory;  // never destroyed: workers may outlive static destructors

unsigned char canary_byte(uintptr_t addr) { return (unsigned char)(kCanary >> (8 * (addr & 3))); }

void fill_canary(uintptr_t from, uintptr_t to) {
    for (uintptr_t a = from; a < to; ++a) *(unsigned char*)a = canary_byte(a);
}

// Checks the slack before and after the buffer; returns "" if intact.
std::string check_canary(const Alloc& a) {
    uintptr_t end = a.ptr + a.bytes, data_end = a.data + a.data_len;
    for (uintptr_t p = a.data; p < a.ptr; ++p)
        if (*(unsigned char*)p != canary_byte(p))
            return strf("%zu bytes before the start of device allocation 0x%lx (%zu bytes) were overwritten",
                        (size_t)(a.ptr - p), (unsigned long)a.ptr, a.bytes);
    for (uintptr_t p = data_end; p > end; --p)
        if (*(unsigned char*)(p - 1) != canary_byte(p - 1))
            return strf("the %zu bytes past the end of device allocation 0x%lx (%zu bytes) were overwritten",
                        (size_t)(p - end), (unsigned long)a.ptr, a.bytes);
    for (const auto& [from, to] : a.gaps)
        for (uintptr_t p = from; p < to; ++p)
            if (*(unsigned char*)p != canary_byte(p))
                return strf("the guard gap at bytes [%zu, %zu) of device allocation 0x%lx (%zu bytes), between two "
                            "views, was overwritten at byte %zu (a view's neighbour wrote past its end)",
                            (size_t)(from - a.ptr), (size_t)(to - a.ptr), (unsigned long)a.ptr, a.bytes,
                            (size_t)(p - a.ptr));
    return "";
}

// Restores the canaries of the slack and the guard gaps.
void refill_canary(const Alloc& a) {
    fill_canary(a.data, a.ptr);
    fill_canary(a.ptr + a.bytes, a.data + a.data_len);
    for (const auto& [from, to] : a.gaps) fill_canary(from, to);
}

// The live allocation whose region contains addr (caller holds g_mem->mu).
const Alloc* find_region(uintptr_t addr) {
    auto it = g_mem->live.upper_bound(addr);
    if (it == g_mem->live.begin()) return nullptr;
    --it;
    const Alloc& a = it->second;
    return addr < a.region + a.region_len ? &a : nullptr;
}
const Alloc* find_quarantined(uintptr_t addr) {
    for (const Alloc& a : g_mem->quarantine)
        if (addr >= a.region && addr < a.region + a.region_len) return &a;
    return nullptr;
}

int check_range(uintptr_t addr, size_t n, const char* what, char* err, size_t errlen) {
    std::lock_guard<std::mutex> g(g_mem->mu);
    const Alloc* a = find_region(addr);
    if (!a || addr < a->ptr || addr > a->ptr + a->bytes) {
        set_err(err, errlen, "%s: 0x%lx is not a pointer into a live device allocation", what, (unsigned long)addr);
        return EMU_ERR_MEMORY;
    }
    if (n > a->ptr + a->bytes - addr) {
        set_err(err, errlen, "%s: %zu bytes at 0x%lx run %zu bytes past the end of device allocation 0x%lx (%zu bytes)",
                what, n, (unsigned long)addr, (size_t)(addr + n - (a->ptr + a->bytes)), (unsigned long)a->ptr, a->bytes);
        return EMU_ERR_MEMORY;
    }
    return EMU_OK;
}

// ------------------------------------------------------------------ context switch
#if defined(__x86_64__)
#define EMU_HAVE_ASM_SWITCH 1
// emu_ctx_switch(save, to): saves the callee-saved registers on the current
// stack, stores the stack pointer in *save and resumes the context whose
// stack pointer is `to`. MXCSR and the x87 control word are not switched:
// kernels cannot change rounding modes (ldmxcsr alone cost a third of the
// switch time).
__asm__(R"(
    .text
    .globl emu_ctx_switch
    .hidden emu_ctx_switch
    .type emu_ctx_switch,@function
    .p2align 4
emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    popq %rcx
    jmpq *%rcx
    .size emu_ctx_switch,.-emu_ctx_switch

    .globl emu_fiber_trampoline
    .hidden emu_fiber_trampoline
    .type emu_fiber_trampoline,@function
    .p2align 4
emu_fiber_trampoline:
    xorl %ebp, %ebp
    call emu_fiber_main
    ud2
    .size emu_fiber_trampoline,.-emu_fiber_trampoline
)");
extern "C" void emu_ctx_switch(void** save, void* to) EMU_HIDDEN;
extern "C" void emu_fiber_trampoline() EMU_HIDDEN;
#else
#define EMU_HAVE_ASM_SWITCH 0
#endif

// ------------------------------------------------------------------ workers
enum FiberState : uint8_t { F_READY, F_BAR, F_WARP, F_EXITED };

struct Fiber {
    void* sp;
    ucontext_t* uc;
    FiberState state;
    uint8_t bar_kind;
    uint8_t bar_pred;
    int op;
    uint32_t mask;
    int b;
    int width;
    uint64_t value;
    uint64_t result;
};

struct Job;

struct Worker {
    int id;
    pthread_t thread;
    // scheduler context
    void* sched_sp = nullptr;
    ucontext_t sched_uc;
    bool use_uc = false;
    sigjmp_buf jb;
    volatile sig_atomic_t in_fiber = 0;
    volatile int fault_sig = 0, fault_code = 0;
    volatile uintptr_t fault_addr = 0, fault_pc = 0;
    // fibers
    uintptr_t stacks = 0;       // kMaxThreads regions of EMU_STACK_SIZE
    uint32_t stacks_ready = 0;  // regions made read-write (guard page kept)
    std::vector<Fiber> fibers;
    std::vector<uint32_t> order;
    uint32_t n = 0, current = 0;
    EmuBlockBuiltins builtins;
    const EmuKernelDesc* kernel = nullptr;
    void** args = nullptr;
    Job* job = nullptr;
    // block outcome
    bool aborted = false;
    int err_code = 0;
    std::string err;
    // this module's TLS block on this thread
    unsigned char* tls_block = nullptr;
    size_t tls_filesz = 0, tls_memsz = 0;
    unsigned char* dyn = nullptr;
    bool dyn_guard = false;
    size_t dyn_open = (size_t)-1;  // bytes currently read-write
    void* altstack = nullptr;
    uint64_t seen_generation = 0;
    uintptr_t module_base = 0;
    RaceWorker race;
    // values of the last completed emu_warp_gather, per warp and lane
    uint64_t gathered[kMaxThreads];
    bool static_shared_poisoned = false;  // in this launch (run_block)
    // per warp: a number no other completed gather on this worker had (the
    // worker's count of gathers), and the wmma scratch tagged with the
    // gather it was computed for (emu_warp_wmma_scratch)
    uint64_t gathers_done = 0;
    uint64_t gather_id[kMaxThreads / 32] = {};
    uint64_t wmma_tag[kMaxThreads / 32] = {};
    float wmma_tile[kMaxThreads / 32][256];
};

struct Job {
    const EmuKernelDesc* k;
    void** args;
    uint32_t grid[3], block[3], shared;
    uint32_t order;
    bool ucontext;
    uint64_t seed;
    uint64_t total;
    std::atomic<uint64_t> next{0};
    std::atomic<bool> abort{false};
    std::mutex err_mu;
    int err_code = 0;
    std::string err;
    // hazard detection
    uint32_t checks = 0;
    uint64_t launch_tag = 0;
    std::vector<GlobalRange> ranges;
    uintptr_t g_lo = 0;
    size_t g_span = 0;
};

struct Pool {
    std::mutex mu;
    std::condition_variable start_cv, done_cv;
    uint64_t generation = 0;
    uint32_t running = 0;
    Job* job = nullptr;
    std::vector<Worker*> workers;
    std::mutex launch_mu;
    bool ready = false;
    std::string init_error;
};
Pool* g_pool = new Pool;
std::once_flag g_init_once;
// Read by the signal handler: written once before any worker runs.
Worker* g_worker_list[256];
std::atomic<int> g_worker_count{0};
struct sigaction g_old_actions[65];

Worker* worker_of(const EmuFiberPublic* self) { return (Worker*)self->worker; }

EmuFiberPublic* fiber_cb(Worker* w, uint32_t i) {
    uintptr_t base = w->stacks + (uintptr_t)i * EMU_STACK_SIZE;
    return (EmuFiberPublic*)(base + EMU_CB_OFFSET(base));
}

const char* op_name(int op) {
    switch (op) {
        case EMU_OP_SHFL_IDX: return "__shfl_sync";
        case EMU_OP_SHFL_UP: return "__shfl_up_sync";
        case EMU_OP_SHFL_DOWN: return "__shfl_down_sync";
        case EMU_OP_SHFL_XOR: return "__shfl_xor_sync";
        case EMU_OP_BALLOT: return "__ballot_sync";
        case EMU_OP_ALL: return "__all_sync";
        case EMU_OP_ANY: return "__any_sync";
        case EMU_OP_SYNCWARP: return "__syncwarp";
        case EMU_OP_MATCH_ANY: return "__match_any_sync";
        case EMU_OP_MATCH_ALL: return "__match_all_sync";
        case EMU_OP_REDUCE_ADD_U: return "__reduce_add_sync";
        case EMU_OP_REDUCE_MIN_U:
        case EMU_OP_REDUCE_MIN_I: return "__reduce_min_sync";
        case EMU_OP_REDUCE_MAX_U:
        case EMU_OP_REDUCE_MAX_I: return "__reduce_max_sync";
        case EMU_OP_REDUCE_AND: return "__reduce_and_sync";
        case EMU_OP_REDUCE_OR: return "__reduce_or_sync";
        case EMU_OP_REDUCE_XOR: return "__reduce_xor_sync";
        case EMU_OP_WMMA_LOAD: return "wmma::load_matrix_sync";
        case EMU_OP_WMMA_STORE: return "wmma::store_matrix_sync";
        case EMU_OP_WMMA_MMA: return "wmma::mma_sync";
    }
    return "warp collective";
}
const char* bar_name(int k) {
    switch (k) {
        case EMU_BAR_COUNT: return "__syncthreads_count";
        case EMU_BAR_AND: return "__syncthreads_and";
        case EMU_BAR_OR: return "__syncthreads_or";
    }
    return "__syncthreads";
}

std::string thread_name(Worker* w, uint32_t i) {
    const emu_uint3_& t = fiber_cb(w, i)->thread_idx;
    return strf("thread %u (threadIdx (%u,%u,%u))", i, t.x, t.y, t.z);
}
std::string block_name(Worker* w) {
    const emu_uint3_& b = w->builtins.block_idx;
    return strf("block (%u,%u,%u)", b.x, b.y, b.z);
}

// ------------------------------------------------------------------ fiber switching
inline void to_scheduler(Worker* w, Fiber& f) {
#if EMU_HAVE_ASM_SWITCH
    if (!w->use_uc) {
        emu_ctx_switch(&f.sp, w->sched_sp);
        return;
    }
#endif
    swapcontext(f.uc, &w->sched_uc);
}

inline void resume(Worker* w, uint32_t i) {
    Fiber& f = w->fibers[i];
    w->current = i;
    w->in_fiber = 1;
#if EMU_HAVE_ASM_SWITCH
    if (!w->use_uc) {
        emu_ctx_switch(&w->sched_sp, f.sp);
        w->in_fiber = 0;
        return;
    }
#endif
    swapcontext(&w->sched_uc, f.uc);
    w->in_fiber = 0;
}

// Called on a fiber: records a block error and leaves for good.
[[noreturn]] void fiber_fail(Worker* w, int code, const std::string& msg) {
    if (!w->aborted) {
        w->aborted = true;
        w->err_code = code;
        w->err = msg;
    }
    Fiber& f = w->fibers[w->current];
    f.state = F_EXITED;
    to_scheduler(w, f);
    __builtin_trap();  // never resumed
}

}  // namespace

extern "C" EMU_HIDDEN __attribute__((noreturn)) void emu_fiber_main() {
    const EmuFiberPublic* self = emu_self();
    Worker* w = worker_of(self);
    w->kernel->entry(w->args);
    Fiber& f = w->fibers[self->linear];
    f.state = F_EXITED;
    to_scheduler(w, f);
    __builtin_trap();
}

namespace {

void fiber_main_uc() { emu_fiber_main(); }

#include "race_check.h"

// Prepares fiber i (stack region i) to start the kernel at its next resume.
void init_fiber(Worker* w, uint32_t i) {
    Fiber& f = w->fibers[i];
    f.state = F_READY;
    uintptr_t region = w->stacks + (uintptr_t)i * EMU_STACK_SIZE;
    uintptr_t top = ((uintptr_t)fiber_cb(w, i) - 64) & ~(uintptr_t)15;
#if EMU_HAVE_ASM_SWITCH
    if (!w->use_uc) {
        // r15 r14 r13 r12 rbx rbp, then the "return address"; after the
        // `ret` the stack pointer is 16-byte aligned, as before a call.
        uint64_t* sp = (uint64_t*)(top - 56);
        for (int r = 0; r < 6; ++r) sp[r] = 0;
        sp[6] = (uint64_t)(uintptr_t)&emu_fiber_trampoline;
        f.sp = sp;
        return;
    }
#endif
    if (!f.uc) f.uc = new ucontext_t;
    getcontext(f.uc);
    f.uc->uc_stack.ss_sp = (void*)(region + EMU_STACK_GUARD);
    f.uc->uc_stack.ss_size = top - (region + EMU_STACK_GUARD);
    f.uc->uc_link = nullptr;
    makecontext(f.uc, fiber_main_uc, 0);
}

uint64_t splitmix(uint64_t& s) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// ------------------------------------------------------------------ warp collectives
bool is_shfl(int op) { return op >= EMU_OP_SHFL_IDX && op <= EMU_OP_SHFL_XOR; }

// Completes every warp collective whose named (existing, not exited) lanes
// have all arrived with the same operation and mask. Returns true on
// progress; records an error (w->aborted) on a semantic violation.
bool resolve_warps(Worker* w, uint32_t first_warp = 0, uint32_t end_warp = UINT32_MAX) {
    bool progress = false;
    const uint32_t nwarps = std::min((w->n + 31) / 32, end_warp);
    for (uint32_t wi = first_warp; wi < nwarps && !w->aborted; ++wi) {
        const uint32_t base = wi * 32, nl = std::min<uint32_t>(32, w->n - base);
        uint32_t exists = nl == 32 ? 0xffffffffu : ((1u << nl) - 1u);
        uint32_t exited = 0, waiting = 0;
        for (uint32_t l = 0; l < nl; ++l) {
            const Fiber& f = w->fibers[base + l];
            if (f.state == F_EXITED) exited |= 1u << l;
            if (f.state == F_WARP) waiting |= 1u << l;
        }
        uint32_t done = 0;
        for (uint32_t l = 0; l < nl; ++l) {
            if (!(waiting >> l & 1) || (done >> l & 1)) continue;
            const Fiber& f0 = w->fibers[base + l];
            const uint32_t group = f0.mask & exists & ~exited;
            bool complete = true;
            for (uint32_t g = 0; g < 32 && complete; ++g) {
                if (!(group >> g & 1)) continue;
                const Fiber& fg = w->fibers[base + g];
                if (fg.state != F_WARP || fg.op != f0.op || fg.mask != f0.mask) complete = false;
            }
            if (!complete) continue;
            if (f0.op >= EMU_OP_WMMA_LOAD && f0.op <= EMU_OP_WMMA_MMA) {
                // a gather (the wmma calls): the values go to w->gathered
                for (uint32_t g = 0; g < 32; ++g) {
                    const bool in = group >> g & 1;
                    w->gathered[base + g] = in ? w->fibers[base + g].value : 0;
                    if (in) {
                        w->fibers[base + g].result = 0;
                        w->fibers[base + g].state = F_READY;
                    }
                }
                w->gather_id[wi] = ++w->gathers_done;
                race_warp_sync(w, wi);
                done |= group;
                progress = true;
                continue;
            }
            // compute the results
            uint64_t agg_and = ~0ull, agg_or = 0, agg_xor = 0, agg_add = 0;
            uint64_t agg_minu = ~0ull, agg_maxu = 0;
            int64_t agg_mini = INT64_MAX, agg_maxi = INT64_MIN;
            uint32_t ballot = 0;
            bool all_same = true;
            for (uint32_t g = 0; g < 32; ++g) {
                if (!(group >> g & 1)) continue;
                const Fiber& fg = w->fibers[base + g];
                uint64_t v = fg.value;
                if (v) ballot |= 1u << g;
                agg_and &= v;
                agg_or |= v;
                agg_xor ^= v;
                agg_add += v;
                agg_minu = std::min(agg_minu, v);
                agg_maxu = std::max(agg_maxu, v);
                int64_t sv = (int32_t)(uint32_t)v;
                agg_mini = std::min(agg_mini, sv);
                agg_maxi = std::max(agg_maxi, sv);
                if (v != f0.value) all_same = false;
            }
            for (uint32_t g = 0; g < 32; ++g) {
                if (!(group >> g & 1)) continue;
                Fiber& fg = w->fibers[base + g];
                uint64_t r = 0;
                switch (fg.op) {
                    case EMU_OP_SHFL_IDX:
                    case EMU_OP_SHFL_UP:
                    case EMU_OP_SHFL_DOWN:
                    case EMU_OP_SHFL_XOR: {
                        // PTX shfl.sync: c = ((32 - width) << 8) | clamp
                        const int lane = (int)g;
                        const int segmask = (32 - fg.width) & 31;
                        const int bval = fg.b & 31;
                        const int clamp = fg.op == EMU_OP_SHFL_UP ? 0 : 31;
                        const int max_lane = (lane & segmask) | (clamp & ~segmask);
                        const int min_lane = lane & segmask;
                        int j;
                        bool pval;
                        switch (fg.op) {
                            case EMU_OP_SHFL_UP: j = lane - bval; pval = j >= max_lane; break;
                            case EMU_OP_SHFL_DOWN: j = lane + bval; pval = j <= max_lane; break;
                            case EMU_OP_SHFL_XOR: j = lane ^ bval; pval = j <= max_lane; break;
                            default: j = min_lane | (bval & ~segmask); pval = j <= max_lane; break;
                        }
                        if (!pval) j = lane;
                        if (!(group >> j & 1)) {
                            const char* why = !(exists >> j & 1)   ? "does not exist (partial warp)"
                                              : (exited >> j & 1)  ? "has exited"
                                                                   : "is not in the mask";
                            w->aborted = true;
                            w->err_code = EMU_ERR_SYNC;
                            w->err = strf("%s(mask=0x%08x): lane %d of warp %u (%s) reads lane %d, which %s: the "
                                          "value is undefined on a GPU",
                                          op_name(fg.op), fg.mask, lane, wi, thread_name(w, base + g).c_str(), j, why);
                            return false;
                        }
                        r = w->fibers[base + j].value;
                        break;
                    }
                    case EMU_OP_BALLOT: r = ballot; break;
                    case EMU_OP_ALL: r = ballot == group; break;
                    case EMU_OP_ANY: r = ballot != 0; break;
                    case EMU_OP_SYNCWARP: r = 0; break;
                    case EMU_OP_MATCH_ANY: {
                        uint32_t m = 0;
                        for (uint32_t h = 0; h < 32; ++h)
                            if ((group >> h & 1) && w->fibers[base + h].value == fg.value) m |= 1u << h;
                        r = m;
                        break;
                    }
                    case EMU_OP_MATCH_ALL: r = all_same ? group : 0; break;
                    case EMU_OP_REDUCE_ADD_U: r = (uint32_t)agg_add; break;
                    case EMU_OP_REDUCE_MIN_U: r = (uint32_t)agg_minu; break;
                    case EMU_OP_REDUCE_MAX_U: r = (uint32_t)agg_maxu; break;
                    case EMU_OP_REDUCE_MIN_I: r = (uint32_t)(int32_t)agg_mini; break;
                    case EMU_OP_REDUCE_MAX_I: r = (uint32_t)(int32_t)agg_maxi; break;
                    case EMU_OP_REDUCE_AND: r = (uint32_t)agg_and; break;
                    case EMU_OP_REDUCE_OR: r = (uint32_t)agg_or; break;
                    case EMU_OP_REDUCE_XOR: r = (uint32_t)agg_xor; break;
                    default: break;
                }
                fg.result = r;
            }
            for (uint32_t g = 0; g < 32; ++g)
                if (group >> g & 1) w->fibers[base + g].state = F_READY;
            race_warp_sync(w, wi);
            done |= group;
            progress = true;
        }
    }
    return progress;
}

// No fiber can run and no collective can complete: say why.
void diagnose_deadlock(Worker* w) {
    const uint32_t nwarps = (w->n + 31) / 32;
    for (uint32_t wi = 0; wi < nwarps; ++wi) {
        const uint32_t base = wi * 32, nl = std::min<uint32_t>(32, w->n - base);
        for (uint32_t l = 0; l < nl; ++l) {
            const Fiber& f0 = w->fibers[base + l];
            if (f0.state != F_WARP) continue;
            std::vector<uint32_t> arrived, at_bar, elsewhere;
            std::string other;
            for (uint32_t g = 0; g < nl; ++g) {
                if (!(f0.mask >> g & 1)) continue;
                const Fiber& fg = w->fibers[base + g];
                if (fg.state == F_WARP && fg.op == f0.op && fg.mask == f0.mask) arrived.push_back(g);
                else if (fg.state == F_BAR) at_bar.push_back(g);
                else if (fg.state == F_WARP) {
                    elsewhere.push_back(g);
                    if (other.empty()) other = strf("%s(mask=0x%08x)", op_name(fg.op), fg.mask);
                }
            }
            std::string msg = strf("divergent warp collective in warp %u: %s(mask=0x%08x) was reached by lanes %s", wi,
                                   op_name(f0.op), f0.mask, ranges(arrived).c_str());
            if (!at_bar.empty())
                msg += strf("; lanes %s named in the mask wait at __syncthreads() instead", ranges(at_bar).c_str());
            if (!elsewhere.empty())
                msg += strf("; lanes %s named in the mask wait at %s instead", ranges(elsewhere).c_str(), other.c_str());
            msg += " (a full-mask collective in divergent code?)";
            w->aborted = true;
            w->err_code = EMU_ERR_SYNC;
            w->err = msg;
            return;
        }
    }
    w->aborted = true;
    w->err_code = EMU_ERR_SYNC;
    w->err = "deadlock: no thread can proceed";
}

// All fibers are blocked or exited and no collective completed.
// Returns true when the block has finished.
bool resolve_barrier(Worker* w) {
    uint32_t n_exit = 0, n_bar = 0, n_warp = 0;
    for (uint32_t i = 0; i < w->n; ++i) {
        switch (w->fibers[i].state) {
            case F_EXITED: ++n_exit; break;
            case F_BAR: ++n_bar; break;
            case F_WARP: ++n_warp; break;
            default: break;
        }
    }
    if (n_warp) {
        diagnose_deadlock(w);
        return false;
    }
    if (n_bar == 0) return true;  // everyone exited
    if (n_exit) {
        std::vector<uint32_t> at, gone;
        int kind = -1;
        for (uint32_t i = 0; i < w->n; ++i) {
            if (w->fibers[i].state == F_BAR) {
                at.push_back(i);
                if (kind < 0) kind = w->fibers[i].bar_kind;
            } else {
                gone.push_back(i);
            }
        }
        w->aborted = true;
        w->err_code = EMU_ERR_SYNC;
        w->err = strf("%s() reached by threads %s after threads %s had exited (a barrier after an early return "
                      "deadlocks or misbehaves on a GPU)",
                      bar_name(kind), ranges(at).c_str(), ranges(gone).c_str());
        return false;
    }
    const int kind = w->fibers[0].bar_kind;
    uint32_t count = 0;
    for (uint32_t i = 0; i < w->n; ++i) {
        const Fiber& f = w->fibers[i];
        if (f.bar_kind != kind) {
            w->aborted = true;
            w->err_code = EMU_ERR_SYNC;
            w->err = strf("threads of one block wait at different barrier kinds: %s at thread 0, %s at %s",
                          bar_name(kind), bar_name(f.bar_kind), thread_name(w, i).c_str());
            return false;
        }
        count += f.bar_pred;
    }
    uint64_t r = 0;
    switch (kind) {
        case EMU_BAR_COUNT: r = count; break;
        case EMU_BAR_AND: r = count == w->n; break;
        case EMU_BAR_OR: r = count != 0; break;
    }
    for (uint32_t i = 0; i < w->n; ++i) {
        w->fibers[i].result = r;
        w->fibers[i].state = F_READY;
    }
    race_barrier(w);
    return false;
}

// ------------------------------------------------------------------ faults
std::string describe_fault(Worker* w) {
    const uintptr_t addr = w->fault_addr;
    const int sig = w->fault_sig;
    std::string who = thread_name(w, w->current);
    if (sig == SIGFPE)
        return strf("%s: arithmetic exception (%s)", who.c_str(),
                    w->fault_code == FPE_INTDIV ? "integer division by zero" : w->fault_code == FPE_INTOVF ? "integer overflow" : "SIGFPE");
    if (sig == SIGILL) return strf("%s: illegal instruction at pc 0x%lx", who.c_str(), (unsigned long)w->fault_pc);
    // stack guard of one of this worker's fibers?
    if (addr >= w->stacks && addr < w->stacks + (uintptr_t)kMaxThreads * EMU_STACK_SIZE) {
        uintptr_t off = (addr - w->stacks) % EMU_STACK_SIZE;
        if (off < EMU_STACK_GUARD)
            return strf("%s: stack overflow (fiber stacks hold %u KiB)", who.c_str(), (EMU_STACK_SIZE - EMU_STACK_GUARD) / 1024 - 64);
    }
    if (w->dyn && addr >= (uintptr_t)w->dyn && addr < (uintptr_t)w->dyn + emu_dynamic_smem_bytes + kPage)
        return strf("%s: out-of-bounds dynamic shared memory access at byte offset %zu (the launch has %u bytes of "
                    "dynamic shared memory)",
                    who.c_str(), (size_t)(addr - (uintptr_t)w->dyn), w->job->shared);
    std::lock_guard<std::mutex> g(g_mem->mu);
    if (const Alloc* a = find_region(addr)) {
        if (addr >= a->ptr + a->bytes)
            return strf("%s: out-of-bounds access to address 0x%lx, %zu bytes past the end of device allocation "
                        "0x%lx (%zu bytes)",
                        who.c_str(), (unsigned long)addr, (size_t)(addr - (a->ptr + a->bytes)), (unsigned long)a->ptr,
                        a->bytes);
        return strf("%s: out-of-bounds access to address 0x%lx, %zu bytes before the start of device allocation "
                    "0x%lx (%zu bytes)",
                    who.c_str(), (unsigned long)addr, (size_t)(a->ptr - addr), (unsigned long)a->ptr, a->bytes);
    }
    if (const Alloc* a = find_quarantined(addr))
        return strf("%s: use after free: address 0x%lx lies in device allocation 0x%lx (%zu bytes), which was freed",
                    who.c_str(), (unsigned long)addr, (unsigned long)a->ptr, a->bytes);
    // Just below the fiber stacks: an overflow past the lowest stack's guard.
    // Checked after the device allocations, which the OS may map right
    // below the stacks (an underrun there is the allocation's, not a stack's).
    if (addr < w->stacks && addr + EMU_STACK_SIZE >= w->stacks)
        return strf("%s: stack overflow (fiber stacks hold %u KiB)", who.c_str(), (EMU_STACK_SIZE - EMU_STACK_GUARD) / 1024 - 64);
    if (addr < 65536) return strf("%s: null pointer access (address 0x%lx)", who.c_str(), (unsigned long)addr);
    return strf("%s: invalid memory access at address 0x%lx (not in any device allocation)", who.c_str(),
                (unsigned long)addr);
}

Worker* current_worker_for_signal() {
    pthread_t self = pthread_self();
    int n = g_worker_count.load(std::memory_order_acquire);
    for (int i = 0; i < n; ++i)
        if (pthread_equal(g_worker_list[i]->thread, self)) return g_worker_list[i];
    return nullptr;
}

void on_signal(int sig, siginfo_t* si, void* ctx) {
    Worker* w = current_worker_for_signal();
    if (w && w->in_fiber) {
        w->fault_sig = sig;
        w->fault_code = si->si_code;
        w->fault_addr = (uintptr_t)si->si_addr;
#if defined(__x86_64__)
        w->fault_pc = (uintptr_t)((ucontext_t*)ctx)->uc_mcontext.gregs[REG_RIP];
#endif
        w->in_fiber = 0;
        siglongjmp(w->jb, 1);
    }
    // Not ours: hand over to whoever was installed before.
    struct sigaction& old = g_old_actions[sig];
    if (old.sa_flags & SA_SIGINFO) {
        old.sa_sigaction(sig, si, ctx);
        return;
    }
    if (old.sa_handler == SIG_IGN || old.sa_handler == SIG_DFL) {
        signal(sig, SIG_DFL);  // the fault repeats and takes the default action
        return;
    }
    old.sa_handler(sig);
}

// ------------------------------------------------------------------ running blocks
// Warp-ahead orders: runs warp wi as far as it can go on its own -- its
// lanes until they block, then its completed collectives, again and again --
// before the scheduler moves to the next warp. Returns true if the block
// aborted; sets any_ready if a lane yielded in __nanosleep.
bool run_warp_ahead(Worker* w, uint32_t wi, bool reverse, bool& any_ready) {
    const uint32_t base = wi * 32, nl = std::min<uint32_t>(32, w->n - base);
    for (;;) {
        bool slept = false;
        for (uint32_t k = 0; k < nl; ++k) {
            const uint32_t i = base + (reverse ? nl - 1 - k : k);
            if (w->fibers[i].state != F_READY) continue;
            resume(w, i);
            if (w->aborted) return true;
            slept |= w->fibers[i].state == F_READY;
        }
        if (resolve_warps(w, wi, wi + 1)) continue;
        if (w->aborted) return true;
        any_ready |= slept;
        return false;
    }
}

void run_block(Worker* w, uint64_t b) {
    Job* j = w->job;
    const uint32_t gx = j->grid[0], gy = j->grid[1];
    w->builtins.block_idx = {(uint32_t)(b % gx), (uint32_t)((b / gx) % gy), (uint32_t)(b / ((uint64_t)gx * gy))};
    const uint32_t bx = j->block[0], by = j->block[1];
    const uint32_t n = w->n;
    // poison shared memory (static: only for kernels whose file declares some;
    // it is every kernel's static shared memory at once, ~0.5 MB, so with the
    // hazard detector off only a worker's first block of a launch pays it:
    // later blocks start from the earlier blocks' values, not from poison)
    if (w->tls_block && w->tls_memsz > w->tls_filesz && (j->k->flags & EMU_FLAG_STATIC_SHARED) &&
        (j->checks || !w->static_shared_poisoned)) {
        memset(w->tls_block + w->tls_filesz, kPoison, w->tls_memsz - w->tls_filesz);
        w->static_shared_poisoned = true;
    }
    if (w->dyn && j->shared) memset(w->dyn, kPoison, w->dyn_guard ? round_up(j->shared, kPage) : j->shared);
    for (uint32_t i = 0; i < n; ++i) {
        EmuFiberPublic* cb = fiber_cb(w, i);
        cb->thread_idx = {i % bx, (i / bx) % by, i / (bx * by)};
        cb->linear = i;
        cb->builtins = &w->builtins;
        cb->worker = w;
        init_fiber(w, i);
    }
    // thread order
    w->order.resize(n);
    for (uint32_t i = 0; i < n; ++i) w->order[i] = j->order == 1 || j->order == 4 ? n - 1 - i : i;
    if (j->order == 2) {
        uint64_t s = j->seed ^ (b * 0xD1B54A32D192ED03ull);
        for (uint32_t i = n - 1; i > 0; --i) {
            uint32_t k = (uint32_t)(splitmix(s) % (i + 1));
            std::swap(w->order[i], w->order[k]);
        }
    }
    w->aborted = false;
    race_block_start(w, b);
    const bool warp_ahead = j->order == 3 || j->order == 4;
    const uint32_t nwarps = (n + 31) / 32;
    if (sigsetjmp(w->jb, 1)) {
        // a fault inside kernel code
        w->aborted = true;
        w->err_code = EMU_ERR_FAULT;
        w->err = describe_fault(w);
        return;
    }
    for (;;) {
        bool any_ready = false;
        if (warp_ahead) {
            for (uint32_t k = 0; k < nwarps; ++k)
                if (run_warp_ahead(w, j->order == 4 ? nwarps - 1 - k : k, j->order == 4, any_ready)) return;
        } else {
            for (uint32_t idx = 0; idx < n; ++idx) {
                const uint32_t i = w->order[idx];
                if (w->fibers[i].state != F_READY) continue;
                resume(w, i);
                if (w->aborted) return;
                any_ready |= w->fibers[i].state == F_READY;  // __nanosleep
            }
        }
        if (resolve_warps(w)) continue;
        if (w->aborted) return;
        if (any_ready) continue;
        if (resolve_barrier(w)) return;
        if (w->aborted) return;
    }
}

bool ensure_stacks(Worker* w, uint32_t n, std::string& err) {
    while (w->stacks_ready < n) {
        uintptr_t r = w->stacks + (uintptr_t)w->stacks_ready * EMU_STACK_SIZE;
        if (mprotect((void*)(r + EMU_STACK_GUARD), EMU_STACK_SIZE - EMU_STACK_GUARD, PROT_READ | PROT_WRITE) != 0) {
            err = strf("mprotect of a fiber stack failed: %s", strerror(errno));
            return false;
        }
        ++w->stacks_ready;
    }
    return true;
}

void run_job(Worker* w, Job* j) {
    w->job = j;
    w->kernel = j->k;
    w->args = j->args;
    w->use_uc = j->ucontext || !EMU_HAVE_ASM_SWITCH;
    w->builtins.block_dim = {j->block[0], j->block[1], j->block[2]};
    w->builtins.grid_dim = {j->grid[0], j->grid[1], j->grid[2]};
    w->n = j->block[0] * j->block[1] * j->block[2];
    std::string err;
    if (!ensure_stacks(w, w->n, err)) {
        std::lock_guard<std::mutex> g(j->err_mu);
        if (!j->err_code) {
            j->err_code = EMU_ERR_OOM;
            j->err = err;
        }
        j->abort = true;
        return;
    }
    // Dynamic shared memory beyond the launch's size (rounded to pages) is
    // PROT_NONE, so an overrun faults.
    if (w->dyn_guard) {
        size_t open = round_up(j->shared, kPage);
        if (open != w->dyn_open) {
            mprotect(w->dyn, open, PROT_READ | PROT_WRITE);
            mprotect(w->dyn + open, emu_dynamic_smem_bytes + kPage - open, PROT_NONE);
            w->dyn_open = open;
        }
    }
    w->static_shared_poisoned = false;
    RaceWorker& r = w->race;
    r.checks = j->checks;
    r.launch_tag = j->launch_tag << 48;
    r.ranges = j->ranges.data();
    r.n_ranges = j->ranges.size();
    r.g_lo = j->g_lo;
    r.g_span = j->g_span;
    while (!j->abort.load(std::memory_order_relaxed)) {
        uint64_t b = j->next.fetch_add(1);
        if (b >= j->total) break;
        run_block(w, b);
        if (w->aborted) {
            std::lock_guard<std::mutex> g(j->err_mu);
            if (!j->err_code) {
                j->err_code = w->err_code;
                j->err = strf("%s: %s", block_name(w).c_str(), w->err.c_str());
            }
            j->abort = true;
            break;
        }
    }
}

int find_own_tls(dl_phdr_info* info, size_t, void* data) {
    Worker* w = (Worker*)data;
    if ((uintptr_t)info->dlpi_addr != w->module_base) return 0;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        if (info->dlpi_phdr[i].p_type != PT_TLS) continue;
        w->tls_block = (unsigned char*)info->dlpi_tls_data;
        w->tls_filesz = info->dlpi_phdr[i].p_filesz;
        w->tls_memsz = info->dlpi_phdr[i].p_memsz;
        return 1;
    }
    return 0;
}

void worker_main(Worker* w) {
    // An alternate signal stack, so a fiber's stack overflow can be reported.
    stack_t ss;
    ss.ss_size = 64 * 1024;
    ss.ss_sp = w->altstack = mmap(nullptr, ss.ss_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ss.ss_flags = 0;
    if (ss.ss_sp != MAP_FAILED) sigaltstack(&ss, nullptr);
    // Touch this module's TLS so it exists on this thread, then find it.
    w->dyn = emu_dynamic_smem;
    w->dyn[0] = 0;
    Dl_info di;
    if (dladdr((void*)&emu_fiber_main, &di)) {
        w->module_base = (uintptr_t)di.dli_fbase;
        dl_iterate_phdr(find_own_tls, w);
    }
    if (w->tls_block && !((uintptr_t)w->dyn >= (uintptr_t)w->tls_block &&
                          (uintptr_t)w->dyn + emu_dynamic_smem_bytes <= (uintptr_t)w->tls_block + w->tls_filesz)) {
        // Unexpected layout: static shared memory cannot be told apart.
        w->tls_block = nullptr;
    }
    w->dyn_guard = ((uintptr_t)w->dyn & (kPage - 1)) == 0;
    if (w->tls_block) {
        // Shadow of all shared memory (one SmemShadow per 4 bytes), backed lazily.
        const size_t len = w->tls_memsz / 4 * sizeof(SmemShadow);
        void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m != MAP_FAILED) {
            w->race.shadow = (SmemShadow*)m;
            w->race.smem_lo = (uintptr_t)w->tls_block;
            w->race.smem_len = w->tls_memsz / 4 * 4;
        }
    }
    for (;;) {
        Job* j;
        {
            std::unique_lock<std::mutex> lk(g_pool->mu);
            g_pool->start_cv.wait(lk, [&] { return g_pool->generation != w->seen_generation; });
            w->seen_generation = g_pool->generation;
            j = g_pool->job;
        }
        run_job(w, j);
        {
            std::lock_guard<std::mutex> lk(g_pool->mu);
            if (--g_pool->running == 0) g_pool->done_cv.notify_all();
        }
    }
}

void do_init(uint32_t n_workers) {
    if (n_workers == 0) n_workers = 1;
    if (n_workers > 64) n_workers = 64;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL}) sigaction(sig, &sa, &g_old_actions[sig]);
    for (uint32_t i = 0; i < n_workers; ++i) {
        Worker* w = new Worker;
        w->id = (int)i;
        w->fibers.assign(kMaxThreads, Fiber{});
        // kMaxThreads stack regions aligned to EMU_STACK_SIZE, PROT_NONE until used.
        size_t len = (size_t)(kMaxThreads + 1) * EMU_STACK_SIZE;
        void* m = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) {
            g_pool->init_error = strf("cannot reserve fiber stacks: %s", strerror(errno));
            return;
        }
        w->stacks = round_up((uintptr_t)m, EMU_STACK_SIZE);
        g_pool->workers.push_back(w);
    }
    // Publish the workers to the signal handler before they run anything.
    std::vector<std::thread> threads;
    std::mutex started_mu;
    std::condition_variable started_cv;
    uint32_t started = 0;
    for (Worker* w : g_pool->workers) {
        std::thread t([w, &started_mu, &started_cv, &started] {
            w->thread = pthread_self();
            {
                std::lock_guard<std::mutex> g(started_mu);
                g_worker_list[w->id] = w;
                ++started;
                started_cv.notify_all();
            }
            worker_main(w);
        });
        t.detach();
    }
    {
        std::unique_lock<std::mutex> lk(started_mu);
        started_cv.wait(lk, [&] { return started == g_pool->workers.size(); });
    }
    g_worker_count.store((int)g_pool->workers.size(), std::memory_order_release);
    g_pool->ready = true;
}

// ------------------------------------------------------------------ API
int api_init(uint32_t n_workers, char* err, size_t errlen) {
    std::call_once(g_init_once, [&] { do_init(n_workers); });
    if (!g_pool->ready) {
        set_err(err, errlen, "emulator runtime failed to start: %s", g_pool->init_error.c_str());
        return EMU_ERR_INIT;
    }
    return EMU_OK;
}

uint32_t api_n_workers() { return (uint32_t)g_pool->workers.size(); }

int api_alloc(size_t bytes, uint64_t* out, char* err, size_t errlen) {
    const size_t rounded = round_up(bytes, 16);
    const size_t data_len = round_up(rounded, kPage);
    const size_t region_len = data_len + 2 * kGuard;
    void* m = mmap(nullptr, region_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        set_err(err, errlen, "out of memory: mmap of %zu bytes failed: %s", region_len, strerror(errno));
        return EMU_ERR_OOM;
    }
    Alloc a;
    a.region = (uintptr_t)m;
    a.region_len = region_len;
    a.data = a.region + kGuard;
    a.data_len = data_len;
    a.ptr = a.data + data_len - rounded;
    a.bytes = bytes;
    a.freed = false;
    if (data_len && mprotect((void*)a.data, data_len, PROT_READ | PROT_WRITE) != 0) {
        munmap(m, region_len);
        set_err(err, errlen, "out of memory: mprotect failed: %s (too many mappings? vm.max_map_count)", strerror(errno));
        return EMU_ERR_OOM;
    }
    fill_canary(a.data, a.ptr);
    memset((void*)a.ptr, kPoison, bytes);
    fill_canary(a.ptr + bytes, a.data + data_len);
    {
        std::lock_guard<std::mutex> g(g_mem->mu);
        g_mem->live[a.region] = a;
    }
    *out = a.ptr;
    return EMU_OK;
}

int api_free(uint64_t ptr, char* err, size_t errlen) {
    Alloc a;
    {
        std::lock_guard<std::mutex> g(g_mem->mu);
        const Alloc* f = find_region(ptr);
        if (!f || f->ptr != ptr) {
            if (find_quarantined(ptr)) set_err(err, errlen, "free: 0x%lx was already freed", (unsigned long)ptr);
            else set_err(err, errlen, "free: 0x%lx is not a device allocation", (unsigned long)ptr);
            return EMU_ERR_MEMORY;
        }
        a = *f;
        g_mem->live.erase(a.region);
    }
    std::string c = check_canary(a);
    mprotect((void*)a.region, a.region_len, PROT_NONE);
    if (a.shadow) munmap(a.shadow, a.data_len / 4 * sizeof(uint64_t));
    a.shadow = nullptr;
    std::lock_guard<std::mutex> g(g_mem->mu);
    a.freed = true;
    g_mem->quarantine.push_back(a);
    g_mem->quarantine_bytes += a.region_len;
    while (g_mem->quarantine.size() > 4096 || g_mem->quarantine_bytes > (size_t)4 << 30) {
        const Alloc& o = g_mem->quarantine.front();
        munmap((void*)o.region, o.region_len);
        g_mem->quarantine_bytes -= o.region_len;
        g_mem->quarantine.pop_front();
    }
    if (!c.empty()) {
        set_err(err, errlen, "free: out-of-bounds write found: %s", c.c_str());
        return EMU_ERR_FAULT;
    }
    return EMU_OK;
}

int api_htod(uint64_t dst, const void* src, size_t n, char* err, size_t errlen) {
    if (int e = check_range(dst, n, "host-to-device copy", err, errlen)) return e;
    if (n) memcpy((void*)dst, src, n);
    return EMU_OK;
}
int api_dtoh(void* dst, uint64_t src, size_t n, char* err, size_t errlen) {
    if (int e = check_range(src, n, "device-to-host copy", err, errlen)) return e;
    if (n) memcpy(dst, (const void*)src, n);
    return EMU_OK;
}
int api_dtod(uint64_t dst, uint64_t src, size_t n, char* err, size_t errlen) {
    if (int e = check_range(src, n, "device-to-device copy (source)", err, errlen)) return e;
    if (int e = check_range(dst, n, "device-to-device copy (destination)", err, errlen)) return e;
    if (n) memmove((void*)dst, (const void*)src, n);
    return EMU_OK;
}
int api_memset(uint64_t dst, int byte, size_t n, char* err, size_t errlen) {
    if (int e = check_range(dst, n, "memset", err, errlen)) return e;
    if (n) memset((void*)dst, byte, n);
    return EMU_OK;
}
int api_alloc_info(uint64_t addr, uint64_t* base, uint64_t* bytes) {
    std::lock_guard<std::mutex> g(g_mem->mu);
    const Alloc* a = find_region(addr);
    if (!a || addr < a->ptr || addr > a->ptr + a->bytes) return 0;
    *base = a->ptr;
    *bytes = a->bytes;
    return 1;
}
uint64_t api_live_allocations() {
    std::lock_guard<std::mutex> g(g_mem->mu);
    return g_mem->live.size();
}
int api_guard_gap(uint64_t ptr, size_t n, char* err, size_t errlen) {
    std::lock_guard<std::mutex> g(g_mem->mu);
    const Alloc* f = find_region(ptr);
    if (!f || ptr < f->ptr || ptr + n > f->ptr + f->bytes) {
        set_err(err, errlen, "guard gap: [0x%lx, +%zu) is not inside a live device allocation", (unsigned long)ptr, n);
        return EMU_ERR_MEMORY;
    }
    Alloc& a = g_mem->live[f->region];
    a.gaps.emplace_back(ptr, ptr + n);
    fill_canary(ptr, ptr + n);
    return EMU_OK;
}

const char* kind_name(uint32_t k) {
    switch (k) {
        case EMU_KIND_PTR: return "pointer";
        case EMU_KIND_I32: return "int32";
        case EMU_KIND_U32: return "uint32";
        case EMU_KIND_I64: return "int64";
        case EMU_KIND_U64: return "uint64";
        case EMU_KIND_F32: return "float";
        case EMU_KIND_F64: return "double";
    }
    return "value";
}

int api_launch(const EmuLaunch* l, char* err, size_t errlen) {
    if (!g_pool->ready) {
        set_err(err, errlen, "emulator runtime not initialised");
        return EMU_ERR_INIT;
    }
    if (l->kernel >= emu_kernel_table_len) {
        set_err(err, errlen, "no kernel with index %u", l->kernel);
        return EMU_ERR_UNKNOWN_KERNEL;
    }
    const EmuKernelDesc* k = &emu_kernel_table[l->kernel];
    const uint32_t* b = l->block;
    const uint32_t* g = l->grid;
    const uint64_t threads = (uint64_t)b[0] * b[1] * b[2];
    if (!b[0] || !b[1] || !b[2] || !g[0] || !g[1] || !g[2]) {
        set_err(err, errlen, "%s: invalid launch: grid (%u,%u,%u) and block (%u,%u,%u) must be at least 1 in every dimension",
                k->name, g[0], g[1], g[2], b[0], b[1], b[2]);
        return EMU_ERR_CONFIG;
    }
    if (b[0] > 1024 || b[1] > 1024 || b[2] > 64 || threads > kMaxThreads) {
        set_err(err, errlen, "%s: invalid launch: block (%u,%u,%u) has %lu threads; the maximum is 1024 (x, y <= 1024, z <= 64)",
                k->name, b[0], b[1], b[2], (unsigned long)threads);
        return EMU_ERR_CONFIG;
    }
    if (g[0] > 0x7fffffffu || g[1] > 65535 || g[2] > 65535) {
        set_err(err, errlen, "%s: invalid launch: grid (%u,%u,%u) exceeds (2^31-1, 65535, 65535)", k->name, g[0], g[1], g[2]);
        return EMU_ERR_CONFIG;
    }
    if (l->shared_bytes > EMU_MAX_SHARED_BYTES) {
        set_err(err, errlen, "%s: invalid launch: %u bytes of dynamic shared memory requested; the maximum is %u (227 KiB)",
                k->name, l->shared_bytes, EMU_MAX_SHARED_BYTES);
        return EMU_ERR_CONFIG;
    }
    if (l->n_args != k->n_args) {
        set_err(err, errlen, "%s: %u arguments given, the kernel takes %u (%s)", k->name, l->n_args, k->n_args, k->params);
        return EMU_ERR_ARGS;
    }
    for (uint32_t i = 0; i < k->n_args; ++i) {
        if (l->arg_sizes[i] != k->arg_sizes[i]) {
            set_err(err, errlen, "%s: argument %u (%s) is %u bytes, the kernel expects %u (%s)", k->name, i,
                    k->arg_names[i], l->arg_sizes[i], k->arg_sizes[i], kind_name(k->arg_kinds[i]));
            return EMU_ERR_ARGS;
        }
    }
    std::lock_guard<std::mutex> launch_guard(g_pool->launch_mu);
    // Pointer arguments must point into live allocations (or be null).
    std::vector<Alloc> touched;
    {
        std::lock_guard<std::mutex> mg(g_mem->mu);
        for (uint32_t i = 0; i < k->n_args; ++i) {
            if (k->arg_kinds[i] != EMU_KIND_PTR) continue;
            uint64_t p;
            memcpy(&p, l->args[i], 8);
            if (p == 0) continue;
            const Alloc* a = find_region(p);
            if (!a || p < a->ptr || p > a->ptr + a->bytes) {
                const Alloc* q = find_quarantined(p);
                set_err(err, errlen, "%s: argument %u (%s) = 0x%lx is not a pointer into a live device allocation%s", k->name, i,
                        k->arg_names[i], (unsigned long)p, q ? " (it points into a freed one)" : "");
                return EMU_ERR_ARGS;
            }
            bool seen = false;
            for (const Alloc& t : touched) seen |= t.region == a->region;
            if (seen) continue;
            if ((l->checks & kCheckGlobal) && !a->shadow && a->data_len) {
                // Global-memory shadow, made on first use; untouched pages stay unbacked.
                void* m = mmap(nullptr, a->data_len / 4 * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
                if (m != MAP_FAILED) g_mem->live[a->region].shadow = (uint64_t*)m;
            }
            touched.push_back(*a);
        }
    }
    Job j;
    j.k = k;
    j.args = const_cast<void**>(l->args);
    memcpy(j.grid, l->grid, sizeof j.grid);
    memcpy(j.block, l->block, sizeof j.block);
    j.shared = l->shared_bytes;
    j.order = l->order;
    j.seed = l->seed;
    j.ucontext = l->use_ucontext != 0;
    j.total = (uint64_t)g[0] * g[1] * g[2];
    j.checks = l->checks & (kCheckShared | kCheckGlobal);
    if (j.checks & kCheckGlobal) {
        static uint64_t launch_tag = 0;  // under launch_mu
        if (++launch_tag > 0xffff) {
            // The tag wrapped: old shadow entries could look current.
            launch_tag = 1;
            std::lock_guard<std::mutex> mg(g_mem->mu);
            for (auto& [base, a] : g_mem->live)
                if (a.shadow) madvise(a.shadow, a.data_len / 4 * sizeof(uint64_t), MADV_DONTNEED);
        }
        j.launch_tag = launch_tag;
        uintptr_t lo = UINTPTR_MAX, hi = 0;
        for (const Alloc& a : touched) {
            if (!a.shadow) continue;
            j.ranges.push_back({a.data, a.data_len, a.shadow, a.ptr, a.bytes});
            lo = std::min(lo, a.data);
            hi = std::max(hi, a.data + a.data_len);
        }
        if (hi > lo) {
            j.g_lo = lo;
            j.g_span = hi - lo;
        }
    }
    if (j.checks) g_race_live.fetch_add(1);
    {
        std::unique_lock<std::mutex> lk(g_pool->mu);
        g_pool->job = &j;
        g_pool->running = (uint32_t)g_pool->workers.size();
        ++g_pool->generation;
        g_pool->start_cv.notify_all();
        g_pool->done_cv.wait(lk, [] { return g_pool->running == 0; });
        g_pool->job = nullptr;
    }
    if (j.checks) g_race_live.fetch_sub(1);
    if (j.err_code) {
        set_err(err, errlen, "%s: %s", k->name, race_symbolize(j.err).c_str());
        return j.err_code;
    }
    for (const Alloc& a : touched) {
        std::string c = check_canary(a);
        if (!c.empty()) {
            refill_canary(a);
            set_err(err, errlen, "%s: out-of-bounds write found after the launch: %s", k->name, c.c_str());
            return EMU_ERR_FAULT;
        }
    }
    return EMU_OK;
}

EmuApi g_api = {
    EMU_API_VERSION,
    0,
    nullptr,
#if EMU_HAVE_ASM_SWITCH
    "x86-64 fibers",
#else
    "ucontext fibers",
#endif
    api_init,
    api_n_workers,
    api_alloc,
    api_free,
    api_htod,
    api_dtoh,
    api_dtod,
    api_memset,
    api_launch,
    api_alloc_info,
    api_live_allocations,
    api_guard_gap,
};

}  // namespace

// ------------------------------------------------------------------ kernel-side entry points
extern "C" int emu_syncthreads(int kind, int predicate) {
    const EmuFiberPublic* self = emu_self();
    Worker* w = worker_of(self);
    Fiber& f = w->fibers[self->linear];
    f.state = F_BAR;
    f.bar_kind = (uint8_t)kind;
    f.bar_pred = predicate != 0;
    to_scheduler(w, f);
    return (int)f.result;
}

extern "C" uint64_t emu_warp_op(int op, unsigned int mask, uint64_t value, int b, int width, int value_bytes) {
    (void)value_bytes;
    const EmuFiberPublic* self = emu_self();
    Worker* w = worker_of(self);
    const uint32_t i = self->linear, lane = i & 31;
    if (!(mask >> lane & 1))
        fiber_fail(w, EMU_ERR_SYNC,
                   strf("%s: %s(mask=0x%08x) called by lane %u of warp %u, which is missing from its own mask (mask "
                        "lanes: %s)",
                        thread_name(w, i).c_str(), op_name(op), mask, lane, i / 32, mask_ranges(mask).c_str()));
    if (is_shfl(op) && (width < 1 || width > 32 || (width & (width - 1))))
        fiber_fail(w, EMU_ERR_SYNC,
                   strf("%s: %s with width %d: the width must be a power of two from 1 to 32", thread_name(w, i).c_str(),
                        op_name(op), width));
    Fiber& f = w->fibers[i];
    f.state = F_WARP;
    f.op = op;
    f.mask = mask;
    f.b = b;
    f.width = width;
    f.value = value;
    to_scheduler(w, f);
    return f.result;
}

// The next gather of this warp cannot complete before this lane arrives at
// it, so w->gathered still holds this one's values when the lane resumes.
extern "C" void emu_warp_gather(int op, unsigned int mask, uint64_t value, uint64_t out[32]) {
    (void)emu_warp_op(op, mask, value, 0, 32, 8);
    const EmuFiberPublic* self = emu_self();
    Worker* w = worker_of(self);
    memcpy(out, &w->gathered[self->linear & ~31u], 32 * sizeof(uint64_t));
}

// The calling warp's 256-float scratch for the gather it last completed:
// *first is 1 for the first lane to ask after that gather (it fills the
// scratch), 0 for the others. Lanes cannot reach the warp's next gather
// before all have arrived at it, so the scratch stays this gather's until
// every lane has read it (wmma::mma_sync computes the warp's tile once).
extern "C" float* emu_warp_wmma_scratch(int* first) {
    const EmuFiberPublic* self = emu_self();
    Worker* w = worker_of(self);
    const uint32_t wi = self->linear >> 5;
    *first = w->wmma_tag[wi] != w->gather_id[wi];
    w->wmma_tag[wi] = w->gather_id[wi];
    return w->wmma_tile[wi];
}

extern "C" void emu_nanosleep(unsigned int) {
    const EmuFiberPublic* self = emu_self();
    Worker* w = worker_of(self);
    Fiber& f = w->fibers[self->linear];
    f.state = F_READY;
    to_scheduler(w, f);
}

extern "C" void emu_trap(const char* what, const char* file, int line) {
    const EmuFiberPublic* self = emu_self();
    Worker* w = worker_of(self);
    fiber_fail(w, EMU_ERR_TRAP, strf("%s: %s at %s:%d", thread_name(w, self->linear).c_str(), what, file, line));
}

// A kernel that includes <assert.h> after the shim gets glibc's assert
// back; -Bsymbolic binds its __assert_fail calls here.
static bool on_fiber_stack() {
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    int n = g_worker_count.load(std::memory_order_acquire);
    for (int i = 0; i < n; ++i) {
        Worker* w = g_worker_list[i];
        if (sp >= w->stacks && sp < w->stacks + (uintptr_t)kMaxThreads * EMU_STACK_SIZE) return true;
    }
    return false;
}
extern "C" __attribute__((visibility("default"))) void __assert_fail(const char* expr, const char* file, unsigned int line,
                                                                     const char* fn) noexcept {
    if (on_fiber_stack()) emu_trap(strf("assertion failed in %s: %s", fn, expr).c_str(), file, (int)line);
    fprintf(stderr, "%s:%u: %s: Assertion `%s' failed.\n", file, line, fn, expr);
    abort();
}

extern "C" __attribute__((visibility("default"))) const EmuApi* diffuse_emu_api(void) {
    g_api.kernel_count = emu_kernel_table_len;
    g_api.kernels = emu_kernel_table;
    return &g_api;
}

// ------------------------------------------------------------------ instrumentation hooks
// Kernels are compiled with -fsanitize=thread: these are the calls the
// compiler inserts around their memory accesses (no TSan runtime is linked;
// see race_check.h). Atomics are performed here, sequentially consistent,
// and not checked; nor are volatile accesses, which PTX's memory model
// treats as relaxed system-scope operations (a volatile flag is no race).
#define EMU_TSAN_RW(n)                                                                                  \
    extern "C" EMU_HIDDEN void __tsan_read##n(void* p) { race_access(p, n, false, __builtin_return_address(0)); } \
    extern "C" EMU_HIDDEN void __tsan_write##n(void* p) { race_access(p, n, true, __builtin_return_address(0)); } \
    extern "C" EMU_HIDDEN void __tsan_unaligned_read##n(void* p) {                                      \
        race_access(p, n, false, __builtin_return_address(0));                                          \
    }                                                                                                   \
    extern "C" EMU_HIDDEN void __tsan_unaligned_write##n(void* p) {                                     \
        race_access(p, n, true, __builtin_return_address(0));                                           \
    }                                                                                                   \
    extern "C" EMU_HIDDEN void __tsan_volatile_read##n(void*) {}                                        \
    extern "C" EMU_HIDDEN void __tsan_volatile_write##n(void*) {}
EMU_TSAN_RW(1)
EMU_TSAN_RW(2)
EMU_TSAN_RW(4)
EMU_TSAN_RW(8)
EMU_TSAN_RW(16)
#undef EMU_TSAN_RW
extern "C" EMU_HIDDEN void __tsan_read_range(void* p, unsigned long n) {
    race_access(p, n, false, __builtin_return_address(0));
}
extern "C" EMU_HIDDEN void __tsan_write_range(void* p, unsigned long n) {
    race_access(p, n, true, __builtin_return_address(0));
}
extern "C" EMU_HIDDEN void __tsan_init() {}
extern "C" EMU_HIDDEN void __tsan_func_entry(void*) {}
extern "C" EMU_HIDDEN void __tsan_func_exit() {}
extern "C" EMU_HIDDEN void __tsan_vptr_update(void**, void*) {}
extern "C" EMU_HIDDEN void __tsan_vptr_read(void**) {}
extern "C" EMU_HIDDEN void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
extern "C" EMU_HIDDEN void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
#define EMU_SC __ATOMIC_SEQ_CST
#define EMU_TSAN_ATOMIC(bits, T)                                                                        \
    extern "C" EMU_HIDDEN T __tsan_atomic##bits##_load(const volatile T* a, int) { return __atomic_load_n(a, EMU_SC); } \
    extern "C" EMU_HIDDEN void __tsan_atomic##bits##_store(volatile T* a, T v, int) { __atomic_store_n(a, v, EMU_SC); } \
    extern "C" EMU_HIDDEN T __tsan_atomic##bits##_exchange(volatile T* a, T v, int) {                  \
        return __atomic_exchange_n(a, v, EMU_SC);                                                       \
    }                                                                                                   \
    extern "C" EMU_HIDDEN T __tsan_atomic##bits##_fetch_add(volatile T* a, T v, int) {                 \
        return __atomic_fetch_add(a, v, EMU_SC);                                                        \
    }                                                                                                   \
    extern "C" EMU_HIDDEN T __tsan_atomic##bits##_fetch_sub(volatile T* a, T v, int) {                 \
        return __atomic_fetch_sub(a, v, EMU_SC);                                                        \
    }                                                                                                   \
    extern "C" EMU_HIDDEN T __tsan_atomic##bits##_fetch_and(volatile T* a, T v, int) {                 \
        return __atomic_fetch_and(a, v, EMU_SC);                                                        \
    }                                                                                                   \
    extern "C" EMU_HIDDEN T __tsan_atomic##bits##_fetch_or(volatile T* a, T v, int) {                  \
        return __atomic_fetch_or(a, v, EMU_SC);                                                         \
    }                                                                                                   \
    extern "C" EMU_HIDDEN T __tsan_atomic##bits##_fetch_xor(volatile T* a, T v, int) {                 \
        return __atomic_fetch_xor(a, v, EMU_SC);                                                        \
    }                                                                                                   \
    extern "C" EMU_HIDDEN T __tsan_atomic##bits##_fetch_nand(volatile T* a, T v, int) {                \
        return __atomic_fetch_nand(a, v, EMU_SC);                                                       \
    }                                                                                                   \
    extern "C" EMU_HIDDEN int __tsan_atomic##bits##_compare_exchange_strong(volatile T* a, T* c, T v, int, int) { \
        return __atomic_compare_exchange_n(a, c, v, false, EMU_SC, EMU_SC);                             \
    }                                                                                                   \
    extern "C" EMU_HIDDEN int __tsan_atomic##bits##_compare_exchange_weak(volatile T* a, T* c, T v, int, int) { \
        return __atomic_compare_exchange_n(a, c, v, true, EMU_SC, EMU_SC);                              \
    }                                                                                                   \
    extern "C" EMU_HIDDEN T __tsan_atomic##bits##_compare_exchange_val(volatile T* a, T c, T v, int, int) { \
        __atomic_compare_exchange_n(a, &c, v, false, EMU_SC, EMU_SC);                                   \
        return c;                                                                                       \
    }
EMU_TSAN_ATOMIC(8, uint8_t)
EMU_TSAN_ATOMIC(16, uint16_t)
EMU_TSAN_ATOMIC(32, uint32_t)
EMU_TSAN_ATOMIC(64, uint64_t)
#undef EMU_TSAN_ATOMIC
#undef EMU_SC
