#include "common/cpu_isa.h"

#include <atomic>
#include <cstdlib>
#include <mutex>

#include <c10/util/Exception.h>

namespace fxk {

namespace {

constexpr int kAuto = -1;
constexpr int kUnset = -2;

bool cpu_has(CpuIsa isa) {
#if FXK_CPU_HAVE_AVX2
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  switch (isa) {
    case CpuIsa::kGeneric:
      return true;
    case CpuIsa::kAvx2:
    case CpuIsa::kAvx512Emulated:
      return avx2;
    case CpuIsa::kAvx512:  // libgcc also checks that the OS saves the AVX-512 registers (XCR0)
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }
  return false;
#else
  return isa == CpuIsa::kGeneric;
#endif
}

bool built(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kGeneric:
      return true;
    case CpuIsa::kAvx2:
      return FXK_CPU_HAVE_AVX2;
    case CpuIsa::kAvx512:
    case CpuIsa::kAvx512Emulated:
      return FXK_CPU_HAVE_AVX512;
  }
  return false;
}

const char* isa_name(int isa) {
  switch (isa) {
    case kAuto:
      return "auto";
    case static_cast<int>(CpuIsa::kGeneric):
      return "generic";
    case static_cast<int>(CpuIsa::kAvx2):
      return "avx2";
    case static_cast<int>(CpuIsa::kAvx512):
      return "avx512";
    case static_cast<int>(CpuIsa::kAvx512Emulated):
      return "avx512-emulated";
  }
  return "?";
}

// "auto" -> kAuto, a variant -> its slot; throws for unknown names and for variants not built / not supported.
int parse_isa(const std::string& isa) {
  if (isa == "auto" || isa.empty()) return kAuto;
  for (int v = 0; v < kCpuIsaSlots; ++v) {
    if (isa != isa_name(v)) continue;
    const auto slot = static_cast<CpuIsa>(v);
    TORCH_CHECK(built(slot), "fxkernels: the ", isa, " CPU kernels were not built (non-x86-64 or non-GCC build)");
    TORCH_CHECK(cpu_has(slot), "fxkernels: this CPU does not support the ", isa, " kernels (",
                slot == CpuIsa::kAvx512 ? "AVX-512 F/BW/VL/DQ" : "AVX2+FMA", ")");
    return v;
  }
  TORCH_CHECK(false, "fxkernels: CPU ISA must be 'auto', 'generic', 'avx2' or 'avx512', got '", isa, "'");
  return kAuto;
}

// The widest variant this CPU runs (what "auto" resolves to).
int widest() {
  static const int w = cpu_has(CpuIsa::kAvx512) && built(CpuIsa::kAvx512) ? static_cast<int>(CpuIsa::kAvx512)
                       : cpu_has(CpuIsa::kAvx2) && built(CpuIsa::kAvx2)   ? static_cast<int>(CpuIsa::kAvx2)
                                                                          : static_cast<int>(CpuIsa::kGeneric);
  return w;
}

std::atomic<int> g_choice{kUnset};  // kAuto or a slot
std::mutex g_init_mutex;

int choice() {
  int c = g_choice.load(std::memory_order_relaxed);
  if (c != kUnset) return c;
  std::lock_guard<std::mutex> lock(g_init_mutex);
  c = g_choice.load(std::memory_order_relaxed);
  if (c != kUnset) return c;
  const char* env = std::getenv("FXKERNELS_CPU_ISA");
  try {
    c = parse_isa(env != nullptr ? env : "auto");
  } catch (const c10::Error&) {
    TORCH_WARN("fxkernels: ignoring FXKERNELS_CPU_ISA=", env, " (unknown or unsupported)");
    c = kAuto;
  }
  g_choice.store(c, std::memory_order_relaxed);
  return c;
}

}  // namespace

std::string cpu_isa() {
  const int c = choice();
  return isa_name(c == kAuto ? widest() : c);
}

std::string set_cpu_isa(const std::string& isa) {
  const int prev = choice();
  g_choice.store(parse_isa(isa), std::memory_order_relaxed);
  return isa_name(prev);
}

std::vector<std::string> cpu_isa_variants() {
  std::vector<std::string> v;
  for (int i = 0; i <= static_cast<int>(CpuIsa::kAvx512); ++i)
    if (built(static_cast<CpuIsa>(i))) v.push_back(isa_name(i));
  return v;
}

std::vector<std::string> cpu_isa_usable() {
  std::vector<std::string> v;
  for (int i = 0; i <= static_cast<int>(CpuIsa::kAvx512); ++i)
    if (built(static_cast<CpuIsa>(i)) && cpu_has(static_cast<CpuIsa>(i))) v.push_back(isa_name(i));
  return v;
}

CpuIsa cpu_isa_slot(CpuAuto auto_policy) {
  const int c = choice();
  if (c != kAuto) return static_cast<CpuIsa>(c);
  const int w = widest();
  if (w == static_cast<int>(CpuIsa::kAvx512) && auto_policy == CpuAuto::kAvx2) return CpuIsa::kAvx2;
  return static_cast<CpuIsa>(w);
}

}  // namespace fxk
