// CCC CPU kernels (fxkernels/ops/ccc/README.md, "Backend contract"). Included once per ISA variant
// (ccc_cpu.cpp: baseline, ccc_cpu_avx2.cpp: AVX2+FMA); everything here has internal linkage, so the variants
// never mix. Element math from ccc_math.h (shared with the CUDA kernels).
//
// The dense products go to ATen GEMMs (MKL / OpenBLAS); the gathers, the running max with its argmax, the k-NN
// selection and the deterministic scatters are the loops below, parallelised with at::parallel_for over
// disjoint outputs (no atomics, every sum in a fixed order), inner loops contiguous over f (or n, or q).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "ccc/ccc.h"
#include "ccc/ccc_math.h"

namespace fxk {
namespace ccc {
namespace {

// Scratch budget of the chunked spatial loops (elements of the largest per-chunk buffer; ~4 MB in fp32).
constexpr int64_t kChunkElems = int64_t{1} << 20;
// k-NN: the similarity buffer of one chunk holds at most this many elements (never the whole B x R x R).
constexpr int64_t kSimElems = int64_t{1} << 20;

// ---------------------------------------------------------------------------------------------------------
// k-NN

// dst = x / max(|x|, eps) for one row: squared norm with 8 interleaved partial sums (a fixed order that
// vectorises), then the division.
template <typename T, typename A>
void normalize_row(const T* FXK_RESTRICT x, int64_t D, A* FXK_RESTRICT dst) {
  constexpr int L = 8;
  A part[L] = {};
  int64_t d = 0;
  for (; d + L <= D; d += L)
    for (int t = 0; t < L; ++t) {
      const A v = to_acc<A>(x[d + t]);
      part[t] += v * v;
    }
  A s = A(0);
  for (int t = 0; t < L; ++t) s += part[t];
  for (; d < D; ++d) {
    const A v = to_acc<A>(x[d]);
    s += v * v;
  }
  const A c = knn_clamp_norm(std::sqrt(s));
  for (d = 0; d < D; ++d) dst[d] = knn_normalize(to_acc<A>(x[d]), c);
}

// Sorted top-k list (vals, idx)[0, k): insert (v, q), which comes before the current last entry, dropping that
// one. Candidates arrive in increasing index order, so every entry has a lower index than q and comes before
// (v, q) iff its value is NaN or >= v (knn_better with the index tie rule); the entries before form a prefix.
template <typename A>
inline void knn_insert(A v, int64_t q, int64_t k, A* FXK_RESTRICT vals, int64_t* FXK_RESTRICT idx) {
  int64_t pos = 0;
  if (v == v) {
    for (int64_t j = 0; j + 1 < k; ++j) pos += static_cast<int64_t>(vals[j] >= v || vals[j] != vals[j]);
  } else {
    for (int64_t j = 0; j + 1 < k; ++j) pos += static_cast<int64_t>(vals[j] != vals[j]);
  }
  for (int64_t j = k - 1; j > pos; --j) {
    vals[j] = vals[j - 1];
    idx[j] = idx[j - 1];
  }
  vals[pos] = v;
  idx[pos] = q;
}

// Top-k by a threshold: the row is split into kGroups interleaved groups (q mod kGroups); the k-th largest
// group maximum thr is a lower bound of the k-th largest value (k <= kGroups distinct elements reach it), so
// only the candidates with !(v < thr) (NaNs included) can be in the top k. They are collected in index order
// and selected by insertion. Every step is exact: the result is the knn order whatever the values.
constexpr int kGroups = 32;

// Writes the k best indices of one row of similarities in knn order. cand: scratch of R indices; vals: scratch
// of k values.
template <typename A>
void select_row(const A* FXK_RESTRICT sim, int64_t R, int64_t k, int64_t* FXK_RESTRICT out,
                int64_t* FXK_RESTRICT cand, A* FXK_RESTRICT vals) {
  auto before = [sim](int64_t i1, int64_t i2) { return knn_better(sim[i1], i1, sim[i2], i2); };
  if (k > kGroups) {
    std::iota(cand, cand + R, int64_t{0});
    std::partial_sort(cand, cand + k, cand + R, before);
    std::copy(cand, cand + k, out);
    return;
  }
  constexpr int G = kGroups;
  const A inf = std::numeric_limits<A>::infinity();
  // Group maxima (NaNs never win the compare, so mx has no NaN).
  A mx[G];
  for (int g = 0; g < G; ++g) mx[g] = -inf;
  int64_t q = 0;
  for (; q + G <= R; q += G)
    for (int g = 0; g < G; ++g) mx[g] = sim[q + g] > mx[g] ? sim[q + g] : mx[g];
  for (int g = 0; q + g < R; ++g) mx[g] = sim[q + g] > mx[g] ? sim[q + g] : mx[g];
  // thr = the k-th largest group maximum = the smallest one with fewer than k strictly larger.
  A thr = inf;
  for (int i = 0; i < G; ++i) {
    int larger = 0;
    for (int j = 0; j < G; ++j) larger += static_cast<int>(mx[j] > mx[i]);
    thr = (larger < k && mx[i] < thr) ? mx[i] : thr;
  }
  // Candidates in index order (blocks without any are skipped by a vectorised test).
  int64_t n = 0;
  for (q = 0; q + G <= R; q += G) {
    int hit = 0;
    for (int g = 0; g < G; ++g) hit |= static_cast<int>(!(sim[q + g] < thr));
    if (hit == 0) continue;
    for (int g = 0; g < G; ++g)
      if (!(sim[q + g] < thr)) cand[n++] = q + g;
  }
  for (; q < R; ++q)
    if (!(sim[q] < thr)) cand[n++] = q;
  // n >= k. Sort the first k candidates, then insert every later one that beats the k-th.
  std::copy(cand, cand + k, out);
  std::sort(out, out + k, before);
  for (int64_t j = 0; j < k; ++j) vals[j] = sim[out[j]];
  for (int64_t t = k; t < n; ++t) {
    const int64_t c = cand[t];
    if (knn_better(sim[c], c, vals[k - 1], out[k - 1])) knn_insert(sim[c], c, k, vals, out);
  }
}

// Duplicate rows: a GEMM can give two bitwise-equal rows similarities 1 ulp apart (different register tiles),
// which would break their tie. rep[b * R + r] = the lowest row of batch b whose normalised values are bitwise
// equal to row r's (a hash of the bits, rows sorted by (hash, index), equal hashes confirmed with memcmp).
// Returns whether any row has rep != itself.
template <typename A>
bool first_equal_rows(const A* FXK_RESTRICT xn, int64_t B, int64_t R, int64_t D, int64_t* FXK_RESTRICT rep) {
  const size_t bytes = static_cast<size_t>(D) * sizeof(A);
  std::vector<uint8_t> dup(static_cast<size_t>(B), 0);
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<uint64_t> h(static_cast<size_t>(R));
    std::vector<int64_t> order(static_cast<size_t>(R));
    for (int64_t b = b0; b < b1; ++b) {
      const A* xb = xn + b * R * D;
      int64_t* rb = rep + b * R;
      for (int64_t r = 0; r < R; ++r) {
        // sum of the row's 32-bit words times distinct odd constants (independent terms: cheap, exact)
        uint64_t v = 0, c = 0x9E3779B97F4A7C15ull;
        for (size_t i = 0; i < bytes / 4; ++i, c += 0x3C6EF372FE94F82Aull) {
          uint32_t w;
          std::memcpy(&w, reinterpret_cast<const unsigned char*>(xb + r * D) + 4 * i, 4);
          v += static_cast<uint64_t>(w) * (c | 1);
        }
        h[r] = v;
      }
      std::iota(order.begin(), order.end(), int64_t{0});
      std::sort(order.begin(), order.end(), [&](int64_t i, int64_t j) { return h[i] != h[j] ? h[i] < h[j] : i < j; });
      for (int64_t a = 0; a < R;) {
        int64_t e = a + 1;
        while (e < R && h[order[e]] == h[order[a]]) ++e;
        // a run of equal hashes, in increasing index order: each row joins the first earlier equal row
        for (int64_t t = a; t < e; ++t) {
          const int64_t r = order[t];
          rb[r] = r;
          for (int64_t u = a; u < t; ++u) {
            const int64_t c = order[u];
            if (rb[c] == c && std::memcmp(xb + c * D, xb + r * D, bytes) == 0) {
              rb[r] = c;
              dup[b] = 1;
              break;
            }
          }
        }
        a = e;
      }
    }
  });
  return std::any_of(dup.begin(), dup.end(), [](uint8_t v) { return v != 0; });
}

template <typename T, typename A>
void knn_impl(const KnnProblem& pb, const at::Tensor& out) {
  const int64_t B = pb.B, R = pb.R, D = pb.D, k = pb.k;
  // Normalised rows in the accumulation type.
  at::Tensor xn = at::empty({B, R, D}, pb.x.options().dtype(acc_dtype(pb.x.scalar_type())));
  const T* xp = pb.x.const_data_ptr<T>();
  A* xnp = xn.mutable_data_ptr<A>();
  at::parallel_for(0, B * R, std::max<int64_t>(1, 8192 / std::max<int64_t>(D, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) normalize_row<T, A>(xp + r * D, D, xnp + r * D);
  });
  int64_t* op = out.mutable_data_ptr<int64_t>();
  std::vector<int64_t> rep(static_cast<size_t>(B * R));
  const bool dups = first_equal_rows<A>(xnp, B, R, D, rep.data());
  // per batch, the columns that score as their first equal row (CSR: dup_cols[dup_off[b], dup_off[b + 1]))
  std::vector<int64_t> dup_off(static_cast<size_t>(B + 1), 0), dup_cols;
  if (dups) {
    for (int64_t g = 0; g < B * R; ++g)
      if (rep[g] != g % R) {
        dup_cols.push_back(g % R);
        ++dup_off[g / R + 1];
      }
    for (int64_t b = 0; b < B; ++b) dup_off[b + 1] += dup_off[b];
  }

  // Selection of the rows [0, rows) of a chunk: row t is the global row g = b0 * R + r0 + t (= b * R + r), its
  // similarities at sims + t * R. A row equal to an earlier one is skipped (it gets that row's list below).
  auto select = [&](A* sims, int64_t b0, int64_t r0, int64_t rows) {
    at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / R), [&](int64_t t0, int64_t t1) {
      std::vector<int64_t> cand(R);
      std::vector<A> vals(k);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t g = b0 * R + r0 + t, b = g / R;
        A* st = sims + t * R;
        if (dups) {
          if (rep[g] != g - b * R) continue;
          for (int64_t e = dup_off[b]; e < dup_off[b + 1]; ++e) st[dup_cols[e]] = st[rep[b * R + dup_cols[e]]];
        }
        select_row<A>(st, R, k, op + g * k, cand.data(), vals.data());
      }
    });
  };
  if (R * R <= kSimElems) {
    // Whole Gram matrices of a group of batches per GEMM.
    const int64_t gb = std::max<int64_t>(1, std::min<int64_t>(B, kSimElems / std::max<int64_t>(R * R, 1)));
    at::Tensor buf = at::empty({gb, R, R}, xn.options());
    for (int64_t b0 = 0; b0 < B; b0 += gb) {
      const int64_t nb = std::min(gb, B - b0);
      const at::Tensor xs = xn.narrow(0, b0, nb);
      at::Tensor sims = buf.narrow(0, 0, nb);
      at::bmm_out(sims, xs, xs.transpose(1, 2));
      select(sims.mutable_data_ptr<A>(), b0, 0, nb * R);
    }
  } else {
    // Row chunks of one batch.
    const int64_t rc = std::max<int64_t>(1, kSimElems / R);
    at::Tensor buf = at::empty({std::min(rc, R), R}, xn.options());
    for (int64_t b = 0; b < B; ++b) {
      const at::Tensor xb = xn[b];
      for (int64_t r0 = 0; r0 < R; r0 += rc) {
        const int64_t nr = std::min(rc, R - r0);
        at::Tensor sims = buf.narrow(0, 0, nr);
        at::mm_out(sims, xb.narrow(0, r0, nr), xb.t());
        select(sims.mutable_data_ptr<A>(), b, r0, nr);
      }
    }
  }
  if (dups)
    for (int64_t g = 0; g < B * R; ++g) {
      const int64_t src = g - g % R + rep[g];
      if (src != g) std::copy(op + src * k, op + src * k + k, op + g * k);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Running max over slots, vectorised over f. Slot s of a row with centre terms a[0, F) (storage dtype T) and
// neighbour terms g[0, F) (T or the accumulation type); best / arg hold slots [0, s). arg is int32 here (the
// lane width of the float compare, so the select vectorises); finish_row narrows it to uint8.
template <typename T, typename A, typename G>
FXK_HD_INLINE void max_slot(int64_t F, int s, const T* FXK_RESTRICT a, const G* FXK_RESTRICT g,
                            A* FXK_RESTRICT best, int32_t* FXK_RESTRICT arg) {
  if (s == 0) {
    for (int64_t f = 0; f < F; ++f) {
      best[f] = edge_value<T, A>(to_acc<A>(a[f]), to_acc<A>(g[f]));
      arg[f] = 0;
    }
    return;
  }
  for (int64_t f = 0; f < F; ++f) {
    const A v = edge_value<T, A>(to_acc<A>(a[f]), to_acc<A>(g[f]));
    const bool take = edge_takes(v, best[f]);
    best[f] = take ? v : best[f];
    arg[f] = take ? s : arg[f];
  }
}

template <typename T, typename A>
FXK_HD_INLINE void finish_row(int64_t F, const A* FXK_RESTRICT best, const int32_t* FXK_RESTRICT arg,
                              T* FXK_RESTRICT y, uint8_t* FXK_RESTRICT arg8) {
  for (int64_t f = 0; f < F; ++f) {
    y[f] = from_acc<T>(best[f]);
    arg8[f] = static_cast<uint8_t>(arg[f]);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Channel graph: edge max forward / backward

template <typename T, typename A>
void edge_fwd_impl(const EdgeProblem& pb, const at::Tensor& y, const at::Tensor& arg) {
  const int64_t C = pb.C, F = pb.F, k = pb.k;
  const T* ag = pb.ag.const_data_ptr<T>();
  const int64_t* nbr = pb.nbr.const_data_ptr<int64_t>();
  T* yp = y.mutable_data_ptr<T>();
  uint8_t* ap = arg.mutable_data_ptr<uint8_t>();
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(F * k, 1));
  at::parallel_for(0, pb.B * C, grain, [&](int64_t r0, int64_t r1) {
    std::vector<A> best(static_cast<size_t>(F));
    std::vector<int32_t> am(static_cast<size_t>(F));
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t b = row / C;
      const T* a = ag + row * 2 * F;
      for (int s = 0; s < k; ++s) {
        const T* g = ag + (b * C + nbr[row * k + s]) * 2 * F + F;
        max_slot<T, A, T>(F, s, a, g, best.data(), am.data());
      }
      finish_row<T, A>(F, best.data(), am.data(), yp + row * F, ap + row * F);
    }
  });
}

// Parallel over (b, f-block): a task owns dg[b, :, f-block] and sums into it in increasing (i, s) order.
template <typename T, typename A>
void edge_bwd_impl(const EdgeProblem& pb, const at::Tensor& dag) {
  const int64_t B = pb.B, C = pb.C, F = pb.F, k = pb.k;
  const T* dy = pb.dy.const_data_ptr<T>();
  const T* yv = pb.y.const_data_ptr<T>();
  const uint8_t* argp = pb.arg.const_data_ptr<uint8_t>();
  const int64_t* nbr = pb.nbr.const_data_ptr<int64_t>();
  T* out = dag.mutable_data_ptr<T>();
  // Whole rows (sequential memory) unless that leaves too few tasks or too big an accumulator.
  const int64_t want_tasks = 4 * static_cast<int64_t>(at::get_num_threads());
  int64_t fb = F;
  while (fb > 16 && (B * ((F + fb - 1) / fb) < want_tasks || C * fb * static_cast<int64_t>(sizeof(A)) > (1 << 19)))
    fb = (fb / 2 + 15) / 16 * 16;
  const int64_t nfb = (F + fb - 1) / fb;
  at::parallel_for(0, B * nfb, 1, [&](int64_t t0, int64_t t1) {
    std::vector<A> acc(static_cast<size_t>(C * fb));
    std::vector<A> da(static_cast<size_t>(fb));
    std::vector<int32_t> am(static_cast<size_t>(fb));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / nfb, f0 = (t % nfb) * fb, fl = std::min(fb, F - f0);
      std::fill(acc.begin(), acc.begin() + C * fl, A(0));
      for (int64_t i = 0; i < C; ++i) {
        const int64_t row = b * C + i;
        const T* FXK_RESTRICT dyr = dy + row * F + f0;
        const T* FXK_RESTRICT yr = yv + row * F + f0;
        const uint8_t* FXK_RESTRICT ar = argp + row * F + f0;
        T* FXK_RESTRICT dar = out + row * 2 * F + f0;
        A* FXK_RESTRICT dap = da.data();
        int32_t* FXK_RESTRICT amp = am.data();
        for (int64_t f = 0; f < fl; ++f) {
          dap[f] = relu_grad(to_acc<A>(dyr[f]), to_acc<A>(yr[f]));
          dar[f] = from_acc<T>(dap[f]);
          amp[f] = ar[f];
        }
        for (int s = 0; s < k; ++s) {
          A* FXK_RESTRICT accj = acc.data() + nbr[row * k + s] * fl;
          for (int64_t f = 0; f < fl; ++f) accj[f] += slot_grad(dap[f], amp[f], s);
        }
      }
      for (int64_t j = 0; j < C; ++j) {
        const A* FXK_RESTRICT src = acc.data() + j * fl;
        T* FXK_RESTRICT dst = out + (b * C + j) * 2 * F + F + f0;
        for (int64_t f = 0; f < fl; ++f) dst[f] = from_acc<T>(src[f]);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// Spatial graph: gather-GEMM edge max forward / backward, chunked over the batch.

// Batches per chunk so that the (k * rows, max(N, F)) scratch stays within kChunkElems.
inline int64_t spatial_chunk(const SpatialProblem& pb) {
  const int64_t per_batch = std::max<int64_t>(1, pb.k * pb.C * std::max<int64_t>(std::max(pb.N, pb.F), 1));
  return std::max<int64_t>(1, std::min<int64_t>(pb.B, kChunkElems / per_batch));
}

// xg[s * rows + (b - b0) * C + c, n] = x[b, c, nbr[b, n, s]] for b in [b0, b0 + nb), in the accumulation type.
template <typename T, typename A>
void spatial_gather(const SpatialProblem& pb, int64_t b0, int64_t nb, const at::Tensor& xg) {
  const int64_t C = pb.C, N = pb.N, k = pb.k, rows = nb * C;
  const T* x = pb.x.const_data_ptr<T>();
  const int64_t* nbr = pb.nbr.const_data_ptr<int64_t>();
  A* dst = xg.mutable_data_ptr<A>();
  at::parallel_for(0, k * rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(N, 1)), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t s = q / rows, r = q - s * rows, b = b0 + r / C;
      const T* FXK_RESTRICT src = x + (b0 * C + r) * N;
      const int64_t* FXK_RESTRICT idx = nbr + b * N * k + s;
      A* FXK_RESTRICT o = dst + q * N;
      for (int64_t n = 0; n < N; ++n) o[n] = to_acc<A>(src[idx[n * k]]);
    }
  });
}

template <typename T, typename A>
void spatial_fwd_impl(const SpatialProblem& pb, const at::Tensor& y, const at::Tensor& arg) {
  const int64_t C = pb.C, N = pb.N, F = pb.F, k = pb.k;
  const at::Tensor w2t = pb.w2.to(acc_dtype(pb.x.scalar_type())).t();  // (N, F)
  const T* ap = pb.a.const_data_ptr<T>();
  T* yp = y.mutable_data_ptr<T>();
  uint8_t* argp = arg.mutable_data_ptr<uint8_t>();
  const int64_t bc = spatial_chunk(pb);
  at::Tensor xg_buf = at::empty({k * bc * C, N}, w2t.options());
  at::Tensor h_buf = at::empty({k * bc * C, F}, w2t.options());
  for (int64_t b0 = 0; b0 < pb.B; b0 += bc) {
    const int64_t nb = std::min(bc, pb.B - b0), rows = nb * C;
    at::Tensor xg = xg_buf.narrow(0, 0, k * rows);
    at::Tensor h = h_buf.narrow(0, 0, k * rows);  // h_s stacked over s
    spatial_gather<T, A>(pb, b0, nb, xg);
    at::mm_out(h, xg, w2t);
    const A* hp = h.const_data_ptr<A>();
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(F * k, 1));
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
      std::vector<A> best(static_cast<size_t>(F));
      std::vector<int32_t> am(static_cast<size_t>(F));
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t row = b0 * C + r;
        for (int s = 0; s < k; ++s)
          max_slot<T, A, A>(F, s, ap + row * F, hp + (s * rows + r) * F, best.data(), am.data());
        finish_row<T, A>(F, best.data(), am.data(), yp + row * F, argp + row * F);
      }
    });
  }
}

