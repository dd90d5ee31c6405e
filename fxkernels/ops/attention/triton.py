"""Triton backend of the attention family (math and the backend contract in ./README.md).

Launchers (the kit op's backend contract):

    attention_fwd_triton(q, k, v, rel, scale, thw_k, has_cls, add_q, add_q_cls) -> (O, lse)        triton_fwd.py
    attention_bwd_triton(dO, q, k, v, rel, O, lse, scale, thw_k, has_cls, add_q, add_q_cls, need_rel)
        -> (dq, dk, dv, drel or None)                                                              triton_bwd.py
    attention_pool_fwd_triton(x, weight, norm_weight, norm_bias, stride, thw, has_cls, eps) -> (y, stats)
    attention_pool_bwd_triton(dy, x, weight, norm_weight, norm_bias, stats, stride, thw, has_cls, eps)
        -> (dx, dw, dnw, dnb)                                              pool_triton.py (kernels there)

Kernels (the programs of one (b, h) are adjacent on grid axis 0 so its k, v or q, dO stay in L2; axis 1 is
the head slice of the head-chunked classes, size 1 otherwise):

* ``_attention_fwd_kernel``: one program per (b, h, ``BLOCK_M`` query rows): flash attention with the online
  softmax over ``BLOCK_N`` key tiles, ``S = scale q k^T`` with ``tl.dot``, plus for grid rows / grid keys the
  bias gathered from the row's ``rel`` (``rel[i, jt] + rel[i, Tk+jh] + rel[i, Tk+Hk+jw]``, ``(jt, jh, jw)``
  from ``j - c`` and ``(Hk, Wk)``); writes ``O = P v / l + r q`` and ``lse = m + log l``.
* ``_attention_bwd_row_kernel``: one program per (b, h, ``BLOCK_M`` rows): ``delta = rowsum(dO (O - r q))``
  (stored for the column pass), then over the key tiles ``P = exp(S - lse)``, ``dS = P (dO v^T - delta)``,
  ``dq += dS k`` and ``drel += dS @ onehot``: the ``(BLOCK_N, BLOCK_R)`` 0/1 matrix of each key's three bins
  (built from iota comparisons), so the drel row (``Tk+Hk+Wk <= 128`` bins) stays in registers; that product
  runs as 3xTF32 (fp32 accuracy on tensor cores; the one-hot is exact) or fp64.
* ``_attention_bwd_col_kernel``: one program per (b, h, ``BLOCK_N`` keys): over the query tiles ``P^T``,
  ``dv += P^T dO``, ``dk += dS^T q`` (``dk`` scaled once at the end).
* ``_attention_packed_fwd_kernel`` / ``_attention_packed_bwd_kernel`` (triton_packed.py, chosen by the two
  launchers through ``uses_packed``): without a bias and with ``Lq, Lk <= 64``, one program per ``PAIRS``
  (b, h) pairs, each pair's whole sequence in one tile; the backward in one kernel (no delta buffer).

Every output element is written by one program (no atomics: deterministic). Accumulation is fp32 (fp64 for
fp64 inputs), one rounding at the store (bf16 by bit arithmetic, round to nearest even, exact under
``TRITON_INTERPRET`` too); fp16 / bf16 products take P and dS rounded to the input dtype (as FlashAttention),
fp32 ``tl.dot`` runs as 3xTF32 (fp32 accuracy on tensor cores) whatever PyTorch's TF32 switch says.
``scale`` goes in as an fp32 pair ``hi + lo`` added in the accumulation dtype (Triton passes Python floats
as fp32). ``BLOCK_D`` is the next power of two of ``hd`` (at least 32; masked), ``BLOCK_R`` 32 or 128 by
``R = Tk+Hk+Wk``; the tile sizes per (kernel, dtype class, ``BLOCK_D``, bias class) in
``triton_common.BLOCKS`` (whole-head, or head-chunked with ``BLOCK_DC < BLOCK_D``: the head axis contracted
in chunks, each program writing a ``BLOCK_DC`` slice of the outputs) compile with 0 spills for sm_80 / sm_90 (``tools/tune_attention_blocks.py``,
``python -m fxkernels.aot --family attention``). Any strides on the first three axes of q, k, v, dO and rel (the last axis is made unit-stride
if it is not); (b, h) offsets are int64, the rest int32. Every runtime argument is unspecialised
(``fxkernels._triton_utils.kernel``) and the launch configurations come from the same functions as
``aot_specs()``, so the AOT-compiled binaries are exactly what runs. Empty inputs launch nothing.
"""

