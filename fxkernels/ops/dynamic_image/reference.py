"""Pure-PyTorch reference for the dynamic image (approximate rank pooling, math in README.md): the oracle and the
fallback."""

from __future__ import annotations

import torch


def _coefficients64(T: int) -> tuple:
    """alpha_1 .. alpha_T as Python floats (IEEE fp64), in the operation order of the C++ kernels (bitwise equal).
    Not cached: a few T-long loops, and torch.compile traces it as constants."""
    H = [0.0] * (T + 1)  # harmonic numbers H_0 .. H_T, summed in order
    for k in range(1, T + 1):
        H[k] = H[k - 1] + 1.0 / k
    return tuple(2.0 * (T - t + 1) - (T + 1) * (H[T] - H[t - 1]) for t in range(1, T + 1))


def dynamic_image_coefficients(T: int, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
    """Bilen's approximate rank-pooling weights alpha (T,): alpha_t = 2(T-t+1) - (T+1)(H_T - H_{t-1}), t = 1..T.

    Computed in fp64 (H_k the k-th harmonic number, H_0 = 0) and rounded once to `dtype`; they sum to 0
    (T = 1 gives [0]; T = 30 gives alpha_1 = -63.845..., alpha_30 = 0.967...).
    """
    if isinstance(T, bool) or not isinstance(T, int) or T < 0:
        raise ValueError(f"fxkernels.dynamic_image_coefficients: T must be an int >= 0, got {T!r}")
    return torch.tensor(_coefficients64(T), dtype=torch.float64).to(dtype=dtype, device=device)


def dynamic_image_ref(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """y = sum_t alpha_t x_t over the axis `dim`: x's shape without that axis, x's dtype.

    x: any shape with the time axis at `dim` (default (B, T, C, H, W)); differentiable by autograd, empty inputs
    included. Half-precision inputs are computed in fp32 and rounded once (as the fused kernels accumulate).
    """
    d = dim + x.dim() if dim < 0 else dim
    dt = x.dtype
    acc = torch.float64 if dt == torch.float64 else torch.float32
    alpha = dynamic_image_coefficients(x.shape[d], acc, x.device)
    xt = x.to(acc).movedim(d, -1)  # (..., T)
    y = (xt * alpha).sum(-1)
    return y.to(dt)


__all__ = ["dynamic_image_ref", "dynamic_image_coefficients"]
