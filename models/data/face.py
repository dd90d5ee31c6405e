"""The rendered neutral face of the synthetic data sets: per-subject shape and appearance, its 68 iBUG
landmarks and its grey value at any material point (soft-edged parts on a smooth skin texture).

Units are pixels of the output frame of side S; the shapes are drawn for S = 128 and scaled by S / 128.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Face", "smooth_noise", "subject_colors"]

SOFT = 1.0  # edge softness of the rendered parts, in output pixels: keeps bilinear resampling accurate


def _sig(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


class Face:
    """Geometry and appearance of one rendered face, in pixel units of the output size."""

    def __init__(self, subject_rng: np.random.Generator, clip_rng: np.random.Generator, size: int):
        u = size / 128.0
        r = subject_rng.uniform
        self.u = u
        # per-subject shape, position and brightness
        self.cx = (63.5 + r(-3, 3)) * u
        self.cy = (66.0 + r(-3, 3)) * u
        self.rx = r(36, 42) * u
        self.ry = r(48, 54) * u
        self.ey = self.cy - r(10, 13) * u
        self.edx = r(15, 18) * u
        self.ew = r(7, 8.5) * u
        self.eh = r(2.8, 3.6) * u
        self.by = self.ey - r(8, 10) * u
        self.bw = r(9, 11) * u
        self.bt = r(1.6, 2.2) * u
        self.barch = r(1.5, 3.0) * u
        self.ny = self.cy + r(6, 9) * u
        self.nw = r(5, 7) * u
        self.my = self.cy + r(22, 26) * u
        self.mw = r(11, 14) * u
        self.lu = r(2.5, 3.5) * u
        self.ll = r(2.8, 3.8) * u
        self.skin = r(0.5, 0.7)
        self.bg = r(0.15, 0.35)
        self.dark = r(0.6, 0.75)
        self.light = r(-0.1, 0.1)
        # per-clip nuisances: small shift of the whole face, brightness gain
        c = clip_rng.uniform
        sx, sy = c(-1.5, 1.5) * u, c(-1.5, 1.5) * u
        self.cx += sx
        self.cy, self.ey, self.by, self.ny, self.my = (
            v + sy for v in (self.cy, self.ey, self.by, self.ny, self.my)
        )
        self.gain = c(0.93, 1.07)

    def landmarks(self) -> torch.Tensor:
        """The 68 iBUG points of the neutral face, ``(68, 2)`` (x, y); image-left is the subject's right."""
        pts: list[tuple[float, float]] = []
        d = 0.05
        for i in range(17):  # jaw: image-left temple, chin (8), image-right temple
            phi = math.pi + d - i * (math.pi + 2 * d) / 16
            pts.append((self.cx + self.rx * math.cos(phi), self.cy + self.ry * math.sin(phi)))
        for bx in (self.cx - self.edx, self.cx + self.edx):  # 17-21, 22-26: brows, left to right in x
            for du in np.linspace(-0.9, 0.9, 5):
                pts.append((bx + du * self.bw, self.by - self.barch * (1 - du * du)))
        for y in np.linspace(self.ey, self.ny, 4):  # 27-30: nose bridge
            pts.append((self.cx, float(y)))
        for dx in np.linspace(-0.7, 0.7, 5):  # 31-35: nose base
            pts.append((self.cx + dx * self.nw, self.ny + 1.0 * self.u))

        def lid(du, upper):
            h = self.eh * (1 - du * du)
            return -h if upper else 0.8 * h

        # 36-41, 42-47: each eye clockwise from its image-left corner, as in iBUG
        for ex in (self.cx - self.edx, self.cx + self.edx):
            ring = [(-1, None), (-1 / 3, True), (1 / 3, True), (1, None), (1 / 3, False), (-1 / 3, False)]
            for du, upper in ring:
                dy = 0.0 if upper is None else lid(du, upper)
                pts.append((ex + du * self.ew, self.ey + dy))

        def top(du):
            return self.my - self.lu * math.sqrt(max(1 - du * du, 0.0))

        def bot(du):
            return self.my + self.ll * math.sqrt(max(1 - du * du, 0.0))

        pts.append((self.cx - self.mw, self.my))  # 48: outer lips, clockwise from the image-left corner
        for du in (-2 / 3, -1 / 3, 0, 1 / 3, 2 / 3):
            pts.append((self.cx + du * self.mw, top(du)))
        pts.append((self.cx + self.mw, self.my))  # 54
        for du in (2 / 3, 1 / 3, 0, -1 / 3, -2 / 3):
            pts.append((self.cx + du * self.mw, bot(du)))
        g = 0.3 * self.u
        pts.append((self.cx - 0.85 * self.mw, self.my))  # 60: inner lips
        for du in (-0.5, 0, 0.5):
            pts.append((self.cx + du * self.mw, self.my - g))
        pts.append((self.cx + 0.85 * self.mw, self.my))  # 64
        for du in (0.5, 0, -0.5):
            pts.append((self.cx + du * self.mw, self.my + g))
        return torch.tensor(pts, dtype=torch.float32)

    def render(
        self,
        q: torch.Tensor,
        texture: torch.Tensor,
        reach: float,
        colors: Optional[tuple[Sequence[float], Sequence[float]]] = None,
    ) -> torch.Tensor:
        """Grey value of the neutral face at the material points ``q (t, S, S, 2)`` of a pixel grid -> ``(t, S, S)``.

        ``texture`` is a ``(1, 1, h, w)`` skin-texture field sampled (bilinear) at ``q``, so it moves with the
        face like every other part. The small parts are only evaluated in pixel boxes around them, grown by
        ``reach`` (the largest ``|q - p|`` on the grid) plus a margin where their soft edges are below 1e-4.

        ``colors = (skin_rgb, background_rgb)``: three per-channel gains each of the skin and the background
        grey values -> an RGB render ``(3, t, S, S)``; the dark parts shade every channel alike.
        """
        X, Y = q[..., 0].contiguous(), q[..., 1].contiguous()
        S = q.shape[-2]
        w = SOFT
        u = self.u
        R = math.sqrt(self.rx * self.ry)
        rf = torch.sqrt(((X - self.cx) / self.rx) ** 2 + ((Y - self.cy) / self.ry) ** 2)
        face = _sig((1 - rf) * R / w)
        skin = self.skin * (1 + self.light * (X - self.cx) / self.rx) + _sample_texture(texture, q, self.u)
        bg = self.bg * (1 + 0.15 * (Y - self.cy) / self.ry)
        if colors is not None:
            if len(colors) != 2 or any(len(c) != 3 for c in colors):
                raise ValueError(
                    f"colors must be (skin_rgb, background_rgb), three gains each, got {colors!r}"
                )
            skin = skin * torch.tensor(colors[0], dtype=skin.dtype).view(3, 1, 1, 1)
            bg = bg * torch.tensor(colors[1], dtype=bg.dtype).view(3, 1, 1, 1)
        img = bg + (skin - bg) * face

        dark = torch.zeros_like(X)
        margin = reach + 9 * w + 1

        def part(x0, x1, y0, y1, fn, extra_y=0.0):
            my = margin + extra_y
            sy = slice(max(int(math.floor(y0 - my)), 0), min(int(math.ceil(y1 + my)) + 1, S))
            sx = slice(max(int(math.floor(x0 - margin)), 0), min(int(math.ceil(x1 + margin)) + 1, S))
            if sy.start < sy.stop and sx.start < sx.stop:
                dark[:, sy, sx] += fn(X[:, sy, sx], Y[:, sy, sx])

        # eyes: dark almonds with a darker pupil
        pr = min(self.eh, 2.5 * u)
        for ex in (self.cx - self.edx, self.cx + self.edx):

            def eye(X, Y, ex=ex):
                du = (X - ex) / self.ew
                h = self.eh * (1 - du * du)
                dy = Y - self.ey
                inside = _sig((h - torch.where(dy < 0, -dy, dy / 0.8)) / w) * _sig(
                    (1 - du.abs()) * self.ew / w
                )
                pupil = _sig((pr - torch.sqrt((X - ex) ** 2 + dy**2)) / w)
                return inside * (0.55 + 0.3 * pupil)

            part(ex - self.ew, ex + self.ew, self.ey - self.eh, self.ey + self.eh, eye)
        # brows: thick parabolic strokes
        for bx in (self.cx - self.edx, self.cx + self.edx):

            def brow(X, Y, bx=bx):
                du = (X - bx) / self.bw
                yb = self.by - self.barch * (1 - du * du)
                return 0.5 * _sig((1 - du.abs()) * self.bw / w) * _sig((self.bt - (Y - yb).abs()) / w)

            part(bx - self.bw, bx + self.bw, self.by - self.barch - self.bt, self.by + self.bt, brow)

        # nose: faint bridge shadow, nostrils, base shadow
        def bridge(X, Y):
            b = torch.exp(-0.5 * ((X - self.cx) / (1.5 * u)) ** 2)
            return 0.15 * b * _sig((Y - self.ey) / (2 * u)) * _sig((self.ny - Y) / (2 * u))

        part(self.cx, self.cx, self.ey, self.ny, bridge, extra_y=18 * u)
        for nx in (self.cx - 0.5 * self.nw, self.cx + 0.5 * self.nw):

            def nostril(X, Y, nx=nx):
                return 0.45 * _sig((1.6 * u - torch.sqrt((X - nx) ** 2 + (Y - self.ny) ** 2)) / w)

            part(nx - 1.6 * u, nx + 1.6 * u, self.ny - 1.6 * u, self.ny + 1.6 * u, nostril)

        def base(X, Y):
            b = torch.exp(-0.5 * ((Y - self.ny - 2.2 * u) / (1.0 * u)) ** 2)
            return 0.2 * b * _sig((self.nw - (X - self.cx).abs()) / w)

        part(self.cx - self.nw, self.cx + self.nw, self.ny + 2.2 * u, self.ny + 2.2 * u, base, extra_y=6 * u)

        # mouth: lips and the dark slit between them
        def mouth(X, Y):
            du = (X - self.cx) / self.mw
            s = torch.sqrt(torch.clamp(1 - du * du, min=0.0))
            along = _sig((1 - du.abs()) * self.mw / w)
            lips = _sig((Y - (self.my - self.lu * s)) / w) * _sig((self.my + self.ll * s - Y) / w)
            slit = _sig((0.6 * u - (Y - self.my).abs()) / w)
            return along * (0.35 * lips + 0.4 * slit)

        part(self.cx - self.mw, self.cx + self.mw, self.my - self.lu, self.my + self.ll, mouth)

        img = img * (1 - self.dark * torch.clamp(dark, max=1.5) * face)
        return img * self.gain


