"""Face geometry shared by every data set: the iBUG-68 landmark layout, the inter-ocular distance, the
pixel-centre coordinate convention and the mapping of points and flow fields to a resized frame.

Pixel coordinates: the centre of pixel (column x, row y) is at (x, y), so a frame of size S spans
[-0.5, S - 0.5] and ``grid_sample(..., align_corners=True)`` with ``2 * p / (S - 1) - 1`` samples at p.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["NUM_LANDMARKS", "RIGHT_EYE", "LEFT_EYE", "inter_ocular_distance", "pixel_grid", "resize_points",
           "resize_flow"]  # fmt: skip

NUM_LANDMARKS = 68  # iBUG-68 points, stored interleaved (x0, y0, x1, y1, ...) as 136 values
RIGHT_EYE = slice(36, 42)  # the subject's right eye (image-left), 0-based iBUG indices
LEFT_EYE = slice(42, 48)


def inter_ocular_distance(landmarks: torch.Tensor) -> torch.Tensor:
    """Distance between the pupil centres: ``landmarks (..., 136)`` interleaved iBUG-68 -> ``(...)``.

    The pupil centres are the means of points 36-41 and 42-47 (0-based), as the published MOL code
    normalises its landmark loss. Item landmarks are ``(136, t)``; pass ``landmarks.transpose(-1, -2)`` to
    get one distance per frame.
    """
    landmarks = torch.as_tensor(landmarks)
    if landmarks.shape[-1] != 2 * NUM_LANDMARKS:
        raise ValueError(
            f"inter_ocular_distance: landmarks must have shape (..., {2 * NUM_LANDMARKS}) (interleaved x, y "
            f"of {NUM_LANDMARKS} points), got {tuple(landmarks.shape)}"
        )
    pts = landmarks.reshape(*landmarks.shape[:-1], NUM_LANDMARKS, 2)
    right = pts[..., RIGHT_EYE, :].mean(-2)
    left = pts[..., LEFT_EYE, :].mean(-2)
    return torch.linalg.vector_norm(left - right, dim=-1)


_GRIDS: dict[int, torch.Tensor] = {}


def pixel_grid(S: int) -> torch.Tensor:
    """``(S, S, 2)``: the (x, y) coordinates of every pixel centre (cached; do not modify)."""
    if S not in _GRIDS:
        ys, xs = torch.meshgrid(
            torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="ij"
        )
        _GRIDS[S] = torch.stack([xs, ys], -1)
    return _GRIDS[S]


def resize_points(pts: torch.Tensor, width: int, height: int, size: int) -> torch.Tensor:
    """Points ``(..., 2)`` (x, y) in a ``width x height`` frame -> the same points in its ``size x size``
    resize, with the pixel-centre convention ``x' = (x + 0.5) * size / width - 0.5`` (y likewise)."""
    scale = torch.tensor([size / width, size / height])
    return (pts + 0.5) * scale - 0.5


def resize_flow(flow: torch.Tensor, size: int) -> torch.Tensor:
    """Flow fields ``(n, 2, H, W)`` of (dx, dy) in pixels -> ``(n, 2, size, size)``: bilinear resampling,
    dx scaled by ``size / W`` and dy by ``size / H`` so the vectors stay in output pixels."""
    _, _, fh, fw = flow.shape
    f = F.interpolate(flow, size=(size, size), mode="bilinear", align_corners=False)
    return f * torch.tensor([size / fw, size / fh]).view(1, 2, 1, 1)
