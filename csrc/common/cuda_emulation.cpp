#include "common/cuda_emulation.h"

#include <atomic>

#include <c10/util/Exception.h>

namespace fxk {

namespace {
std::atomic<int> g_emulate_threads{0};
}  // namespace

int cpu_emulate_threads() { return g_emulate_threads.load(std::memory_order_relaxed); }

int set_cpu_emulate_threads(int threads) {
  TORCH_CHECK(threads >= 0 && threads <= 1024, "fxkernels: emulated block size must be in [0, 1024], got ",
              threads);
  return g_emulate_threads.exchange(threads);
}

}  // namespace fxk
