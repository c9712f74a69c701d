// race_check.h — the hazard detector (included by runtime.cc inside its
// anonymous namespace, after the Worker and Job types; state in
// race_state.h).
//
// Shared memory, per 4-byte word, in the spirit of compute-sanitizer's
// racecheck: the last write and the reads since, each with its thread, its
// barrier interval (between two __syncthreads of the block) and its warp
// interval (between two completed collectives of its warp: __syncwarp,
// shuffles, votes, ...). Two accesses of which one is a write conflict when
// they come from different threads in the same barrier interval and either
// from different warps, or from the same warp in the same warp interval.
// Intervals are logical, so the verdict does not depend on the order in
// which the emulator happened to run the threads.
//
// Global memory, per 4-byte word of every allocation a pointer argument
// points into: the block that wrote it in this launch and the block(s) that
// read it. A second block writing, or reading what another block wrote, or
// writing what another block read, is a conflict: blocks are unordered.
// Atomics are neither recorded nor checked.

// ------------------------------------------------------------------ symbols
// Names of the module's thread-local symbols (the kernels' static __shared__
// variables) from its ELF symbol table, read once when a report needs one.
struct TlsSymbol {
    uint64_t offset, size;
    std::string name;
};

std::vector<TlsSymbol> load_tls_symbols() {
    std::vector<TlsSymbol> out;
    Dl_info di;
    if (!dladdr((void*)&emu_fiber_main, &di) || !di.dli_fname) return out;
    FILE* f = fopen(di.dli_fname, "rb");
    if (!f) return out;
    std::vector<unsigned char> data;
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + n);
    fclose(f);
    if (data.size() < sizeof(ElfW(Ehdr))) return out;
    const ElfW(Ehdr)* eh = (const ElfW(Ehdr)*)data.data();
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_shoff + (size_t)eh->e_shnum * sizeof(ElfW(Shdr)) > data.size())
        return out;
    const ElfW(Shdr)* sh = (const ElfW(Shdr)*)(data.data() + eh->e_shoff);
    for (int i = 0; i < eh->e_shnum; ++i) {
        if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
        const ElfW(Shdr)& strs = sh[sh[i].sh_link];
        if (sh[i].sh_offset + sh[i].sh_size > data.size() || strs.sh_offset + strs.sh_size > data.size()) continue;
        const ElfW(Sym)* sym = (const ElfW(Sym)*)(data.data() + sh[i].sh_offset);
        const size_t count = sh[i].sh_size / sizeof(ElfW(Sym));
        for (size_t s = 0; s < count; ++s) {
            if (ELF64_ST_TYPE(sym[s].st_info) != STT_TLS || sym[s].st_name >= strs.sh_size) continue;
            const char* raw = (const char*)data.data() + strs.sh_offset + sym[s].st_name;
            int status = 0;
            char* dem = abi::__cxa_demangle(raw, nullptr, nullptr, &status);
            std::string name = status == 0 && dem ? dem : raw;
            free(dem);
            // emu_file_N:: is build.rs's per-file namespace, not the kernel's.
            for (size_t p; (p = name.find("emu_file_")) != std::string::npos;) {
                size_t e = name.find("::", p);
                if (e == std::string::npos) break;
                name.erase(p, e + 2 - p);
            }
            out.push_back({sym[s].st_value, sym[s].st_size, name});
        }
    }
    return out;
}

// "`s` (static __shared__ in emu_bug(float*)), byte offset 12" or
// "dynamic shared memory (extern __shared__), byte offset 12".
std::string describe_smem(Worker* w, uintptr_t a) {
    if (w->dyn && a >= (uintptr_t)w->dyn && a < (uintptr_t)w->dyn + emu_dynamic_smem_bytes)
        return strf("dynamic shared memory (extern __shared__), byte offset %zu", (size_t)(a - (uintptr_t)w->dyn));
    static std::once_flag once;
    static std::vector<TlsSymbol>* syms;
    std::call_once(once, [] { syms = new std::vector<TlsSymbol>(load_tls_symbols()); });
    const uint64_t off = a - w->race.smem_lo;
    for (const TlsSymbol& s : *syms) {
        if (off < s.offset || off >= s.offset + std::max<uint64_t>(s.size, 1)) continue;
        std::string var = s.name, fn;
        size_t p = s.name.rfind("::");  // a function's local static: FUNCTION::NAME
        if (p != std::string::npos) {
            fn = s.name.substr(0, p);
            var = s.name.substr(p + 2);
        }
        return strf("`%s` (static __shared__, %llu bytes%s%s), byte offset %llu", var.c_str(),
                    (unsigned long long)s.size, fn.empty() ? "" : ", in ", fn.c_str(),
                    (unsigned long long)(off - s.offset));
    }
    return strf("static shared memory at offset %llu of the module's shared block", (unsigned long long)off);
}

