"""Triton backend of the CCC family (math and the backend contract in ./README.md).

Launchers (the five functions of the backend contract), one module per op, re-exported here:

    knn_cosine_triton(x, k) -> nbr                                     triton_knn.py
    edge_max_fwd_triton(ag, nbr) -> (y, arg)                           triton_edge.py
    edge_max_bwd_triton(dy, y, arg, nbr) -> dag                        triton_edge.py
    spatial_edge_fwd_triton(x, nbr, w2, a) -> (y, arg)                 triton_spatial.py
    spatial_edge_bwd_triton(dy, y, arg, x, nbr, w2) -> (da, dxg, dw2)  triton_spatial.py

Kernels:

* ``_knn_cosine_kernel`` (rows ``R <= 256``): one program per (batch, block of ``BM`` rows).  The Gram
  block of those rows against all ``R`` rows (padded to ``RP``, a power of two) and the squared norms of
  all rows are accumulated over the feature axis in registers (``tl.dot`` with ``"ieee"`` input precision
  for fp32, never tf32; fp64 math for fp64), ``sim = dot / (max(|x_r|, eps) max(|x_q|, eps))`` with IEEE
  division / square root, then ``k`` rounds of: row max, smallest column attaining it, store, mask it out
  (ties -> lower index, as a stable descending sort; a NaN similarity takes the key +inf, so NaNs come
  first, in index order, as in the reference).  The ``R x R`` matrix never goes to memory.  Every element
  of the Gram block is computed the same way wherever it sits, so bitwise-equal rows score bitwise-equal
  similarities and tie (under ``TRITON_INTERPRET=1`` numpy's matmul does not: the duplicate-row test
  of ``tests/ops/test_edge_cases.py`` gives the interpreter a position-independent dot, as the GPU's).
* ``_knn_cosine_tiled_kernel`` (``R > 256`` and ``k <= 64``): the same per row block, streamed over
  column tiles of ``BN``, merging each similarity tile into a running sorted top-``KP`` buffer held in
  registers.  ``R > 256`` with ``k > 64`` falls back to ``knn_cosine_ref`` (which normalises first and
  computes the similarity in the input dtype, and ties duplicate rows itself).
* ``_edge_max_fwd_kernel``: per (batch, ``BI`` rows, ``BF`` features): loop over the ``k`` neighbours,
  gather ``g[nbr]``, ``v = ReLU(round_to_dtype(a + g))``, running max and first arg (uint8); NaN
  propagates through the ReLU and the first NaN slot wins, as ``torch.relu`` / ``torch.max``.
* ``_edge_max_bwd_kernel``: deterministic, no atomics.  The host builds the inverse adjacency of each
  batch (CSR: a stable argsort of ``nbr.view(B, C*k)`` groups the entries ``e = i*k + s`` by target ``j``
  in increasing ``(i, s)`` order, offsets by ``searchsorted``).  One program per (batch, target row ``j``,
  ``BF`` features) writes ``da[j] = dy[j] (y[j] > 0)`` and sums ``da[i] [arg[i] == s]`` over the entries of
  ``j`` in order (fp32 / fp64), into ``dag = [da, dg]``.
* ``_spatial_fwd_kernel``: a gather-GEMM with a running max, per (batch, ``BM`` channels, ``BF`` outputs):
  for each ``s``, ``h_s = sum_n x[b, c, nbr[b, n, s]] w2[f, n]`` over ``BK`` chunks of ``n`` (the
  ``(B, C, N, k)`` gathered tensor is never formed), ``v = ReLU(round_to_dtype(a + h_s))``, max / arg.
* ``_spatial_dw2_kernel``: ``dw2[f, n] = sum_{b, c, s} dh_s[b, c, f] x[b, c, nbr[b, n, s]]`` as a
  gather-GEMM per (``BF`` x ``BN`` tile, batch chunk) with ``dh_s = dy [not y <= 0] [arg == s]`` built on the
  fly; torch sums the per-chunk partials in a fixed order.
* ``_spatial_p_kernel`` + ``_spatial_scatter_kernel`` (``dxg``), for each ``s``: ``P_s^T[b, n, c] =
  sum_f w2[f, n] dh_s[b, c, f]`` (a GEMM into an fp32 / fp64 scratch), then a deterministic scatter through
  the inverse of ``nbr[:, :, s]`` (CSR from a stable argsort): ``acc[b, m, c] += sum_{n: nbr[b,n,s]=m}
  P_s^T[b, n, c]`` with ``n`` increasing, ``s`` outer.  ``da = dy [not y <= 0]`` is a torch select.

Accumulation is fp32 for fp32/fp16/bf16 and fp64 for fp64.  The spatial GEMMs use ``tl.dot`` with
PyTorch's fp32 matmul precision (``"tf32"`` only when TF32 matmuls are enabled), the k-NN always
``"ieee"``.  Launch configurations come from a finite set shared with ``aot_specs()`` (for
``python -m fxkernels.aot``), and every runtime argument is unspecialised
(``fxkernels._triton_utils.kernel``), so the AOT-compiled binaries are exactly what runs.
Notes: ``v`` is rounded to bf16 by bit arithmetic (round to nearest even, as the GPU's ``cvt.rn``; the
interpreter's own fp32 -> bf16 cast truncates).  ``dh_s`` / ``dg`` select the winning entries (masked
loads / ``where``), so a non-finite ``dy`` at a non-winning position contributes nothing instead of
``NaN * 0``.  For fp64 the spatial backward GEMM kernels read ``arg`` as an int32 copy (Triton 3.8 cannot
lower an fp64 MMA whose operand mask derives from 8-bit data).  Empty inputs launch nothing.
Neighbour indices are not range-checked (that would need a device sync): they must be valid.
"""

