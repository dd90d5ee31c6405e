// CCC CPU k-NN kernel (fxkernels/ops/ccc/README.md, "Backend contract": knn_cosine), part of ccc_cpu_kernels.h:
// included once per ISA variant, internal linkage. Normalised rows (ccc_math.h), one similarity GEMM per chunk
// (ATen: MKL / OpenBLAS), duplicate rows scored as their first equal row, and the exact top-k selection.
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

// The similarity buffer of one chunk holds at most this many elements (never the whole B x R x R).
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
        // two sums of the row's 32-bit words times position-dependent odd constants (independent terms: the
        // loop vectorises; any collision is resolved by the memcmp below)
        const unsigned char* p = reinterpret_cast<const unsigned char*>(xb + r * D);
        uint32_t h1 = 0, h2 = 0;
        for (uint32_t i = 0; i < static_cast<uint32_t>(bytes / 4); ++i) {
          uint32_t w;
          std::memcpy(&w, p + 4 * static_cast<size_t>(i), 4);
          const uint32_t c = i * 0x9E3779B9u;
          h1 += w * (c | 1u);
          h2 += (w ^ (c >> 11)) * ((c + 0x7F4A7C15u) | 1u);
        }
        h[r] = (static_cast<uint64_t>(h1) << 32) | h2;
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

}  // namespace
}  // namespace ccc
}  // namespace fxk