// A marker api_launch replaces by the source location (race_symbolize).
std::string pc_marker(Worker* w, const void* pc) {
    if (!pc) return "an unknown place";
    return strf("@@PC:%lx@@", (unsigned long)((uintptr_t)pc - w->module_base - 1));
}

std::string thread_desc(Worker* w, uint32_t tid) {
    return strf("%s, warp %u lane %u", thread_name(w, tid).c_str(), tid / 32, tid % 32);
}

// ------------------------------------------------------------------ epochs
inline uint32_t race_tick(RaceWorker& r) { return ++r.clock; }

void race_block_start(Worker* w, uint64_t b) {
    RaceWorker& r = w->race;
    if (r.shadow && r.clock > 0xf0000000u) {
        memset(r.shadow, 0, r.smem_len / 4 * sizeof(SmemShadow));
        r.clock = 0;
    }
    r.bar = race_tick(r);
    for (uint32_t& e : r.warp) e = r.bar;
    r.block_tag = (uint32_t)(b % (kManyBlocks - 1)) + 1;
}
inline void race_barrier(Worker* w) { w->race.bar = race_tick(w->race); }
inline void race_warp_sync(Worker* w, uint32_t warp) { w->race.warp[warp] = race_tick(w->race); }

// ------------------------------------------------------------------ shared memory
[[noreturn]] void smem_hazard(Worker* w, const char* kind, uintptr_t addr, uint32_t me, const char* my_verb,
                              const void* my_pc, uint32_t other, const char* other_verb, const void* other_pc) {
    const bool same_warp = me / 32 == other / 32;
    fiber_fail(w, EMU_ERR_RACE,
               strf("shared memory race (%s) on %s: %s %s it at %s; %s %s it at %s, in the same barrier interval "
                    "(%s)",
                    kind, describe_smem(w, addr).c_str(), thread_desc(w, me).c_str(), my_verb,
                    pc_marker(w, my_pc).c_str(), thread_desc(w, other).c_str(), other_verb,
                    pc_marker(w, other_pc).c_str(),
                    same_warp ? "same warp, and no __syncwarp() or warp collective between them"
                              : "different warps, and no __syncthreads() between them"));
}

// Do thread `a` (at warp interval `a_wep`) and the current access by `me`
// in the same barrier interval conflict?
inline bool unordered(uint32_t a, uint32_t a_wep, uint32_t me, uint32_t me_wep) {
    return a != me && (a / 32 != me / 32 || a_wep == me_wep);
}