def _sample_texture(texture: torch.Tensor, q: torch.Tensor, u: float) -> torch.Tensor:
    """Bilinear sample of a ``(1, 1, h, w)`` field spanning the 128*u pixel frame at points ``q (..., 2)``."""
    extent = 128.0 * u - 1
    grid = (2 * q / extent - 1).reshape(1, 1, -1, 2)
    out = F.grid_sample(texture, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(q.shape[:-1])


def smooth_noise(rng: np.random.Generator, n: int, out: int) -> torch.Tensor:
    """``(1, 1, out, out)``: an ``n x n`` white-noise grid upsampled bicubically (a smooth random field)."""
    x = torch.from_numpy(rng.standard_normal((1, 1, n, n))).float()
    return F.interpolate(x, size=(out, out), mode="bicubic", align_corners=True)


def subject_colors(seed: int, subject: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(skin_rgb, background_rgb)``: channel gains (see ``Face.render``) of ``subject`` under ``seed``."""
    rng = np.random.default_rng([seed, 3, subject])
    tone = rng.uniform(0.0, 1.0)  # 0: pale, 1: dark and warm (the brightness itself is Face.skin)
    skin = (1.2 - 0.1 * tone, 0.95 - 0.12 * tone, 0.85 - 0.25 * tone) * rng.uniform(0.97, 1.03, 3)
    return tuple(float(x) for x in skin), tuple(float(x) for x in rng.uniform(0.6, 1.4, 3))
