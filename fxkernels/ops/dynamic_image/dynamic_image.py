"""Public op `dynamic_image`: Bilen's approximate rank pooling y = sum_t alpha_t x_t in one pass (README.md).

Defined with the op kit (fxkernels/ops/opkit.py) as the custom ops `fxkernels::dynamic_image` and
`fxkernels::dynamic_image_backward` (fakes and registered autograd), so it runs under `torch.compile(fullgraph=True)`;
eager calls use an autograd.Function around the same launches. The ops take x as it is (any rank, any strides) with
the canonical (non-negative) `dim`; the kernels merge the other axes themselves (README.md "Backend contract").
backend="reference" runs `dynamic_image_ref`. There is no hand-written CUDA kernel: CUDA tensors go to Triton.
"""

from __future__ import annotations

from torch import Tensor

from ..._checks import check_tensor
from ..opkit import FusedOp
from .reference import dynamic_image_ref

OP = "dynamic_image"
# Which compiled kernels serve the family in each backend (availability checks, `python -m fxkernels`).
KERNELS = {"triton": True, "cpu": "dynamic_image_fwd"}


def _launchers(backend: str):
    if backend == "triton":
        from . import triton as mod

        return mod.dynamic_image_fwd_triton, mod.dynamic_image_bwd_triton
    from . import cpp as mod

    return mod.dynamic_image_fwd_cpp, mod.dynamic_image_bwd_cpp


def _check_inputs(x, dim) -> int:
    check_tensor(OP, "x", x)
    if x.dim() < 1:
        raise ValueError(
            f"fxkernels.{OP}: x must have at least 1 dimension (the time axis), got a 0-d tensor"
        )
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"fxkernels.{OP}: dim must be an int, got {type(dim).__name__}")
    n = x.dim()
    if not -n <= dim < n:
        raise ValueError(
            f"fxkernels.{OP}: dim must name an axis of the {n}-D x (shape {tuple(x.shape)}), "
            f"in [{-n}, {n - 1}], got {dim}"
        )
    return dim % n


def _out_shape(shape, dim: int) -> list:
    return [s for a, s in enumerate(shape) if a != dim]


# ---------------------------------------------------------------------------------------------- the op
def _forward(x: Tensor, dim: int, backend: str) -> Tensor:
    return _launchers(backend)[0](x, dim)


def _forward_fake(x, dim, backend):
    return x.new_empty(_out_shape(x.shape, dim))


def _backward(dy: Tensor, dim: int, T: int, backend: str) -> Tensor:
    return _launchers(backend)[1](dy, dim, T)


def _backward_fake(dy, dim, T, backend):
    shape = list(dy.shape)
    shape.insert(dim, T)
    return dy.new_empty(shape)


def _setup(ctx, args, output):
    x, dim = args
    ctx.dim, ctx.T = dim, x.shape[dim]  # the backward needs no tensor of the forward


def _grads(ctx, bwd, dy):
    return bwd(dy, ctx.dim, ctx.T), None


dynamic_image_op = FusedOp(
    OP,
    KERNELS,
    forward=_forward,
    fake=_forward_fake,
    backward=_backward,
    backward_fake=_backward_fake,
    setup=_setup,
    grads=_grads,
)


# ------------------------------------------------------------------------------------ public function
def dynamic_image(x: Tensor, dim: int = 1, backend: str = "auto") -> Tensor:
    """Dynamic image (Bilen et al.'s approximate rank pooling) of a clip: y = sum_t alpha_t x_t over the axis `dim`.

    alpha_t = 2(T-t+1) - (T+1)(H_T - H_{t-1}), t = 1..T (H_k the k-th harmonic number, H_0 = 0), computed in fp64
    and rounded once to the accumulation dtype (`dynamic_image_coefficients`); no rescaling of the result.

    Args:
        x: (B, T, C, H, W) for the default dim=1 (MTSTWN: an RGB clip (B, 3, T, H, W) with dim=2); in general any
            shape with >= 1 axes and the time axis at `dim`, float32/float64/float16/bfloat16, any strides.
        dim: the time axis, in [-x.dim(), x.dim() - 1].
        backend: "auto" | "reference" | "triton" | "cpu" (no hand-written CUDA kernel: "auto" runs Triton on
            CUDA tensors and the C++ kernel on CPU tensors; "cuda" is not available for this op).
    Returns:
        y: x's shape without the axis `dim`, x's dtype, contiguous; one read of x, fp32 accumulation (fp64 for
        fp64). Differentiable w.r.t. x (dx_t = alpha_t dy, written in one pass, contiguous); deterministic on
        every backend (each output element is one fixed-order sum, no atomics). T = 0 gives zeros.
    """
    d = _check_inputs(x, dim)
    be = dynamic_image_op.resolve(backend, x.device)
    if be == "reference":
        return dynamic_image_ref(x, d)
    return dynamic_image_op(x, d, be)


__all__ = ["dynamic_image", "KERNELS"]
