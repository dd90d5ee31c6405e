// Test hook of the CPU kernels, extension-wide: when cpu_emulate_threads() > 0, the families that support it
// run their CUDA kernels' per-thread (or per-column) code on the CPU, with that many emulated threads where
// the schedule has a block size, so the CPU test suite exercises the device index math without a GPU.
// Set from Python with fxkernels._C._set_cpu_emulate_threads(n); 0 (the default) is the normal CPU path.
#pragma once

namespace fxk {

int cpu_emulate_threads();
int set_cpu_emulate_threads(int threads);  // threads in [0, 1024]; returns the previous value

}  // namespace fxk
