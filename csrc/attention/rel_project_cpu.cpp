// The rel-pos projection of the attention family on CPU (fxkernels/ops/attention/README.md, "Rel-pos bias"):
//   rel[b, h, n, :] = [q_i . Gt[t_n, k] | q_i . Gh[h_n, k] | q_i . Gw[w_n, k]],  i = c + n,  n = (t_n Hq + h_n) Wq + w_n
// and its backward: dq_i = sum_k drel[n, k] G_k (zero for the cls row), dGt[t, k] = sum over the rows with t_n = t
// (all heads) of drel[n, k] q_i, and likewise dGh, dGw. In plain PyTorch this is nine small einsums with
// permuted copies of q (about 4 ms fwd+bwd at mvit_v2_s stage 4, a quarter of the attention itself); here it is
// one pass over q per direction. Rows are independent in the forward and for dq; each table row (t, h or w) is
// one task that sums its rows in a fixed order, so the result does not depend on the thread count (no atomics).
// R * hd multiply-adds per row in three loop helpers that GCC compiles for AVX-512, AVX2 and the baseline and picks
// at load time (target_clones: the op is small next to the attention, so it has no entry in the ISA table).
#include <algorithm>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/checks.h"

namespace fxk {
namespace attn {
namespace {

struct Proj {
  int64_t B = 0, nh = 0, Lq = 0, hd = 0, Nq = 0;
  int64_t Tq = 0, Hq = 0, Wq = 0, Tk = 0, Hk = 0, Wk = 0;
  int c = 0;
  int64_t R() const { return Tk + Hk + Wk; }
};

Proj check_proj(const char* op, const at::Tensor& q, const at::Tensor& Gt, const at::Tensor& Gh, const at::Tensor& Gw,
                bool has_cls) {
  check_floating(q, op, "q", 4, "(B, nh, Lq, hd)");
  TORCH_CHECK(q.device().is_cpu(), op, ": q must be a CPU tensor (the cpu kernels), got q on ", q.device());
  const auto acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  Proj p;
  p.B = q.size(0);
  p.nh = q.size(1);
  p.Lq = q.size(2);
  p.hd = q.size(3);
  p.c = has_cls ? 1 : 0;
  const char* names[3] = {"Gt", "Gh", "Gw"};
  const at::Tensor* gs[3] = {&Gt, &Gh, &Gw};
  int64_t nq[3], nk[3];
  for (int a = 0; a < 3; ++a) {
    const at::Tensor& g = *gs[a];
    TORCH_CHECK(g.defined() && g.dim() == 3, op, ": ", names[a], " must be a 3-D (nq, nk, hd) tensor, got ",
                g.defined() ? shape_str(g.sizes()) : std::string("an undefined tensor"));
    TORCH_CHECK(g.device() == q.device(), op, ": ", names[a], " must be on q's device (", q.device(), "), got ",
                g.device());
    TORCH_CHECK(g.scalar_type() == acc, op, ": ", names[a], " must be in q's accumulation dtype ", acc, ", got ",
                g.scalar_type());
    TORCH_CHECK(g.size(2) == p.hd, op, ": ", names[a], " must be (nq, nk, hd) with q's hd = ", p.hd, ", got ",
                shape_str(g.sizes()));
    nq[a] = g.size(0);
    nk[a] = g.size(1);
  }
  p.Tq = nq[0], p.Hq = nq[1], p.Wq = nq[2], p.Tk = nk[0], p.Hk = nk[1], p.Wk = nk[2];
  p.Nq = p.Tq * p.Hq * p.Wq;
  TORCH_CHECK(p.Lq == p.c + p.Nq, op, ": q must have c + Tq*Hq*Wq = ", p.c, " + ", p.Nq, " tokens (the tables' query ",
              "grid ", p.Tq, "x", p.Hq, "x", p.Wq, "), got q of shape ", shape_str(q.sizes()));
  return p;
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FXK_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FXK_CLONES
#endif

// out[k] = row . g[k, :] for k < nk (g: nk rows of hd)
#define FXK_DOTS(A)                                                                 \
  FXK_CLONES void dots(const A* row, const A* g, int64_t nk, int64_t hd, A* out) {  \
    for (int64_t k = 0; k < nk; ++k) {                                              \
      const A* gk = g + k * hd;                                                     \
      A acc = A(0);                                                                 \
      _Pragma("omp simd reduction(+ : acc)") for (int64_t d = 0; d < hd; ++d) acc += row[d] * gk[d]; \
      out[k] = acc;                                                                 \
    }                                                                               \
  }
// acc[:] += sum_k w[k] g[k, :]
#define FXK_AXPYS(A)                                                                   \
  FXK_CLONES void axpys(const A* w, const A* g, int64_t nk, int64_t hd, A* acc) {      \
    for (int64_t k = 0; k < nk; ++k) {                                                 \
      const A wk = w[k];                                                               \
      const A* gk = g + k * hd;                                                        \
      _Pragma("omp simd") for (int64_t d = 0; d < hd; ++d) acc[d] += wk * gk[d];       \
    }                                                                                  \
  }
// out[k, :] += w[k] row[:]
#define FXK_OUTER(A)                                                                   \
  FXK_CLONES void outer_add(const A* w, const A* row, int64_t nk, int64_t hd, A* out) { \
    for (int64_t k = 0; k < nk; ++k) {                                                 \
      const A wk = w[k];                                                               \
      A* o = out + k * hd;                                                             \
      _Pragma("omp simd") for (int64_t d = 0; d < hd; ++d) o[d] += wk * row[d];        \
    }                                                                                  \
  }
FXK_DOTS(float)
FXK_DOTS(double)
FXK_AXPYS(float)
FXK_AXPYS(double)
FXK_OUTER(float)
FXK_OUTER(double)

// The table row of grid row n on each axis: t, h, w.
inline void coords(const Proj& p, int64_t n, int64_t& t, int64_t& h, int64_t& w) {
  w = n % p.Wq;
  h = (n / p.Wq) % p.Hq;
  t = n / (p.Wq * p.Hq);
}

template <typename T, typename A>
void fwd_impl(const Proj& p, const at::Tensor& q, const A* G[3], A* rel) {
  const int64_t hd = p.hd, R = p.R(), heads = p.B * p.nh;
  const int64_t sb = q.stride(0), sh = q.stride(1), sl = q.stride(2);
  const T* qp = q.const_data_ptr<T>();
  const int64_t nk[3] = {p.Tk, p.Hk, p.Wk};
  at::parallel_for(0, heads * p.Nq, 256, [&](int64_t r0, int64_t r1) {
    std::vector<A> row(hd);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t bh = r / p.Nq, n = r - bh * p.Nq, b = bh / p.nh, h = bh - b * p.nh;
      const T* src = qp + b * sb + h * sh + (p.c + n) * sl;
      for (int64_t d = 0; d < hd; ++d) row[d] = to_acc<A>(src[d]);
      int64_t ix[3];
      coords(p, n, ix[0], ix[1], ix[2]);
      A* out = rel + r * R;
      for (int a = 0; a < 3; ++a) {
        dots(row.data(), G[a] + ix[a] * nk[a] * hd, nk[a], hd, out);
        out += nk[a];
      }
    }
  });
}

template <typename T, typename A>
void bwd_impl(const Proj& p, const A* drel, const at::Tensor& q, const A* G[3], T* dq, A* dG[3]) {
  const int64_t hd = p.hd, R = p.R(), heads = p.B * p.nh;
  const int64_t nk[3] = {p.Tk, p.Hk, p.Wk}, off[3] = {0, p.Tk, p.Tk + p.Hk};
  if (dq != nullptr) {  // dq (B, nh, Lq, hd) contiguous; the cls rows are zero
    at::parallel_for(0, heads * p.Lq, 256, [&](int64_t r0, int64_t r1) {
      std::vector<A> acc(hd);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t bh = r / p.Lq, i = r - bh * p.Lq;
        T* dst = dq + r * hd;
        std::fill(acc.begin(), acc.end(), A(0));
        if (i >= p.c) {
          const int64_t n = i - p.c;
          int64_t ix[3];
          coords(p, n, ix[0], ix[1], ix[2]);
          const A* dr = drel + (bh * p.Nq + n) * R;
          for (int a = 0; a < 3; ++a) axpys(dr + off[a], G[a] + ix[a] * nk[a] * hd, nk[a], hd, acc.data());
        }
        for (int64_t d = 0; d < hd; ++d) dst[d] = from_acc<T>(acc[d]);
      }
    });
  }
  if (dG[0] == nullptr) return;
  // one task per table row (axis a, index x): dG[a][x, k, :] = sum over its grid rows, heads outer, rows in order
  const int64_t nq[3] = {p.Tq, p.Hq, p.Wq};
  const int64_t ntask = nq[0] + nq[1] + nq[2];
  const int64_t sb = q.stride(0), sh = q.stride(1), sl = q.stride(2);
  const T* qp = q.const_data_ptr<T>();
  at::parallel_for(0, ntask, 1, [&](int64_t t0, int64_t t1) {
    std::vector<A> row(hd);
    for (int64_t task = t0; task < t1; ++task) {
      int a = 0;
      int64_t x = task;
      while (x >= nq[a]) x -= nq[a++];
      A* out = dG[a] + x * nk[a] * hd;
      std::fill(out, out + nk[a] * hd, A(0));
      // the grid rows n with coordinate x on axis a, in increasing n
      const int64_t HW = p.Hq * p.Wq;
      const int64_t cnt = p.Nq / nq[a];
      for (int64_t bh = 0; bh < heads; ++bh) {
        const int64_t b = bh / p.nh, h = bh - b * p.nh;
        const T* qh = qp + b * sb + h * sh;
        const A* drh = drel + bh * p.Nq * R + off[a];
        for (int64_t m = 0; m < cnt; ++m) {
          int64_t n;
          if (a == 0) {
            n = x * HW + m;
          } else if (a == 1) {
            n = (m / p.Wq) * HW + x * p.Wq + m % p.Wq;
          } else {
            n = m * p.Wq + x;
          }
          const T* src = qh + (p.c + n) * sl;
          for (int64_t d = 0; d < hd; ++d) row[d] = to_acc<A>(src[d]);
          outer_add(drh + n * R, row.data(), nk[a], hd, out);
        }
      }
    }
  });
}

at::Tensor unit_last(const at::Tensor& t) { return (t.size(-1) <= 1 || t.stride(-1) == 1) ? t : t.contiguous(); }

at::Tensor rel_pos_project_fwd_cpu(const at::Tensor& q_, const at::Tensor& Gt, const at::Tensor& Gh,
                                   const at::Tensor& Gw, bool has_cls) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const char* op = "fxkernels.rel_pos_project_fwd";
  const Proj p = check_proj(op, q_, Gt, Gh, Gw, has_cls);
  const at::Tensor q = unit_last(q_);
  const at::Tensor g[3] = {Gt.contiguous(), Gh.contiguous(), Gw.contiguous()};
  at::Tensor rel = at::empty({p.B, p.nh, p.Nq, p.R()}, g[0].options());
  if (rel.numel() == 0) return rel;
  FXK_DISPATCH_FLOATING(q.scalar_type(), "fxkernels.rel_pos_project_fwd (cpu)", [&] {
    const acc_t* G[3] = {g[0].const_data_ptr<acc_t>(), g[1].const_data_ptr<acc_t>(), g[2].const_data_ptr<acc_t>()};
    fwd_impl<scalar_t, acc_t>(p, q, G, rel.mutable_data_ptr<acc_t>());
  });
  return rel;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rel_pos_project_bwd_cpu(
    const at::Tensor& drel_, const at::Tensor& q_, const at::Tensor& Gt, const at::Tensor& Gh, const at::Tensor& Gw,
    bool has_cls, bool need_q, bool need_g) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const char* op = "fxkernels.rel_pos_project_bwd";
  const Proj p = check_proj(op, q_, Gt, Gh, Gw, has_cls);
  TORCH_CHECK(drel_.defined() && drel_.device() == q_.device() && drel_.scalar_type() == Gt.scalar_type(), op,
              ": drel must be a ", Gt.scalar_type(), " tensor on ", q_.device());
  check_shape(drel_, op, "drel", "(B, nh, Tq*Hq*Wq, Tk+Hk+Wk)", {p.B, p.nh, p.Nq, p.R()});
  const at::Tensor q = unit_last(q_), drel = drel_.contiguous();
  const at::Tensor g[3] = {Gt.contiguous(), Gh.contiguous(), Gw.contiguous()};
  at::Tensor dq = need_q ? at::empty(q.sizes(), q.options().memory_format(at::MemoryFormat::Contiguous))
                         : at::empty({0}, q.options());
  at::Tensor dg[3];
  for (int a = 0; a < 3; ++a) dg[a] = need_g ? at::empty(g[a].sizes(), g[a].options()) : at::empty({0}, g[a].options());
  if (need_g && p.B * p.nh * p.Nq == 0)
    for (auto& t : dg) t.zero_();
  if (need_q && p.B * p.nh * p.Nq == 0) dq.zero_();
  if (p.B * p.nh * p.Nq == 0 || (!need_q && !need_g)) return {dq, dg[0], dg[1], dg[2]};
  FXK_DISPATCH_FLOATING(q.scalar_type(), "fxkernels.rel_pos_project_bwd (cpu)", [&] {
    const acc_t* G[3] = {g[0].const_data_ptr<acc_t>(), g[1].const_data_ptr<acc_t>(), g[2].const_data_ptr<acc_t>()};
    acc_t* dG[3] = {nullptr, nullptr, nullptr};
    if (need_g)
      for (int a = 0; a < 3; ++a) dG[a] = dg[a].mutable_data_ptr<acc_t>();
    bwd_impl<scalar_t, acc_t>(p, drel.const_data_ptr<acc_t>(), q, G, need_q ? dq.mutable_data_ptr<scalar_t>() : nullptr,
                              dG);
  });
  return {dq, dg[0], dg[1], dg[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fxkernels, CPU, m) {
  m.impl("rel_pos_project_fwd", &rel_pos_project_fwd_cpu);
  m.impl("rel_pos_project_bwd", &rel_pos_project_bwd_cpu);
}

}  // namespace attn
}  // namespace fxk
