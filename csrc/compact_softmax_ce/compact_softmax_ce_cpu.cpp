// Compact softmax cross-entropy CPU ops (fxkernels/ops/compact_softmax_ce/README.md, "Backend contract").
// One row per work item (at::parallel_for over rows): a sweep for the non-target maximum, a sweep for the sums
// (the non-target sum-exp, the p'-weighted sum of the shifted logits, the plain sum of the shifted non-target
// logits; the all-class sum-exp follows from them and the target logit), then the loss, or in the backward one
// more sweep writing the gradient row (one exponential per element per sweep). Accumulation in fp32 (fp64 for
// fp64), every sum in column order: deterministic and independent of the thread count; no atomics. One generic
// build (no AVX2 variant yet); the exponentials are scalar std::exp.
#include <cmath>
#include <cstdint>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/checks.h"
#include "compact_softmax_ce/compact_softmax_ce.h"

namespace fxk {
namespace compact_softmax_ce {
namespace {

// One exponential per element: every non-target term is exp(z_c - m2) with m2 the non-target maximum (so p' keeps
// full precision however far the target logit is above the others), and the all-class sum is rebuilt from it:
// s = s2 exp(m2 - m) + exp(z_y - m) with m = max(m2, z_y) (exp(m2 - m) <= 1: nothing overflows).
template <typename A>
struct RowStats {
  A m, ls;    // max_c z_c, log sum_c exp(z_c - m)
  A m2, ls2;  // max_{c != y} z_c, log sum_{c != y} exp(z_c - m2)
  A S;        // sum_{c != y} p'_c log p'_c
  A kl;       // KL(u'||p') + KL(p'||u') = E_{p'}[z] - mean_{c != y} z
  A rp;       // sum_{c != y} p_c, so p_c = rp p'_c for c != y
  A py;       // p_y
};

template <typename T, typename A>
inline RowStats<A> row_stats(const T* z, int64_t sc, int64_t C, int64_t y) {
  A m2 = -INFINITY;
  for (int64_t c = 0; c < C; ++c) {
    const A v = to_acc<A>(z[c * sc]);
    if (c != y && !(v <= m2)) m2 = v;  // a NaN is kept (and propagates through the sums anyway)
  }
  A s2 = 0, t2 = 0, a2 = 0;
  for (int64_t c = 0; c < C; ++c) {
    if (c == y) continue;
    const A d = to_acc<A>(z[c * sc]) - m2, e = std::exp(d);
    s2 += e;
    t2 += e * d;
    a2 += d;
  }
  const A zy = to_acc<A>(z[y * sc]);
  const A m = (zy > m2 || zy != zy) ? zy : m2;
  const A f = s2 * std::exp(m2 - m), ey = std::exp(zy - m), s = f + ey;
  const A K = static_cast<A>(C - 1);
  const A ls2 = std::log(s2), mean_p = t2 / s2;
  return {m, std::log(s), m2, ls2, mean_p - ls2, mean_p - a2 / K, f / s, ey / s};
}

at::Tensor fwd_cpu(const at::Tensor& logits, const at::Tensor& target, double beta) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const char* op = "fxkernels.compact_softmax_ce_fwd";
  check_inputs(op, logits, target);
  const int64_t N = logits.size(0), C = logits.size(1), sn = logits.stride(0), sc = logits.stride(1);
  const auto acc_dtype = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor out = at::empty({N}, logits.options().dtype(acc_dtype));
  if (N == 0) return out;
  const at::Tensor y = target.contiguous();
  FXK_DISPATCH_FLOATING(logits.scalar_type(), "compact_softmax_ce_fwd", [&] {
    const scalar_t* z = logits.const_data_ptr<scalar_t>();
    const int64_t* yp = y.const_data_ptr<int64_t>();
    acc_t* o = out.mutable_data_ptr<acc_t>();
    const acc_t hb = static_cast<acc_t>(beta) / 2;
    at::parallel_for(0, N, std::max<int64_t>(1, 32768 / C), [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n) {
        const scalar_t* zr = z + n * sn;
        const int64_t t = yp[n];
        const RowStats<acc_t> st = row_stats<scalar_t, acc_t>(zr, sc, C, t);
        o[n] = (st.m - to_acc<acc_t>(zr[t * sc])) + st.ls + hb * st.kl;
      }
    });
  });
  return out;
}

at::Tensor bwd_cpu(const at::Tensor& dl, const at::Tensor& logits, const at::Tensor& target, double beta) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const char* op = "fxkernels.compact_softmax_ce_bwd";
  check_inputs(op, logits, target);
  check_dl(op, dl, logits);
  const int64_t N = logits.size(0), C = logits.size(1), sn = logits.stride(0), sc = logits.stride(1);
  at::Tensor dz = at::empty({N, C}, logits.options().memory_format(at::MemoryFormat::Contiguous));
  if (N == 0) return dz;
  const at::Tensor y = target.contiguous();
  FXK_DISPATCH_FLOATING(logits.scalar_type(), "compact_softmax_ce_bwd", [&] {
    const at::Tensor g = dl.to(logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat).contiguous();
    const scalar_t* z = logits.const_data_ptr<scalar_t>();
    const int64_t* yp = y.const_data_ptr<int64_t>();
    const acc_t* gp = g.const_data_ptr<acc_t>();
    scalar_t* d = dz.mutable_data_ptr<scalar_t>();
    const acc_t hb = static_cast<acc_t>(beta) / 2, invK = acc_t(1) / static_cast<acc_t>(C - 1);
    at::parallel_for(0, N, std::max<int64_t>(1, 16384 / C), [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n) {
        const scalar_t* zr = z + n * sn;
        scalar_t* dr = d + n * C;
        const int64_t t = yp[n];
        const RowStats<acc_t> st = row_stats<scalar_t, acc_t>(zr, sc, C, t);
        const acc_t gn = gp[n];
        for (int64_t c = 0; c < C; ++c) {
          acc_t r;
          if (c == t) {
            r = st.py - acc_t(1);
          } else {
            const acc_t lq = (to_acc<acc_t>(zr[c * sc]) - st.m2) - st.ls2, q = std::exp(lq);
            r = st.rp * q + hb * (q - invK + q * (lq - st.S));
          }
          dr[c] = from_acc<scalar_t, acc_t>(gn * r);
        }
      }
    });
  });
  return dz;
}

}  // namespace

TORCH_LIBRARY_IMPL(fxkernels, CPU, m) {
  m.impl("compact_softmax_ce_fwd", &fwd_cpu);
  m.impl("compact_softmax_ce_bwd", &bwd_cpu);
}

}  // namespace compact_softmax_ce
}  // namespace fxk
