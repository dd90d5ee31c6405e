"""Divided space-time attention (STT's transformer block) on `fxkernels.attention`.

Tokens x: (B, 1 + F*N, d), the class token first, then the F frames' N patch tokens frame by frame. One block:

    p   += Proj_s(Attn_s(LN_s(p)))              per frame:  (B*F, heads, N, N)  attention, cls left out
    u    = Proj_t(Attn_t(LN_t([cls, p_n])))     per patch:  (B*N, heads, F+1, F+1), cls repeated as step 0
    p   += u[:, 1:];  cls += mean_n u[:, 0]      one residual for the one class token
    x    = [cls, p];  x += MLP(LN(x))            Linear(d, 4d) -> GELU -> Linear(4d, d)

Space first, then time; each attention has its own LayerNorm (eps 1e-6), `qkv = Linear(d, 3d)` and output
projection; stochastic depth on every residual branch. The frames and patches are batched by reshaping, with no
Python loop over either.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_tensor
from ..ops.attention import qkv_attention
from .attention import check_backend, check_int
from .mvit import StochasticDepth


class _SelfAttention(nn.Module):
    """LayerNorm -> qkv -> softmax attention (fxkernels.attention) -> output projection, on (S, L, d)."""

    def __init__(self, dim: int, num_heads: int, backend: str):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.backend = backend

    def forward(self, x: Tensor) -> Tensor:
        # the heads are read from (and their gradients written into) the qkv projection's own layout
        return self.proj(qkv_attention(self.qkv(self.norm(x)), self.num_heads, backend=self.backend))


class DividedSpaceTimeBlock(nn.Module):
    """STT's divided space-time transformer block: x (B, 1 + frames * N, dim) -> the same shape.

    Args:
        dim: token width d (divisible by num_heads).
        num_heads: heads of both attentions (STT: 8 heads of 64).
        mlp_ratio: hidden width of the MLP as a multiple of dim.
        drop_path: stochastic-depth rate of the three residual branches (rows of the batch dropped).
        backend: "auto" | "reference" | "cpu" | "triton" | "sdpa", passed to `fxkernels.attention`.

    forward(x, frames): x's first token is the class token, then `frames` groups of N patch tokens (frame-major);
    N = (L - 1) / frames.
    """

    def __init__(
        self, dim: int = 512, num_heads: int = 8, mlp_ratio: float = 4.0, drop_path: float = 0.0,
        backend: str = "auto",
    ):  # fmt: skip
        super().__init__()
        check_int("DividedSpaceTimeBlock", "dim", dim)
        check_int("DividedSpaceTimeBlock", "num_heads", num_heads)
        if dim % num_heads:
            raise ValueError(
                f"fxkernels.DividedSpaceTimeBlock: dim ({dim}) must be divisible by num_heads ({num_heads})"
            )
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(
                f"fxkernels.DividedSpaceTimeBlock: drop_path must be in [0, 1), got {drop_path!r}"
            )
        self.dim, self.num_heads = dim, num_heads
        self.space = _SelfAttention(dim, num_heads, backend)
        self.time = _SelfAttention(dim, num_heads, backend)
        hidden = int(dim * mlp_ratio)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = StochasticDepth(drop_path, "row")
        self.backend = backend

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        self._backend = check_backend("DividedSpaceTimeBlock", value)
        self.space.backend = self.time.backend = value

    def forward(self, x: Tensor, frames: int) -> Tensor:
        check_tensor("DividedSpaceTimeBlock", "x", x, 3, shape_desc="(B, 1 + frames * N, dim)")
        check_int("DividedSpaceTimeBlock", "frames", frames)
        B, L, d = x.shape
        if d != self.dim or L < 1 + frames or (L - 1) % frames:
            raise ValueError(
                f"fxkernels.DividedSpaceTimeBlock: x must have shape (B, 1 + frames * N, dim) with frames = {frames}, "
                f"dim = {self.dim}, got {tuple(x.shape)}"
            )
        N = (L - 1) // frames
        cls, p = x[:, :1], x[:, 1:]
        # space: every frame's N patches attend to each other; the class token takes no part
        # residuals added in place into the branch outputs (fresh tensors no backward needs): no new allocation
        p = self.drop_path(self.space(p.reshape(B * frames, N, d)).reshape(B, L - 1, d)).add_(p)
        # time: every patch's sequence over the frames, with the class token as its step 0
        seq = p.reshape(B, frames, N, d).transpose(1, 2)  # (B, N, F, d)
        seq = torch.cat([cls[:, None].expand(B, N, 1, d), seq], dim=2).reshape(B * N, frames + 1, d)
        u = self.drop_path(self.time(seq).reshape(B, N, frames + 1, d))  # one draw per clip for both parts
        p = (p.view(B, frames, N, d) + u[:, :, 1:].transpose(1, 2)).view(
            B, L - 1, d
        )  # no copy of the transpose
        cls = cls + u[:, :, 0].mean(1, keepdim=True)
        x = torch.cat([cls, p], dim=1)
        return self.drop_path(self.mlp(self.norm(x))).add_(x)

    def extra_repr(self) -> str:
        return f"{self.dim}, heads={self.num_heads}, backend={self.backend!r}"


__all__ = ["DividedSpaceTimeBlock"]