from __future__ import annotations

import torch

from fxkernels._triton_utils import DTYPE_VARIANTS, FLOAT_DTYPES, KernelSpec, acc_torch_dtype

from .pool_triton import (
    attention_pool_bwd_triton,
    attention_pool_fwd_triton,
    pool_launch_samples,
    pool_specs,
)
from .triton_bwd import _attention_bwd_col_kernel, _attention_bwd_row_kernel, attention_bwd_triton
from .triton_common import BD_CLASSES, BR_CLASSES, MAX_HD, MAX_R, meta, spec, unsupported
from .triton_fwd import _attention_fwd_kernel, attention_fwd_triton
from .triton_packed import BL_CLASSES, packed_specs, uses_packed

KERNELS = (
    ("fwd", _attention_fwd_kernel, ("rel_ptr", "lse_ptr")),
    ("row", _attention_bwd_row_kernel, ("rel_ptr", "lse_ptr", "delta_ptr", "drel_ptr")),
    ("col", _attention_bwd_col_kernel, ("rel_ptr", "lse_ptr", "delta_ptr")),
)


def attention_specs() -> list[KernelSpec]:
    specs = []
    # fp32 has one binary per class (3xTF32 whatever the TF32 switch says: triton_common.kernel_prec)
    for dtype in FLOAT_DTYPES:
        prec = "ieee"
        for bd in BD_CLASSES:
            for has_rel, br in [(False, BR_CLASSES[0])] + [(True, br) for br in BR_CLASSES]:
                if unsupported(dtype, bd, br if has_rel else None):
                    continue  # no spill-free tiles: the launchers refuse it (triton_common.BLOCKS)
                for kind, fn, acc in KERNELS:
                    specs.append(spec(fn, dtype, prec, meta(kind, dtype, prec, bd, has_rel, br), acc))
    return specs


def aot_specs() -> list[KernelSpec]:
    """Every (kernel, signature, constexprs, num_warps, num_stages) the launchers can use."""
    return attention_specs() + packed_specs() + pool_specs()


def _attention_samples(dtype: torch.dtype) -> None:
    adt = acc_torch_dtype(dtype)
    for hd in (8, 32, 64, 96, 128, 256):
        for has_cls, thw_k in (
            (False, (2, 3, 5)),
            (True, (2, 3, 5)),
            (True, (4, 16, 20)),
            (False, (1, 63, 64)),
        ):
            c = int(has_cls)
            Lk = c + thw_k[0] * thw_k[1] * thw_k[2]
            Lq = c + 7
            q = torch.zeros(1, 2, Lq, hd, dtype=dtype)
            k = torch.zeros(1, 1, 1, hd, dtype=dtype).expand(1, 2, Lk, hd)
            for rel in (None, torch.zeros(1, 2, Lq - c, sum(thw_k), dtype=adt)):
                if unsupported(dtype, hd, None if rel is None else sum(thw_k)):
                    continue
                grid_k = list(thw_k) if rel is not None else [1, 1, Lk - c]
                o, lse = attention_fwd_triton(q, k, k, rel, 0.125, grid_k, has_cls, True, False)
                attention_bwd_triton(o, q, k, k, rel, o, lse, 0.125, grid_k, has_cls, True, False, True)


def _packed_samples(dtype: torch.dtype) -> None:
    """Both launchers on short sequences without a bias: every BLOCK_L and head class, packed where
    triton_packed.PACKED has tiles (else the flash kernels)."""
    for hd in (8, 64, 128, 256):
        for L in BL_CLASSES:
            q = torch.zeros(2, 3, L - 1, hd, dtype=dtype)
            o, lse = attention_fwd_triton(q, q, q, None, 0.125, [1, 1, L - 2], True, True, False)
            attention_bwd_triton(o, q, q, q, None, o, lse, 0.125, [1, 1, L - 2], True, True, False, False)


def aot_launch_samples() -> None:
    """Call every launcher on small CPU tensors for every dtype variant, head class and bias width class.
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
            _attention_samples(dtype)
            _packed_samples(dtype)
            pool_launch_samples(dtype)
    finally:
        if has_new:
            m.fp32_precision = saved
        else:  # pragma: no cover
            m.allow_tf32 = saved


__all__ = [
    "MAX_HD",
    "MAX_R",
    "aot_launch_samples",
    "aot_specs",
    "attention_bwd_triton",
    "attention_fwd_triton",
    "attention_pool_bwd_triton",
    "attention_pool_fwd_triton",
    "unsupported",
    "uses_packed",
]