from __future__ import annotations

import torch

from fxkernels._triton_utils import DTYPE_VARIANTS, KernelSpec

from .triton_common import EPS, K_MAX
from .triton_edge import edge_max_bwd_triton, edge_max_fwd_triton, edge_specs
from .triton_knn import (
    KNN_FUSED_MAX,
    KNN_KP_CLASSES,
    KNN_RP_CLASSES,
    KNN_TILED_KMAX,
    knn_cosine_triton,
    knn_specs,
)
from .triton_spatial import spatial_edge_bwd_triton, spatial_edge_fwd_triton, spatial_specs


def aot_specs() -> list[KernelSpec]:
    """Every (kernel, signature, constexprs, num_warps, num_stages) the launchers can use."""
    return knn_specs() + edge_specs() + spatial_specs()


def aot_launch_samples() -> None:
    """Call every launcher on small CPU tensors for every dtype variant and launch class.
    ``fxkernels.aot`` runs this inside ``record_launches()`` (nothing executes) and checks that every
    recorded launch is one of ``aot_specs()``."""
    m = torch.backends.cuda.matmul
    has_new = isinstance(getattr(m, "fp32_precision", None), str)
    saved = m.fp32_precision if has_new else m.allow_tf32
    try:
        for dtype, prec in DTYPE_VARIANTS:
            if has_new:
                m.fp32_precision = "tf32" if prec == "tf32" else "ieee"
            else:  # pragma: no cover - older torch
                m.allow_tf32 = prec == "tf32"
            for R in (5, 20, 40, 100, 256):
                knn_cosine_triton(torch.zeros(1, R, 3, dtype=dtype), 2)
            for kk in (3, 20, 64):
                knn_cosine_triton(torch.zeros(1, 300, 3, dtype=dtype), kk)
            B, C, N, F, k = 2, 5, 7, 3, 2
            nbr = torch.zeros(B, C, k, dtype=torch.int64)
            y, arg = edge_max_fwd_triton(torch.zeros(B, C, 2 * F, dtype=dtype), nbr)
            edge_max_bwd_triton(torch.zeros_like(y), y, arg, nbr)
            x = torch.zeros(B, C, N, dtype=dtype)
            nbr = torch.zeros(B, N, k, dtype=torch.int64)
            w2 = torch.zeros(F, N, dtype=dtype)
            y, arg = spatial_edge_fwd_triton(x, nbr, w2, torch.zeros(B, C, F, dtype=dtype))
            spatial_edge_bwd_triton(torch.zeros_like(y), y, arg, x, nbr, w2)
    finally:
        if has_new:
            m.fp32_precision = saved
        else:  # pragma: no cover
            m.allow_tf32 = saved


__all__ = [
    "EPS",
    "K_MAX",
    "KNN_FUSED_MAX",
    "KNN_KP_CLASSES",
    "KNN_RP_CLASSES",
    "KNN_TILED_KMAX",
    "aot_launch_samples",
    "aot_specs",
    "edge_max_bwd_triton",
    "edge_max_fwd_triton",
    "knn_cosine_triton",
    "spatial_edge_bwd_triton",
    "spatial_edge_fwd_triton",
]
