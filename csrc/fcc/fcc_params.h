// FCC kernel arguments and per-plane workspace layouts, shared by host and device code.
#pragma once

#include <cstdint>

#include "common/common.h"

namespace fxk {
namespace fcc {

// `mode` of the ops (fxkernels/ops/fcc/README.md) and pass directions.
enum : int { kModeV = 0, kModeH = 1, kModeVH = 2, kModeHV = 3 };
enum : int { kDirV = 0, kDirH = 1 };

FXK_HD_INLINE bool mode_fused(int mode) { return mode == kModeVH || mode == kModeHV; }
FXK_HD_INLINE int mode_dir1(int mode) { return (mode == kModeV || mode == kModeVH) ? kDirV : kDirH; }
FXK_HD_INLINE int mode_dir2(int mode) { return mode == kModeVH ? kDirH : kDirV; }  // fused modes only

// Kernel arguments (plain pointers: the same struct is passed to a CUDA kernel by value).
template <typename T, typename A>
struct FccParams {
  int64_t B = 0, C = 0;
  int H = 0, W = 0, mode = 0;
  int L1 = 0, L2 = 0;    // pass lengths (L2 = 0 for single-pass modes)
  const T* x = nullptr;  // (B, C, H, W), any strides (in elements)
  int64_t sxb = 0, sxc = 0, sxh = 0, sxw = 0;
  const T* dy = nullptr;  // backward only: (B, C, H, W) contiguous
  const T* w1 = nullptr;  // (C, L1) contiguous
  const T* w2 = nullptr;  // (C, L2) contiguous, fused modes only
  const T* p1 = nullptr;  // (C, L1) or null
  const T* p2 = nullptr;  // (C, L2) or null
  const T* b1 = nullptr;  // (C,) or null
  const T* b2 = nullptr;  // (C,) or null
  T* out = nullptr;       // forward: y, backward: dx; (B, C, H, W) contiguous
  // Backward per-plane partials in acc_t (row p = b * C + c), null when the input is absent.
  A* gw1 = nullptr;  // (B*C, L1)
  A* gw2 = nullptr;  // (B*C, L2)
  A* gp1 = nullptr;  // (B*C, L1)
  A* gp2 = nullptr;  // (B*C, L2)
  A* gb1 = nullptr;  // (B*C,)
  A* gb2 = nullptr;  // (B*C,)
};

// Per-plane workspace layouts, in acc_t elements (L2 = 0 for single-pass modes).
struct FwdLayout {
  int x, z, c1, c2, total;
};
FXK_HD_INLINE FwdLayout fwd_layout(int H, int W, int L1, int L2) {
  FwdLayout l;
  const int hw = H * W;
  l.x = 0;       // X' (H x W)          later Y
  l.z = hw;      // Z  (H x W)
  l.c1 = 2 * hw;  // circulant of pass 1 (L1 x L1)
  l.c2 = l.c1 + L1 * L1;
  l.total = l.c2 + L2 * L2;
  return l;
}

struct BwdLayout {
  int xt, zt, a, b, c1, c2, m, scratch, total;
};
FXK_HD_INLINE BwdLayout bwd_layout(int H, int W, int L1, int L2) {
  BwdLayout l;
  const int hw = H * W;
  const int lmax = L1 > L2 ? L1 : L2;
  l.xt = 0;                        // X'^T (W x H)
  l.zt = hw;                       // Z'^T (W x H), fused modes only
  l.a = l.zt + (L2 > 0 ? hw : 0);  // dY, then dX' (fused)
  l.b = l.a + hw;                  // dZ' (fused) or dX' (single)
  l.c1 = l.b + hw;                 // circulants (backward orientation)
  l.c2 = l.c1 + L1 * L1;
  l.m = l.c2 + L2 * L2;            // correlation matrix (L x L)
  l.scratch = l.m + lmax * lmax;   // row sums of dOut (H)
  l.total = l.scratch + (H > W ? H : W);
  return l;
}

// acc_t elements of workspace one plane program needs (what the CPU and CUDA drivers allocate per plane).
FXK_HD_INLINE int64_t plane_workspace_elems(bool backward, int H, int W, int L1, int L2) {
  return backward ? bwd_layout(H, W, L1, L2).total : fwd_layout(H, W, L1, L2).total;
}

}  // namespace fcc
}  // namespace fxk
