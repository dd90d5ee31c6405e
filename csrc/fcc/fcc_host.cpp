#include "fcc/fcc.h"

#include <atomic>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <string>

namespace fxk {
namespace fcc {

namespace {
std::atomic<int> g_emulate_threads{0};

bool cpu_has_avx2() {
#if FXK_CPU_HAVE_AVX2
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

// 0 = generic, 1 = avx2
int resolve_isa(const std::string& isa) {
  if (isa == "generic") return 0;
  if (isa == "avx2") {
    TORCH_CHECK(FXK_CPU_HAVE_AVX2, "fxkernels: the avx2 CPU kernels were not built (non-x86-64 or non-GCC build)");
    TORCH_CHECK(cpu_has_avx2(), "fxkernels: this CPU does not support AVX2+FMA");
    return 1;
  }
  TORCH_CHECK(isa == "auto" || isa.empty(), "fxkernels: CPU ISA must be 'auto', 'generic' or 'avx2', got '", isa,
              "'");
  return cpu_has_avx2() ? 1 : 0;
}

std::mutex g_isa_mutex;
std::string g_isa_choice;  // as requested
int g_isa = -1;            // resolved, -1 = not yet

int isa_now() {
  std::lock_guard<std::mutex> lock(g_isa_mutex);
  if (g_isa < 0) {
    const char* env = std::getenv("FXKERNELS_CPU_ISA");
    g_isa_choice = env != nullptr ? env : "auto";
    try {
      g_isa = resolve_isa(g_isa_choice);
    } catch (const c10::Error&) {
      TORCH_WARN("fxkernels: ignoring FXKERNELS_CPU_ISA=", g_isa_choice, " (unknown or unsupported)");
      g_isa_choice = "auto";
      g_isa = resolve_isa("auto");
    }
  }
  return g_isa;
}
}  // namespace

std::string cpu_isa() { return isa_now() == 1 ? "avx2" : "generic"; }

std::string set_cpu_isa(const std::string& isa) {
  isa_now();
  const int v = resolve_isa(isa);
  std::lock_guard<std::mutex> lock(g_isa_mutex);
  std::string prev = g_isa_choice;
  g_isa_choice = isa.empty() ? "auto" : isa;
  g_isa = v;
  return prev;
}

std::vector<std::string> cpu_isa_variants() {
  std::vector<std::string> v = {"generic"};
  if (FXK_CPU_HAVE_AVX2) v.push_back("avx2");
  return v;
}

int cpu_emulate_threads() { return g_emulate_threads.load(std::memory_order_relaxed); }

int set_cpu_emulate_threads(int threads) {
  TORCH_CHECK(threads >= 0 && threads <= 1024, "fxkernels: emulated block size must be in [0, 1024], got ",
              threads);
  return g_emulate_threads.exchange(threads);
}

Problem prepare(const char* op, const at::Tensor* dy, const at::Tensor& x, const at::Tensor& w1,
                const std::optional<at::Tensor>& w2, const std::optional<at::Tensor>& p1,
                const std::optional<at::Tensor>& p2, const std::optional<at::Tensor>& b1,
                const std::optional<at::Tensor>& b2, int64_t mode, c10::DeviceType device_type) {
  TORCH_CHECK(mode >= 0 && mode <= 3, op, ": mode must be 0 (V), 1 (H), 2 (VH) or 3 (HV), got ", mode);
  check_floating(x, op, "x", 4, "(B, C, H, W)");
  Problem pb;
  pb.mode = static_cast<int>(mode);
  pb.fused = mode_fused(pb.mode);
  pb.B = x.size(0);
  pb.C = x.size(1);
  const int64_t H = x.size(2), W = x.size(3);
  TORCH_CHECK(H <= 8192 && W <= 8192 && H * W <= (int64_t{1} << 24), op,
              ": planes larger than 8192 per side or 2^24 elements are not supported, got (H, W) = (", H, ", ", W,
              ")");
  pb.H = static_cast<int>(H);
  pb.W = static_cast<int>(W);
  const int d1 = mode_dir1(pb.mode);
  pb.L1 = d1 == kDirV ? pb.H : pb.W;
  pb.L2 = pb.fused ? (d1 == kDirV ? pb.W : pb.H) : 0;
  const char* l1desc = "(C, L1)";
  const char* l2desc = "(C, L2)";

  pb.x = x;
  check_same(w1, op, "w1", x, "x");
  check_shape(w1, op, "w1", l1desc, {pb.C, pb.L1});
  pb.w1 = w1.contiguous();
  pb.p1 = check_param(p1, op, "p1", l1desc, {pb.C, pb.L1}, x);
  pb.b1 = check_param(b1, op, "b1", "(C,)", {pb.C}, x);
  if (pb.fused) {
    TORCH_CHECK(present(w2), op, ": w2 is required for mode ", mode, " (", mode == kModeVH ? "VH" : "HV",
                "), got None");
    pb.w2 = check_param(w2, op, "w2", l2desc, {pb.C, pb.L2}, x);
    pb.p2 = check_param(p2, op, "p2", l2desc, {pb.C, pb.L2}, x);
    pb.b2 = check_param(b2, op, "b2", "(C,)", {pb.C}, x);
  } else {
    const char* mname = mode == kModeV ? "0 (V)" : "1 (H)";
    TORCH_CHECK(!present(w2), op, ": w2 must be None for single-pass mode ", mname);
    TORCH_CHECK(!present(p2), op, ": p2 must be None for single-pass mode ", mname);
    TORCH_CHECK(!present(b2), op, ": b2 must be None for single-pass mode ", mname);
  }
  if (dy != nullptr) {
    TORCH_CHECK(dy->defined(), op, ": dy must be a tensor, got an undefined tensor");
    check_same(*dy, op, "dy", x, "x");
    check_shape(*dy, op, "dy", "(B, C, H, W) like x", x.sizes());
    pb.dy = dy->contiguous();
  }
  // All tensors share x's device (checked above); it must be the backend that was dispatched to.
  TORCH_CHECK(x.device().type() == device_type, op, ": expected ", c10::DeviceTypeName(device_type, true),
              " tensors, got x on ", x.device());
  return pb;
}

Partials alloc_partials(const Problem& pb) {
  const auto acc = pb.x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto opts = pb.x.options().dtype(acc);
  // Empty problems launch nothing: the partials must then already be zero.
  const bool empty = pb.planes() == 0 || pb.H == 0 || pb.W == 0;
  auto make = [&](at::IntArrayRef shape) { return empty ? at::zeros(shape, opts) : at::empty(shape, opts); };
  Partials p;
  p.gw1 = make({pb.B, pb.C, pb.L1});
  if (pb.p1.defined()) p.gp1 = make({pb.B, pb.C, pb.L1});
  if (pb.b1.defined()) p.gb1 = make({pb.B, pb.C});
  if (pb.fused) {
    p.gw2 = make({pb.B, pb.C, pb.L2});
    if (pb.p2.defined()) p.gp2 = make({pb.B, pb.C, pb.L2});
    if (pb.b2.defined()) p.gb2 = make({pb.B, pb.C});
  }
  return p;
}

std::vector<at::Tensor> finish_grads(const Problem& pb, const at::Tensor& dx, const Partials& part) {
  const auto dtype = pb.x.scalar_type();
  auto reduce = [&](const at::Tensor& t) -> at::Tensor {
    if (!t.defined()) return at::empty({0}, pb.x.options());
    return at::sum(t, {0}, /*keepdim=*/false, /*dtype=*/t.scalar_type()).to(dtype);
  };
  return {dx,
          reduce(part.gw1),
          reduce(part.gw2),
          reduce(part.gp1),
          reduce(part.gp2),
          reduce(part.gb1),
          reduce(part.gb2)};
}

}  // namespace fcc
}  // namespace fxk