void smem_word(Worker* w, SmemShadow& s, uintptr_t addr, bool write, const void* pc) {
    RaceWorker& r = w->race;
    const uint32_t me = w->current, warp = me / 32, lane = me % 32;
    const uint32_t bar = r.bar, wep = r.warp[warp];
    const bool wrote = s.w_bar == bar;
    if (!write) {
        if (wrote && unordered(s.w_tid, s.w_wep, me, wep))
            smem_hazard(w, "read-after-write", addr, me, "reads", pc, s.w_tid, "wrote", s.w_pc);
        if (s.r_bar != bar) {
            s.r_bar = bar;
            s.r_tid = (uint16_t)me;
            s.r_wep = wep;
            s.r_lanes = 1u << lane;
            s.r_pc = pc;
            s.r2_tid = kNoThread;
        } else if (s.r_tid / 32u == warp) {
            if (s.r_wep == wep) {
                s.r_lanes |= 1u << lane;
            } else {
                s.r_tid = (uint16_t)me;
                s.r_wep = wep;
                s.r_lanes = 1u << lane;
                s.r_pc = pc;
            }
        } else if (s.r2_tid == kNoThread) {
            s.r2_tid = (uint16_t)me;
            s.r2_pc = pc;
        }
        return;
    }
    if (wrote && unordered(s.w_tid, s.w_wep, me, wep))
        smem_hazard(w, "write-after-write", addr, me, "writes", pc, s.w_tid, "wrote", s.w_pc);
    if (s.r_bar == bar) {
        if (s.r_tid / 32u != warp)
            smem_hazard(w, "write-after-read", addr, me, "writes", pc, s.r_tid, "read", s.r_pc);
        const uint32_t others = s.r_lanes & ~(1u << lane);
        if (s.r_wep == wep && others)
            smem_hazard(w, "write-after-read", addr, me, "writes", pc, warp * 32 + __builtin_ctz(others), "read",
                        s.r_pc);
        if (s.r2_tid != kNoThread)
            smem_hazard(w, "write-after-read", addr, me, "writes", pc, s.r2_tid, "read", s.r2_pc);
    }
    s.w_bar = bar;
    s.w_wep = wep;
    s.w_tid = (uint16_t)me;
    s.w_pc = pc;
    s.r_bar = 0;  // the reads before this write are ordered before it
}

// ------------------------------------------------------------------ global memory
std::string block_of_tag(Worker* w, uint32_t tag) {
    if (tag == kManyBlocks) return "several other blocks";
    const uint64_t b = tag - 1;
    const uint32_t gx = w->builtins.grid_dim.x, gy = w->builtins.grid_dim.y;
    return strf("block (%u,%u,%u)%s", (uint32_t)(b % gx), (uint32_t)((b / gx) % gy), (uint32_t)(b / ((uint64_t)gx * gy)),
                (uint64_t)gx * gy * w->builtins.grid_dim.z >= kManyBlocks ? " (or another one with the same index mod 2^24-2)"
                                                                           : "");
}

[[noreturn]] void global_conflict(Worker* w, const GlobalRange& g, uintptr_t addr, bool write, uint32_t other,
                                  bool other_wrote, const void* pc) {
    const uint32_t me = w->current;
    fiber_fail(w, EMU_ERR_RACE,
               strf("global memory race between blocks: %s %s device allocation 0x%lx (%zu bytes) at byte offset %zu "
                    "at %s, which %s %s in this launch (blocks are unordered on a GPU: give each output word to one "
                    "block, or use atomics)",
                    thread_desc(w, me).c_str(), write ? "writes" : "reads", (unsigned long)g.ptr, g.bytes,
                    (size_t)(addr - g.ptr), pc_marker(w, pc).c_str(), block_of_tag(w, other).c_str(),
                    other_wrote ? "wrote" : "read"));
}

