// Run-time choice of the CPU kernel build (ISA variant), extension-wide: every family's CPU kernels follow it.
//
// Variants: "generic" (the compiler's baseline, always built), "avx2" (AVX2+FMA) and "avx512" (AVX-512
// F/BW/VL/DQ + FMA), the last two on x86-64 GCC builds. The choice starts from $FXKERNELS_CPU_ISA
// (auto | generic | avx2 | avx512, default auto) and is changed with fxkernels._C._set_cpu_isa.
// A family's kernel table (cpu_kernel_table below) has one slot per variant; a family without an AVX-512 build
// puts its AVX2 kernels in the avx512 slot. "auto" takes the widest variant the CPU runs, except that the
// avx512 slot is taken only by the families whose AVX-512 build is measured faster than their AVX2 one
// (CpuAuto::kAvx512); the others keep their AVX2 kernels under "auto".
#pragma once

#include <string>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FXK_CPU_HAVE_AVX2 1
#define FXK_CPU_HAVE_AVX512 1
#else
#define FXK_CPU_HAVE_AVX2 0
#define FXK_CPU_HAVE_AVX512 0
#endif

// A wide variant's translation unit compiles its family's kernel header under
//   #pragma GCC target("avx2,fma")                                    (avx2)
//   #pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")  (avx512)
// after including every other header, and the kernel header has internal linkage (see fcc/fcc_cpu_avx2.cpp).

namespace fxk {

// Slots of a kernel table. kAvx512Emulated is a test hook, not a user choice: the AVX-512 kernel source
// compiled for AVX2 (64-byte vectors as pairs of 32-byte ones), so machines without AVX-512 run its code paths.
enum class CpuIsa : int { kGeneric = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Emulated = 3 };
constexpr int kCpuIsaSlots = 4;

// What "auto" takes on a CPU with AVX-512: a family's avx512 slot, or (the default) its avx2 slot.
enum class CpuAuto : int { kAvx2 = 0, kAvx512 = 1 };

std::string cpu_isa();                            // the choice in force ("auto" resolved for the CPU)
std::string set_cpu_isa(const std::string& isa);  // returns the previous choice (as requested)
std::vector<std::string> cpu_isa_variants();      // variants compiled in
std::vector<std::string> cpu_isa_usable();        // variants compiled in that this CPU runs

// The slot a family with the given auto policy uses now (one relaxed atomic load on the hot path).
CpuIsa cpu_isa_slot(CpuAuto auto_policy);

// A family's table of CPU kernels K for the variant in use. make_generic() builds the baseline table,
// make_avx2() the AVX2 one (called only in FXK_CPU_HAVE_AVX2 builds); each is built once (per K).
// This overload is for families without an AVX-512 build: their avx512 slots hold the AVX2 kernels.
template <typename K, typename MakeGeneric, typename MakeAvx2>
const K& cpu_kernel_table(MakeGeneric make_generic, MakeAvx2 make_avx2) {
  static const K generic = make_generic();
#if FXK_CPU_HAVE_AVX2
  static const K avx2 = make_avx2();
  if (cpu_isa_slot(CpuAuto::kAvx2) != CpuIsa::kGeneric) return avx2;
#else
  (void)make_avx2;
#endif
  return generic;
}

// Families with an AVX-512 build: make_avx512() / make_avx512_emulated() build the avx512 and test-hook slots
// (FXK_CPU_HAVE_AVX512 builds only); auto_policy says whether "auto" takes the AVX-512 kernels.
template <typename K, typename MakeGeneric, typename MakeAvx2, typename MakeAvx512, typename MakeEmu>
const K& cpu_kernel_table(MakeGeneric make_generic, MakeAvx2 make_avx2, MakeAvx512 make_avx512,
                          MakeEmu make_avx512_emulated, CpuAuto auto_policy) {
  static const K generic = make_generic();
#if FXK_CPU_HAVE_AVX512
  static const K avx2 = make_avx2();
  static const K avx512 = make_avx512();
  static const K emulated = make_avx512_emulated();
  switch (cpu_isa_slot(auto_policy)) {
    case CpuIsa::kAvx2:
      return avx2;
    case CpuIsa::kAvx512:
      return avx512;
    case CpuIsa::kAvx512Emulated:
      return emulated;
    default:
      return generic;
  }
#else
  (void)make_avx2;
  (void)make_avx512;
  (void)make_avx512_emulated;
  (void)auto_policy;
  return generic;
#endif
}

}  // namespace fxk
