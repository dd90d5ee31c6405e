"""Public CCC ops: `knn_cosine`, `channel_edge_conv` (paper graph) and `spatial_edge_conv` (official graph).

The dense projections are GEMMs done here with torch (shared by every backend); the backends supply the
fused k-NN and the gather-add-ReLU-max kernels and their deterministic backward (contract: README.md).
All three are `torch.library` custom ops (`fxkernels::knn_cosine`, `fxkernels::channel_edge_conv`,
`fxkernels::spatial_edge_conv` and the edge convs' `*_backward` ops) defined with the op kit
(fxkernels/ops/opkit.py: fakes, registered autograd, an eager autograd.Function around the same launches),
so they run under `torch.compile(fullgraph=True)`. backend="reference" runs plain PyTorch.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..._checks import check_same, check_tensor, has_data
from ..opkit import FusedOp, empty_if_none
from .reference import channel_edge_conv_ref, knn_cosine_ref, spatial_edge_conv_ref

OP = "knn_cosine"
# Which compiled kernels serve the family in each backend (availability checks, `python -m fxkernels`).
KERNELS = {"triton": True, "cpu": "ccc_knn", "cuda": "ccc_knn"}
_EDGE_KERNELS = {
    False: {"triton": True, "cpu": "ccc_edge_max_fwd", "cuda": "ccc_edge_max_fwd"},
    True: {"triton": True, "cpu": "ccc_spatial_fwd", "cuda": "ccc_spatial_fwd"},
}
CPU_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
MAX_FUSED_K = 255  # the fused kernels store the winning neighbour slot as uint8


def _launchers(backend: str):
    if backend == "triton":
        from . import triton as mod

        sfx = "triton"
    else:  # "cpu" and "cuda": the C++ ops, dispatched on device
        from . import cpp as mod

        sfx = "cpp"
    return {
        name: getattr(mod, f"{name}_{sfx}")
        for name in ("knn_cosine", "edge_max_fwd", "edge_max_bwd", "spatial_edge_fwd", "spatial_edge_bwd")
    }


# ----------------------------------------------------------------------------------------------- checks
def _check_k(op: str, k, rows: int, what: str):
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"fxkernels.{op}: k must be an int, got {type(k).__name__}")
    if not 1 <= k <= rows:
        raise ValueError(f"fxkernels.{op}: k must be in [1, {what}] = [1, {rows}], got k={k}")


def _check_nbr(op: str, nbr, shape: tuple, desc: str, bound: int, x: Tensor):
    if not isinstance(nbr, torch.Tensor):
        raise TypeError(f"fxkernels.{op}: nbr must be a torch.Tensor, got {type(nbr).__name__}")
    if nbr.dtype != torch.int64:
        raise ValueError(f"fxkernels.{op}: nbr must be int64 (as knn_cosine returns), got {nbr.dtype}")
    if nbr.dim() != 3 or tuple(nbr.shape[:2]) != shape or nbr.shape[2] < 1:
        raise ValueError(
            f"fxkernels.{op}: nbr must have shape {desc} = ({shape[0]}, {shape[1]}, k) with k >= 1, got {tuple(nbr.shape)}"
        )
    if nbr.device != x.device:
        raise ValueError(f"fxkernels.{op}: nbr is on {nbr.device} but x is on {x.device}")
    # a data-dependent check: skipped without data (tracing, meta / fake tensors; the kernels check again)
    if nbr.numel() and has_data(nbr):
        lo, hi = int(nbr.min()), int(nbr.max())
        if lo < 0 or hi >= bound:
            raise ValueError(
                f"fxkernels.{op}: nbr values must be in [0, {bound}), got values in [{lo}, {hi}]"
            )


def _check_edge_inputs(op, x, nbr, weight1, weight2, bias1, bias2, spatial: bool):
    check_tensor(op, "x", x, 3, shape_desc="(B, C, N)")
    B, C, N = x.shape
    if spatial:
        _check_nbr(op, nbr, (B, N), "(B, N, k)", N, x)
    else:
        _check_nbr(op, nbr, (B, C), "(B, C, k)", C, x)
    check_tensor(op, "weight1", weight1, 2, shape_desc="(N_out, N)")
    if weight1.shape[1] != N:
        raise ValueError(
            f"fxkernels.{op}: weight1 must have shape (N_out, N) with N = {N}, got {tuple(weight1.shape)}"
        )
    F = weight1.shape[0]
    check_tensor(op, "weight2", weight2, 2, (F, N), "(N_out, N) ")
    for name, b in (("bias1", bias1), ("bias2", bias2)):
        if b is not None:
            check_tensor(op, name, b, 1, (F,), "(N_out,) ")
    check_same(op, "x", x, weight1=weight1, weight2=weight2, bias1=bias1, bias2=bias2)


def _why_not(k: int):
    def why(be: str):
        if k > MAX_FUSED_K:
            return f"the fused backends take k <= {MAX_FUSED_K}, got k={k}; use backend='reference'"
        return None

    return why


# ------------------------------------------------------------------------------- shared forward/backward
def _bias_sum(b1: Optional[Tensor], b2: Optional[Tensor]) -> Optional[Tensor]:
    if b1 is None:
        return b2
    return b1 if b2 is None else b1 + b2


def _channel_fwd(be, x, nbr, w1, w2, b1, b2):
    B, C, N = x.shape
    F = w1.shape[0]
    # A = x (W1 - W2)^T + b1 + b2 and G = x W2^T in one GEMM: ag = [A | G], (B, C, 2F)
    ws = torch.cat([w1 - w2, w2], 0)
    ag = (x.reshape(B * C, N) @ ws.t()).view(B, C, 2 * F)
    bias = _bias_sum(b1, b2)
    if bias is not None:
        ag[..., :F] += bias
    return _launchers(be)["edge_max_fwd"](ag, nbr)


def _channel_bwd(be, dy, x, nbr, w1, w2, y, arg, need_x: bool = True):
    B, C, N = x.shape
    F = w1.shape[0]
    dag = _launchers(be)["edge_max_bwd"](dy, y, arg, nbr).view(B * C, 2 * F)  # [dA | dG]
    ws = torch.cat([w1 - w2, w2], 0)
    dx = (dag @ ws).view(B, C, N) if need_x else None
    dws = dag.t() @ x.reshape(B * C, N)  # [dA^T x ; dG^T x]
    dw1 = dws[:F]
    dw2 = dws[F:] - dw1
    db = dag[:, :F].sum(0)
    return dx, dw1, dw2, db


def _spatial_fwd(be, x, nbr, w1, w2, b1, b2):
    B, C, N = x.shape
    F = w1.shape[0]
    # the centre terms: x W1^T - 2 x W2^T (the official code subtracts the centre twice) + biases
    a = (x.reshape(B * C, N) @ (w1 - 2.0 * w2).t()).view(B, C, F)
    bias = _bias_sum(b1, b2)
    if bias is not None:
        a += bias
    return _launchers(be)["spatial_edge_fwd"](x, nbr, w2, a)


def _spatial_bwd(be, dy, x, nbr, w1, w2, y, arg, need_x: bool = True):
    B, C, N = x.shape
    F = w1.shape[0]
    da, dxg, dw2g = _launchers(be)["spatial_edge_bwd"](dy, y, arg, x, nbr, w2)
    da2 = da.reshape(B * C, F)
    dx = (dxg + (da2 @ (w1 - 2.0 * w2)).view(B, C, N)) if need_x else None
    dw1 = da2.t() @ x.reshape(B * C, N)
    dw2 = dw2g - 2.0 * dw1
    db = da2.sum(0)
    return dx, dw1, dw2, db


_FWD = {False: _channel_fwd, True: _spatial_fwd}
_BWD = {False: _channel_bwd, True: _spatial_bwd}


# ---------------------------------------------------------------------------------------------- the ops
def _knn_forward(x: Tensor, k: int, backend: str) -> Tensor:
    return _launchers(backend)["knn_cosine"](x, k)


def _knn_fake(x, k, backend):
    return x.new_empty((x.shape[0], x.shape[1], k), dtype=torch.int64)


knn_cosine_op = FusedOp(OP, KERNELS, forward=_knn_forward, fake=_knn_fake)  # index-valued: no backward


def _edge_op(spatial: bool) -> FusedOp:
    def forward(
        x: Tensor,
        nbr: Tensor,
        weight1: Tensor,
        weight2: Tensor,
        bias1: Optional[Tensor],
        bias2: Optional[Tensor],
        backend: str,
    ) -> tuple[Tensor, Tensor]:
        return _FWD[spatial](backend, x, nbr, weight1, weight2, bias1, bias2)

    def fake(x, nbr, weight1, weight2, bias1, bias2, backend):
        shape = (x.shape[0], x.shape[1], weight1.shape[0])
        return x.new_empty(shape), x.new_empty(shape, dtype=torch.uint8)

    def backward(
        dy: Tensor,
        x: Tensor,
        nbr: Tensor,
        weight1: Tensor,
        weight2: Tensor,
        y: Tensor,
        arg: Tensor,
        need_x: bool,
        backend: str,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        dx, dw1, dw2, db = _BWD[spatial](backend, dy, x, nbr, weight1, weight2, y, arg, need_x)
        return empty_if_none(dx, x), dw1, dw2, db

    def backward_fake(dy, x, nbr, weight1, weight2, y, arg, need_x, backend):
        dx = torch.empty_like(x, memory_format=torch.contiguous_format) if need_x else x.new_empty(0)
        return dx, torch.empty_like(weight1), torch.empty_like(weight2), weight1.new_empty(weight1.shape[0])

    def setup(ctx, args, output):
        x, nbr, w1, w2, b1, b2 = args
        y, arg = output
        ctx.save_for_backward(x, nbr, w1, w2, y, arg)
        ctx.has_b = (b1 is not None, b2 is not None)
        ctx.mark_non_differentiable(arg)

    def grads(ctx, bwd, dy, _darg):
        x, nbr, w1, w2, y, arg = ctx.saved_tensors
        need_x = ctx.needs_input_grad[0]
        dx, dw1, dw2, db = bwd(dy.contiguous(), x, nbr, w1, w2, y, arg, need_x)
        dx = dx if need_x else None
        return dx, None, dw1, dw2, db if ctx.has_b[0] else None, db if ctx.has_b[1] else None

    return FusedOp(
        "spatial_edge_conv" if spatial else "channel_edge_conv",
        _EDGE_KERNELS[spatial],
        forward=forward,
        fake=fake,
        backward=backward,
        backward_fake=backward_fake,
        setup=setup,
        grads=grads,
    )


channel_edge_conv_op = _edge_op(spatial=False)
spatial_edge_conv_op = _edge_op(spatial=True)


# ------------------------------------------------------------------------------------ public functions
def knn_cosine(x: Tensor, k: int, backend: str = "auto") -> Tensor:
    """Top-k cosine neighbours of every row, self included, ties to the lower index.

    sim[b,i,j] = <x_i, x_j> / (max(|x_i|, eps) max(|x_j|, eps)), eps = 1e-12;  nbr[b,i,:] = top-k_j sim[b,i,j].

    Args:
        x: (B, C, N): C rows (graph nodes) of N features; for the spatial graph pass ``x.transpose(1, 2)``.
        k: 1 <= k <= C.
    Returns:
        nbr: (B, C, k) int64, in decreasing similarity. Not differentiable (x is detached).
    """
    check_tensor("knn_cosine", "x", x, 3, shape_desc="(B, C, N)")
    _check_k("knn_cosine", k, x.shape[1], "C")
    x = x.detach()
    be = knn_cosine_op.resolve(backend, x.device)
    if be == "reference":
        return knn_cosine_ref(x, k)
    return knn_cosine_op(x, k, be)


def _edge_conv(spatial, x, nbr, weight1, weight2, bias1, bias2, backend):
    op = "spatial_edge_conv" if spatial else "channel_edge_conv"
    _check_edge_inputs(op, x, nbr, weight1, weight2, bias1, bias2, spatial)
    fused = spatial_edge_conv_op if spatial else channel_edge_conv_op
    be = fused.resolve(backend, x.device, _why_not(nbr.shape[-1]))
    if be == "reference":
        ref = spatial_edge_conv_ref if spatial else channel_edge_conv_ref
        return ref(x, nbr, weight1, weight2, bias1, bias2)
    return fused(x, nbr, weight1, weight2, bias1, bias2, be)[0]


def channel_edge_conv(
    x: Tensor,
    nbr: Tensor,
    weight1: Tensor,
    weight2: Tensor,
    bias1: Optional[Tensor] = None,
    bias2: Optional[Tensor] = None,
    backend: str = "auto",
) -> Tensor:
    """Edge convolution over the channel graph (MOL paper; README.md "Channel graph"), max-aggregated.

    y[b,i,:] = max_{j in nbr[b,i]} ReLU(W1 x_i + b1 + W2 (x_j - x_i) + b2).

    Args:
        x: (B, C, N), any strides.  nbr: (B, C, k) int64 in [0, C) (from `knn_cosine(x, k)`).
        weight1, weight2: (N_out, N).  bias1, bias2: (N_out,), optional.
        backend: "auto" | "reference" | "triton" | "cuda" | "cpu" (fused backends: k <= 255).
    Returns:
        y: (B, C, N_out). The fused backends never build the (B, C, k, N_out) edge tensor: they save the
        winning neighbour per output element. The backward is deterministic on every backend (no float
        atomics); no gradient flows to `nbr`.
    """
    return _edge_conv(False, x, nbr, weight1, weight2, bias1, bias2, backend)


def spatial_edge_conv(
    x: Tensor,
    nbr: Tensor,
    weight1: Tensor,
    weight2: Tensor,
    bias1: Optional[Tensor] = None,
    bias2: Optional[Tensor] = None,
    backend: str = "auto",
) -> Tensor:
    """Edge convolution over the spatial graph, the official MOL code's semantics (README.md "Spatial graph").

    y[b,c,:] = max_j ReLU(W1 x_c + b1 + W2 (P_j x_c - 2 x_c) + b2),  (P_j x_c)[n] = x[b,c,nbr[b,n,j]].

    Args:
        x: (B, C, N), any strides.  nbr: (B, N, k) int64 in [0, N) (from `knn_cosine(x.transpose(1, 2), k)`).
        weight1, weight2: (N_out, N) (the official `conv1`/`conv2` weights, `Conv1d(1, N, N).weight[:, 0]`).
        bias1, bias2: (N_out,), optional.
    Returns:
        y: (B, C, N_out). Fused backends: gather-GEMMs with a running max, saving the winning neighbour;
        deterministic backward (no float atomics); no gradient flows to `nbr`.
    """
    return _edge_conv(True, x, nbr, weight1, weight2, bias1, bias2, backend)


__all__ = ["knn_cosine", "channel_edge_conv", "spatial_edge_conv", "KERNELS", "MAX_FUSED_K"]
