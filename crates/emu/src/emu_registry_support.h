// emu_registry_support.h — templates used by the per-kernel-file wrappers
// that build.rs generates: argument count, sizes and kinds deduced from each
// kernel's C++ signature, and one `void entry(void** args)` per kernel that
// unpacks cuLaunchKernel-style argument pointers.
#pragma once
#include "emu_api.h"

#include <stddef.h>
#include <stdint.h>
#include <type_traits>
#include <utility>

template <class T>
constexpr uint32_t emu_kind_of() {
    typedef typename std::remove_cv<T>::type U;
    if (std::is_pointer<U>::value) return EMU_KIND_PTR;
    if (std::is_same<U, float>::value) return EMU_KIND_F32;
    if (std::is_same<U, double>::value) return EMU_KIND_F64;
    if (std::is_integral<U>::value && !std::is_same<U, bool>::value) {
        if (sizeof(U) == 4) return std::is_signed<U>::value ? EMU_KIND_I32 : EMU_KIND_U32;
        if (sizeof(U) == 8) return std::is_signed<U>::value ? EMU_KIND_I64 : EMU_KIND_U64;
    }
    return EMU_KIND_OTHER;
}

template <class F>
struct EmuSig;
template <class... P>
struct EmuSig<void(P...)> {
    static constexpr uint32_t n = sizeof...(P);
    // a leading 0 keeps the arrays non-empty; use `+ 1`
    static constexpr uint32_t sizes[] = {0u, (uint32_t)sizeof(P)...};
    static constexpr uint32_t kinds[] = {0u, emu_kind_of<P>()...};
};

template <class... P, size_t... I>
inline void emu_call(void (*f)(P...), void** a, std::index_sequence<I...>) {
    (void)a;
    f(*static_cast<typename std::remove_reference<P>::type*>(a[I])...);
}
template <class... P>
inline void emu_call(void (*f)(P...), void** a) {
    emu_call(f, a, std::index_sequence_for<P...>{});
}
template <auto F>
void emu_entry(void** a) {
    emu_call(F, a);
}