template <typename T, typename A>
void spatial_bwd_impl(const SpatialProblem& pb, const at::Tensor& da_out, const at::Tensor& dxg_out,
                      const at::Tensor& dw2_acc) {
  const int64_t C = pb.C, N = pb.N, F = pb.F, k = pb.k;
  const at::Tensor w2a = pb.w2.to(acc_dtype(pb.x.scalar_type())).contiguous();  // (F, N)
  const T* dyp = pb.dy.const_data_ptr<T>();
  const T* yp = pb.y.const_data_ptr<T>();
  const uint8_t* argp = pb.arg.const_data_ptr<uint8_t>();
  const int64_t* nbr = pb.nbr.const_data_ptr<int64_t>();
  T* dap = da_out.mutable_data_ptr<T>();
  T* dxp = dxg_out.mutable_data_ptr<T>();
  at::Tensor dw2 = dw2_acc;
  const int64_t bc = spatial_chunk(pb);
  at::Tensor dh_buf = at::empty({k * bc * C, F}, w2a.options());
  at::Tensor xg_buf = at::empty({k * bc * C, N}, w2a.options());
  at::Tensor p_buf = at::empty({k * bc * C, N}, w2a.options());
  for (int64_t b0 = 0; b0 < pb.B; b0 += bc) {
    const int64_t nb = std::min(bc, pb.B - b0), rows = nb * C;
    // da and dh_s = da * (arg == s), stacked over s: (k * rows, F)
    at::Tensor dh = dh_buf.narrow(0, 0, k * rows);
    A* dhp = dh.mutable_data_ptr<A>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(F * k, 1)), [&](int64_t r0,
                                                                                              int64_t r1) {
      std::vector<A> da(static_cast<size_t>(F));
      std::vector<int32_t> am(static_cast<size_t>(F));
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t row = b0 * C + r;
        const T* FXK_RESTRICT dyr = dyp + row * F;
        const T* FXK_RESTRICT yr = yp + row * F;
        const uint8_t* FXK_RESTRICT ar = argp + row * F;
        T* FXK_RESTRICT dar = dap + row * F;
        A* FXK_RESTRICT d = da.data();
        int32_t* FXK_RESTRICT amp = am.data();
        for (int64_t f = 0; f < F; ++f) {
          d[f] = relu_grad(to_acc<A>(dyr[f]), to_acc<A>(yr[f]));
          dar[f] = from_acc<T>(d[f]);
          amp[f] = ar[f];
        }
        for (int s = 0; s < k; ++s) {
          A* FXK_RESTRICT o = dhp + (s * rows + r) * F;
          for (int64_t f = 0; f < F; ++f) o[f] = slot_grad(d[f], amp[f], s);
        }
      }
    });
    at::Tensor xg = xg_buf.narrow(0, 0, k * rows);
    spatial_gather<T, A>(pb, b0, nb, xg);
    dw2.addmm_(dh.t(), xg);  // dw2 += sum_s dh_s^T xg_s
    at::Tensor p = p_buf.narrow(0, 0, k * rows);
    at::mm_out(p, dh, w2a);  // dh_s w2 stacked over s: (k * rows, N)
    const A* pp = p.const_data_ptr<A>();
    // dxg[b, c, m] = sum over (n, s) with nbr[b, n, s] == m of p_s[b, c, n], in increasing (n, s) order.
    at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(N * k, 1)), [&](int64_t r0,
                                                                                             int64_t r1) {
      std::vector<A> acc(static_cast<size_t>(N));
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t row = b0 * C + r, b = row / C;
        const int64_t* FXK_RESTRICT nb_b = nbr + b * N * k;
        A* FXK_RESTRICT ac = acc.data();
        std::fill(acc.begin(), acc.end(), A(0));
        for (int64_t n = 0; n < N; ++n)
          for (int s = 0; s < k; ++s) ac[nb_b[n * k + s]] += pp[(s * rows + r) * N + n];
        T* FXK_RESTRICT dst = dxp + row * N;
        for (int64_t m = 0; m < N; ++m) dst[m] = from_acc<T>(ac[m]);
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Entry points of this ISA variant (dtype dispatch).

void knn_kernel(const KnnProblem& pb, const at::Tensor& out) {
  FXK_DISPATCH_FLOATING(pb.x.scalar_type(), "fxkernels.ccc_knn", [&] { knn_impl<scalar_t, acc_t>(pb, out); });
}
void edge_fwd_kernel(const EdgeProblem& pb, const at::Tensor& y, const at::Tensor& arg) {
  FXK_DISPATCH_FLOATING(pb.ag.scalar_type(), "fxkernels.ccc_edge_max_fwd",
                        [&] { edge_fwd_impl<scalar_t, acc_t>(pb, y, arg); });
}
void edge_bwd_kernel(const EdgeProblem& pb, const at::Tensor& dag) {
  FXK_DISPATCH_FLOATING(pb.dy.scalar_type(), "fxkernels.ccc_edge_max_bwd",
                        [&] { edge_bwd_impl<scalar_t, acc_t>(pb, dag); });
}
void spatial_fwd_kernel(const SpatialProblem& pb, const at::Tensor& y, const at::Tensor& arg) {
  FXK_DISPATCH_FLOATING(pb.x.scalar_type(), "fxkernels.ccc_spatial_fwd",
                        [&] { spatial_fwd_impl<scalar_t, acc_t>(pb, y, arg); });
}
void spatial_bwd_kernel(const SpatialProblem& pb, const at::Tensor& da, const at::Tensor& dxg,
                        const at::Tensor& dw2_acc) {
  FXK_DISPATCH_FLOATING(pb.x.scalar_type(), "fxkernels.ccc_spatial_bwd",
                        [&] { spatial_bwd_impl<scalar_t, acc_t>(pb, da, dxg, dw2_acc); });
}

inline CpuKernels make_cpu_kernels() {
  return CpuKernels{&knn_kernel, &edge_fwd_kernel, &edge_bwd_kernel, &spatial_fwd_kernel, &spatial_bwd_kernel};
}

}  // namespace
}  // namespace ccc
}  // namespace fxk