void global_word(Worker* w, const GlobalRange& g, uint64_t* e, uintptr_t addr, bool write, const void* pc) {
    const RaceWorker& r = w->race;
    const uint64_t me = r.block_tag;
    uint64_t old = __atomic_load_n(e, __ATOMIC_RELAXED);
    for (;;) {
        uint64_t wr = old >> 24 & kManyBlocks, rd = old & kManyBlocks;
        if ((old & ~0xffffffffffffull) != r.launch_tag) wr = rd = 0;  // stale: an earlier launch
        if (wr && wr != me) global_conflict(w, g, addr, write, (uint32_t)wr, true, pc);
        uint64_t nv;
        if (write) {
            if (rd && rd != me) global_conflict(w, g, addr, true, (uint32_t)rd, false, pc);
            nv = r.launch_tag | me << 24 | rd;
        } else {
            nv = r.launch_tag | wr << 24 | (rd == 0 || rd == me ? me : kManyBlocks);
        }
        if (nv == old || __atomic_compare_exchange_n(e, &old, nv, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return;
    }
}

// ------------------------------------------------------------------ the hook
// Not on a fiber (the module's static initialisers): no launch is running.
std::atomic<uint32_t> g_race_live{0};

inline __attribute__((always_inline)) void race_access(const void* p, size_t size, bool write, const void* pc) {
    if (!g_race_live.load(std::memory_order_relaxed) || size == 0) return;
    Worker* w = worker_of(emu_self());
    RaceWorker& r = w->race;
    const uintptr_t a = (uintptr_t)p;
    if (a - r.smem_lo < r.smem_len) {
        if (!(r.checks & kCheckShared) || !r.shadow) return;
        const size_t first = (a - r.smem_lo) / 4, last = (a + size - 1 - r.smem_lo) / 4;
        for (size_t i = first; i <= last && i < r.smem_len / 4; ++i) smem_word(w, r.shadow[i], r.smem_lo + 4 * i, write, pc);
        return;
    }
    if (a - r.g_lo >= r.g_span || !(r.checks & kCheckGlobal)) return;
    for (size_t k = 0; k < r.n_ranges; ++k) {
        const GlobalRange& g = r.ranges[k];
        if (a - g.lo >= g.len) continue;
        const size_t first = (a - g.lo) / 4, last = std::min((a + size - 1 - g.lo) / 4, g.len / 4 - 1);
        for (size_t i = first; i <= last; ++i) global_word(w, g, &g.shadow[i], g.lo + 4 * i, write, pc);
        return;
    }
}

// ------------------------------------------------------------------ reports
// Replaces each @@PC:<hex>@@ marker by a source location (addr2line over
// the module's line tables), or by the module offset if that fails.
std::string race_symbolize(const std::string& msg) {
    if (msg.find("@@PC:") == std::string::npos) return msg;
    Dl_info di;
    const char* so = dladdr((void*)&emu_fiber_main, &di) && di.dli_fname ? di.dli_fname : nullptr;
    std::string out;
    size_t i = 0;
    for (;;) {
        size_t p = msg.find("@@PC:", i);
        if (p == std::string::npos) break;
        size_t e = msg.find("@@", p + 5);
        if (e == std::string::npos) break;
        out += msg.substr(i, p - i);
        const std::string hex = msg.substr(p + 5, e - p - 5);
        std::string loc;
        if (so && hex.find_first_not_of("0123456789abcdef") == std::string::npos && !strchr(so, '\'')) {
            std::string cmd = strf("addr2line -e '%s' -i -f -C 0x%s 2>/dev/null", so, hex.c_str());
            if (FILE* f = popen(cmd.c_str(), "r")) {
                // pairs of lines: function, file:line; innermost first
                char fn[4096], fl[4096];
                std::vector<std::string> frames;
                while (fgets(fn, sizeof fn, f) && fgets(fl, sizeof fl, f)) {
                    fn[strcspn(fn, "\n")] = 0;
                    fl[strcspn(fl, "\n")] = 0;
                    std::string file = fl;
                    if (file.rfind("??", 0) == 0) continue;
                    for (const char* root : {EMU_SOURCE_ROOT "/crates/emu/../../", EMU_SOURCE_ROOT "/"})
                        if (file.rfind(root, 0) == 0) file = file.substr(strlen(root));
                    std::string f2 = fn;
                    for (size_t q; (q = f2.find("emu_file_")) != std::string::npos;) {
                        size_t qe = f2.find("::", q);
                        if (qe == std::string::npos) break;
                        f2.erase(q, qe + 2 - q);
                    }
                    size_t paren = f2.find('(');
                    if (paren != std::string::npos) f2 = f2.substr(0, paren);
                    size_t disc = file.find(" (discriminator");
                    if (disc != std::string::npos) file = file.substr(0, disc);
                    std::string frame = file + " (" + f2 + ")";
                    // line tables alone can repeat a function as its own caller
                    if (frames.empty() || frames.back().substr(frames.back().rfind(" (")) != frame.substr(frame.rfind(" (")))
                        frames.push_back(frame);
                }
                pclose(f);
                for (size_t k = 0; k < frames.size(); ++k) loc += (k ? ", inlined into " : "") + frames[k];
            }
        }
        out += loc.empty() ? strf("libdiffuse_emu.so+0x%s", hex.c_str()) : loc;
        i = e + 2;
    }
    return out + msg.substr(i);
}
