"""Pure-PyTorch reference for the spectral temporal filter (math in README.md): the oracle and the fallback.

`spectral_filter_ref` is the README formula with `torch.fft`; `spectral_filter_dft` is the same filter written with
the explicit real-DFT matrices of README.md (the form the fused kernels compute), a second oracle for the tests.
"""

from __future__ import annotations

import functools
import math

import torch

NORMS = ("ortho", "backward", "forward")


def _canonical_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def spectral_filter_ref(
    x: torch.Tensor,
    filt: torch.Tensor,
    residual: torch.Tensor | None = None,
    dim: int = 2,
    norm: str | None = "ortho",
) -> torch.Tensor:
    """y = irfft(rfft(x, dim, norm) * complex(filt), n=T, dim, norm) (+ residual).

    x: (B, C, T, H, W) with the time axis at `dim` (any axis); filt: x's shape with T -> T//2+1 at `dim`, each other
    axis 1 or x's size, plus a trailing (real, imag) axis of 2; residual: x's shape or None.
    Half-precision inputs are computed in fp32 and rounded once (as the fused kernels accumulate).
    """
    dt = x.dtype
    d = _canonical_dim(dim, x.dim())
    if dt in (torch.float16, torch.bfloat16):
        x, filt = x.float(), filt.float()
        residual = residual.float() if residual is not None else None
    T = x.shape[d]
    if x.numel() == 0:  # torch.fft rejects empty inputs on CPU; keep the graph (zero gradients) all the same
        y = x * 0 + filt.sum() * 0
        return (y + residual if residual is not None else y).to(dt)
    X = torch.fft.rfft(x, dim=d, norm=norm)
    F = torch.complex(filt[..., 0], filt[..., 1])
    y = torch.fft.irfft(X * F, n=T, dim=d, norm=norm)
    if residual is not None:
        y = y + residual
    return y.to(dt)


@functools.lru_cache(maxsize=256)
def _dft_matrices64(T: int):
    """Analysis (M, T) and synthesis (T, M) real-DFT matrices in float64 (README.md "Math"), CPU."""
    M = T // 2 + 1
    k = torch.arange(M, dtype=torch.int64).view(M, 1)
    t = torch.arange(T, dtype=torch.int64).view(1, T)
    j = (k * t) % T  # exact index k t mod T before the float angle
    ang = (2 * math.pi / T) * j.double()
    ca, sa = torch.cos(ang), -torch.sin(ang)  # Xr = ca @ x, Xi = sa @ x
    # exact values on the axes (sin(pi) is 1.2e-16 in floating point), as the C++ twiddle tables
    ca = torch.where((4 * j == T) | (4 * j == 3 * T), torch.zeros_like(ca), ca)
    sa = torch.where(2 * j == T, torch.zeros_like(sa), sa)
    w = torch.full((M,), 2.0 / T, dtype=torch.float64)
    w[0] = 1.0 / T
    if T % 2 == 0:
        w[M - 1] = 1.0 / T
    cs = (ca * w.view(M, 1)).t().contiguous()  # y = cs @ Zr + ss @ Zi
    ss = (sa * w.view(M, 1)).t().contiguous()
    return ca, sa, cs, ss


def dft_matrices(T: int, dtype=torch.float64, device="cpu"):
    """(ca, sa, cs, ss): Xr = ca @ x, Xi = sa @ x (ca, sa: (M, T)); y = cs @ Zr + ss @ Zi (cs, ss: (T, M))
    for Z = F * X, the one-sided weights (1/T at DC and Nyquist, 2/T elsewhere) folded into cs, ss."""
    return tuple(m.to(dtype=dtype, device=device) for m in _dft_matrices64(int(T)))


def spectral_filter_dft(x, filt, residual=None, dim: int = 2):
    """The filter with the explicit DFT matrices (second oracle; differentiable, any dtype it is given)."""
    d = _canonical_dim(dim, x.dim())
    xt = x.movedim(d, -1)  # (..., T)
    ft = filt.movedim(d, -2)  # (..., M, 2)
    ca, sa, cs, ss = dft_matrices(x.shape[d], x.dtype, x.device)
    xr, xi = xt @ ca.t(), xt @ sa.t()  # (..., M)
    fr, fi = ft[..., 0], ft[..., 1]
    zr, zi = fr * xr - fi * xi, fr * xi + fi * xr
    y = (zr @ cs.t() + zi @ ss.t()).movedim(-1, d)
    return y + residual if residual is not None else y
