"""Micro-expression clips for the MOL pipeline (paper sections 3.3 and 4.1): a synthetic data set with exact
optical-flow and landmark ground truth, a loader for real frame-folder data sets (CASME II / SAMM / SMIC
style), subject-wise splits and the inter-ocular distance used to normalise the landmark loss (eq. 8).

Every data set returns items as dicts that torch's default collate stacks into batches:

- ``"video"``: float32 ``(1, t, S, S)``, grey values in [0, 1].
- ``"flow"``: float32 ``(2, S, S, t-1)``; ``flow[:, y, x, k] = (dx, dy)`` in pixels is the forward flow from
  frame k to frame k+1: the content at pixel (x, y) of frame k is at (x + dx, y + dy) in frame k+1.
  Channel 0 is horizontal (x), channel 1 vertical (y).
- ``"landmarks"``: float32 ``(136, t)``: the 68 iBUG points of frame k in column k, interleaved
  ``(x0, y0, x1, y1, ...)``.
- ``"label"``, ``"subject"``: int64 scalar tensors.
- ``"has_flow"``, ``"has_landmarks"``: bool scalar tensors; when False the matching tensor is all zeros.

Pixel coordinates: the centre of pixel (column x, row y) is at (x, y), so a frame of size S spans
[-0.5, S - 0.5] and ``grid_sample(..., align_corners=True)`` with ``2 * p / (S - 1) - 1`` samples at p.
"""

from __future__ import annotations

import csv as _csv
import math
import os
import re
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "SyntheticMicroExpressions",
    "FrameFolderDataset",
    "loso_folds",
    "split_indices",
    "inter_ocular_distance",
    "PRIMITIVES",
]

# ---------------------------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------------------------

#: The local motions the synthetic classes are made of; class c < len(PRIMITIVES) is PRIMITIVES[c], larger
#: classes are pairs of primitives (see ``SyntheticMicroExpressions.class_primitives``).
PRIMITIVES = (
    "brows_raise",  # both brows move up
    "brows_lower",  # inner brows move down and towards each other (frown)
    "mouth_corners_up",  # both corners up and slightly outwards (smile)
    "mouth_corners_down",  # both corners down and slightly inwards (press / sad)
    "eyes_narrow",  # both eyes squeezed vertically (lids move towards the eye centre)
    "nose_wrinkle",  # nose and upper-lip region move up
    "jaw_drop",  # lower lip moves down
    "lip_pucker",  # both corners move inwards
    "smile_right",  # only the image-right mouth corner up (contempt)
    "brow_raise_left",  # only the image-left brow up
)

_SOFT = 1.0  # edge softness of the rendered parts, in output pixels: keeps bilinear resampling accurate


MAX_AMPLITUDE = 6.0  # px at S = 128; 7 already folds the warp of some clips (x1.2 per-clip intensity)


def _sig(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


class _Face:
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

    def render(self, q: torch.Tensor, texture: torch.Tensor, reach: float) -> torch.Tensor:
        """Grey value of the neutral face at the material points ``q (t, S, S, 2)`` of a pixel grid -> ``(t, S, S)``.

        ``texture`` is a ``(1, 1, h, w)`` skin-texture field sampled (bilinear) at ``q``, so it moves with the
        face like every other part. The small parts are only evaluated in pixel boxes around them, grown by
        ``reach`` (the largest ``|q - p|`` on the grid) plus a margin where their soft edges are below 1e-4.
        """
        X, Y = q[..., 0].contiguous(), q[..., 1].contiguous()
        S = q.shape[-2]
        w = _SOFT
        u = self.u
        R = math.sqrt(self.rx * self.ry)
        rf = torch.sqrt(((X - self.cx) / self.rx) ** 2 + ((Y - self.cy) / self.ry) ** 2)
        face = _sig((1 - rf) * R / w)
        skin = self.skin * (1 + self.light * (X - self.cx) / self.rx) + _sample_texture(texture, q, self.u)
        bg = self.bg * (1 + 0.15 * (Y - self.cy) / self.ry)
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


_CUT = 3.5  # window support radius in sigmas
_CUT_E = math.exp(-0.5 * _CUT**2)


class _Motion:
    """A smooth displacement field ``D(q) = sum_i w_i(q) (v_i + M_i (q - c_i))`` around the moving parts.

    ``w_i`` is an anisotropic Gaussian window shifted down so that it reaches 0 at 3.5 sigma (continuous,
    compact support: D is exactly 0 away from the parts, which lets the warp skip those pixels). Material
    point q of the neutral face sits at ``q + a * D(q) + g`` in a frame with intensity a and global shift g.
    """

    def __init__(self):
        self.windows: list[tuple[float, ...]] = []

    def add(self, c, sigma, v=(0.0, 0.0), m=(0.0, 0.0, 0.0, 0.0)):
        """Window centre ``c (x, y)``, std ``sigma (sx, sy)``, displacement ``v`` and linear part
        ``m = (m_xx, m_xy, m_yx, m_yy)``."""
        self.windows.append(tuple(float(x) for x in (*c, *sigma, *v, *m)))

    def reach(self) -> float:
        """An upper bound of ``|D|``."""
        out = 0.0
        for _, _, sx, sy, vx, vy, *m in self.windows:
            out += math.hypot(vx, vy) + math.sqrt(sum(x * x for x in m)) * _CUT * max(sx, sy)
        return out

    def support(self, S: int, grow: float) -> torch.Tensor:
        """``(S, S)`` bool: the pixels within ``grow`` of the support of D."""
        mask = torch.zeros(S, S, dtype=torch.bool)
        for cx, cy, sx, sy, *_ in self.windows:
            x0, x1 = (
                max(int(math.floor(cx - _CUT * sx - grow)), 0),
                min(int(math.ceil(cx + _CUT * sx + grow)) + 1, S),
            )
            y0, y1 = (
                max(int(math.floor(cy - _CUT * sy - grow)), 0),
                min(int(math.ceil(cy + _CUT * sy + grow)) + 1, S),
            )
            mask[y0:y1, x0:x1] = True
        return mask

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        """``q (..., 2)`` -> ``D(q) (..., 2)``."""
        return torch.stack(self.xy(q[..., 0], q[..., 1]), -1)

    def xy(self, X: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``D`` at the points ``(X, Y)`` (same shapes) -> ``(DX, DY)``."""
        DX, DY = torch.zeros_like(X), torch.zeros_like(Y)
        for cx, cy, sx, sy, vx, vy, mxx, mxy, myx, myy in self.windows:
            dx, dy = X - cx, Y - cy
            r2 = (dx * (1 / sx)).square_().add_((dy * (1 / sy)).square_())
            w = r2.mul_(-0.5).exp_().sub_(_CUT_E).clamp_(min=0).mul_(1 / (1 - _CUT_E))
            if mxx or mxy:
                DX += w * (vx + mxx * dx + mxy * dy)
            elif vx:
                DX.add_(w, alpha=vx)
            if myx or myy:
                DY += w * (vy + myx * dx + myy * dy)
            elif vy:
                DY.add_(w, alpha=vy)
        return DX, DY


def _primitive(name: str, f: _Face, A: float, motion: _Motion) -> None:
    """Add the windows of one primitive (``A``: peak displacement in output pixels) to ``motion``."""
    u = f.u
    left, right = f.cx - f.edx, f.cx + f.edx
    if name in ("brows_raise", "brow_raise_left"):
        for bx in (left,) if name == "brow_raise_left" else (left, right):
            motion.add((bx, f.by), (0.9 * f.bw, 5 * u), v=(0, -A))
    elif name == "brows_lower":
        for bx, inward in ((left, 1), (right, -1)):
            motion.add((bx + inward * 0.5 * f.bw, f.by), (0.7 * f.bw, 5 * u), v=(inward * 0.6 * A, 0.8 * A))
    elif name in ("mouth_corners_up", "smile_right"):
        sides = ((1,),) if name == "smile_right" else ((-1,), (1,))
        for (side,) in sides:
            motion.add((f.cx + side * f.mw, f.my), (5 * u, 5 * u), v=(side * 0.35 * A, -0.94 * A))
    elif name == "mouth_corners_down":
        for side in (-1, 1):
            motion.add((f.cx + side * f.mw, f.my), (5 * u, 5 * u), v=(-side * 0.3 * A, 0.95 * A))
    elif name == "eyes_narrow":
        # vertical compression towards the eye centre; the lids (|dy| = eh, window ~0.85) move by ~0.35 * A
        k = 0.35 * A / (0.85 * f.eh)
        for ex in (left, right):
            motion.add((ex, f.ey), (f.ew, 5 * u), m=(0, 0, 0, -k))
    elif name == "nose_wrinkle":
        motion.add((f.cx, f.ny - 3 * u), (7 * u, 5 * u), v=(0, -A))
    elif name == "jaw_drop":
        motion.add((f.cx, f.my + f.ll + 2 * u), (f.mw, 5 * u), v=(0, A))
    elif name == "lip_pucker":
        for side in (-1, 1):
            motion.add((f.cx + side * f.mw, f.my), (5 * u, 5 * u), v=(-side * A, 0))
    else:  # pragma: no cover - PRIMITIVES is closed
        raise KeyError(name)


class SyntheticMicroExpressions(torch.utils.data.Dataset):
    """Face-like grey clips whose classes differ only by small local motions, with exact flow and landmarks.

    Args:
        num_classes: number of classes; class c < 10 is the motion ``PRIMITIVES[c]`` (0 brows raise,
            1 brows lower/frown, 2 mouth corners up, 3 mouth corners down, 4 eyes narrow, 5 nose wrinkle,
            6 jaw drop, 7 lip pucker, 8 right corner up, 9 left brow up); classes 10.. are pairs of primitives
            in ``itertools.combinations`` order (at most 55 classes).
        num_subjects: subjects 0..num_subjects-1; each has its own face shape, position and brightness.
        clips: clips per subject; ``len = num_subjects * clips``; index ``i`` belongs to subject
            ``i // clips``. Labels are balanced within each subject (counts differ by at most one) and
            shuffled deterministically by ``seed``.
        t: frames per clip (>= 2); ``size``: frame side S.
        seed: everything is a deterministic function of (seed, index).
        amplitude: peak displacement of the moving parts in pixels at S = 128 (scaled by S/128); each clip
            draws an intensity in [0.8, 1.2] times it. Values up to ~5 keep the warp invertible.
        noise: std of the per-frame sensor noise (the only part of a frame that the flow does not explain).
        jitter: std in pixels (at S = 128) of a per-frame global shift of the whole image (camera shake);
            it is part of the flow and landmark ground truth.

    Rendering and ground truth: a neutral face ``I0(q)`` is defined analytically (soft-edged shapes plus a
    smooth random skin texture) on material points q. In frame k, point q sits at
    ``x_k(q) = q + a_k D(q) + g_k`` (``D``: the class's Gaussian-windowed displacement field, ``a_k``:
    the onset -> apex -> offset intensity, 0 at the first and last frame; ``g_k``: the global shift). Frame k
    is rendered by inverting ``x_k`` at every pixel p with a fixed-point iteration
    (``q <- p - g_k - a_k D(q)``, run to a residual below 1e-4 px) and evaluating ``I0(q)``. The flow is
    ``flow_k(p) = x_{k+1}(q) - x_k(q) = (a_{k+1} - a_k) D(q) + g_{k+1} - g_k`` with that same q, so
    ``frame_{k+1}(p + flow_k(p)) == frame_k(p)`` holds exactly for the underlying continuous images (up to
    the 1e-4 px inversion tolerance and the sensor noise); sampling the *pixel* grid of frame k+1 at the
    non-integer ``p + flow_k(p)`` adds only interpolation error. Landmarks are the 68 points of the neutral
    face moved by ``x_k``, so a landmark at p in frame k is exactly at ``p + flow_k(p)`` in frame k+1
    (``flow_k`` evaluated analytically at p; the pixel-grid flow is smooth, so bilinear lookup is close).
    Measured at S = 128, noise 0: ``|q_k(p) - q_{k+1}(p + flow_k(p))| < 5e-5`` px; backward-warping frame k+1
    bilinearly with the flow leaves a mean error of ~0.002 where |flow| > 0.5 px, against ~0.009 with zero flow
    (the rest is bilinear interpolation error); bilinear flow lookup at the landmarks is within 0.015 px.

    ``make_clip(subject, label, clip_seed)`` renders any combination directly (``__getitem__(i)`` uses
    ``clip_seed(i)``). A clip takes ~20 ms on one CPU core at t = 8, S = 128.
    """

    def __init__(
        self,
        num_classes: int = 5,
        num_subjects: int = 8,
        clips: int = 10,
        t: int = 8,
        size: int = 128,
        seed: int = 0,
        amplitude: float = 3.0,
        noise: float = 0.01,
        jitter: float = 0.25,
    ):
        max_classes = len(PRIMITIVES) + len(PRIMITIVES) * (len(PRIMITIVES) - 1) // 2
        if not 1 <= num_classes <= max_classes:
            raise ValueError(f"num_classes must be in [1, {max_classes}], got {num_classes}")
        if t < 2:
            raise ValueError(f"t must be >= 2 (the flow has t-1 frames), got {t}")
        if num_subjects < 1 or clips < 1 or size < 16:
            raise ValueError("num_subjects and clips must be >= 1 and size >= 16")
        self.num_classes = num_classes
        self.num_subjects = num_subjects
        self.clips = clips
        self.t = t
        self.size = size
        self.seed = seed
        if not 0.0 <= amplitude <= MAX_AMPLITUDE:
            # larger motions fold the synthetic warp (not invertible): the exact flow would not exist
            raise ValueError(f"amplitude must be in [0, {MAX_AMPLITUDE}] pixels, got {amplitude}")
        self.amplitude = float(amplitude)
        self.noise = float(noise)
        self.jitter = float(jitter)
        self.subjects: list[int] = []
        self.labels: list[int] = []
        for s in range(num_subjects):
            base = [(j + s) % num_classes for j in range(clips)]
            perm = np.random.default_rng([seed, 2, s]).permutation(clips)
            self.subjects += [s] * clips
            self.labels += [base[p] for p in perm]

    def __len__(self) -> int:
        return len(self.labels)

    def class_primitives(self, label: int) -> tuple[str, ...]:
        """The motion primitives of class ``label``."""
        n = len(PRIMITIVES)
        if label < n:
            return (PRIMITIVES[label],)
        m = label - n
        for i in range(n):
            for j in range(i + 1, n):
                if m == 0:
                    return PRIMITIVES[i], PRIMITIVES[j]
                m -= 1
        raise ValueError(f"label {label} out of range")

    def clip_seed(self, index: int) -> int:
        """The per-clip seed of ``index`` (derived from (seed, index))."""
        return int(np.random.SeedSequence([self.seed, 1, index]).generate_state(1)[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return self.make_clip(self.subjects[index], self.labels[index], self.clip_seed(index))

    def _scene(self, subject: int, label: int, clip_seed: int) -> SimpleNamespace:
        """The random draws of one clip: face, motion field, intensities ``a (t,)``, shifts ``g (t, 2)``,
        skin texture and sensor noise ``(t, S, S)``. Only ``motion`` depends on ``label``."""
        S, t = self.size, self.t
        u = S / 128.0
        crng = np.random.default_rng(clip_seed)
        face = _Face(np.random.default_rng([self.seed, 0, subject]), crng, S)
        intensity = crng.uniform(0.8, 1.2)
        apex = crng.uniform(0.35, 0.65)
        g = torch.from_numpy(crng.normal(0.0, self.jitter * u, size=(t, 2))).float()
        texture = 0.03 * _smooth_noise(crng, 12, 64) + 0.015 * _smooth_noise(crng, 40, 64)
        gen = torch.Generator().manual_seed(int(crng.integers(2**62)))
        noise = torch.randn(t, S, S, generator=gen) * self.noise
        # onset -> apex -> offset: 0 at the first and last frame, 1 at the apex
        tau = np.arange(t) / (t - 1)
        a = np.where(
            tau <= apex,
            np.sin(0.5 * np.pi * tau / apex) ** 2,
            np.sin(0.5 * np.pi * (1 - tau) / (1 - apex)) ** 2,
        )
        motion = _Motion()
        for name in self.class_primitives(label):
            _primitive(name, face, self.amplitude * intensity * u, motion)
        return SimpleNamespace(
            face=face, motion=motion, a=torch.from_numpy(a).float(), g=g, texture=texture, noise=noise
        )

    def make_clip(self, subject: int, label: int, clip_seed: int) -> dict[str, torch.Tensor]:
        """Render one clip; the nuisances (face, noise, jitter, intensity) depend only on
        ``(seed, subject, clip_seed)``, so two labels with the same arguments differ only by their motion.

        Runs with one intra-op thread (restored afterwards): the clip is many small tensor ops, which extra
        threads slow down by up to 30x on a busy machine.
        """
        n_threads = torch.get_num_threads()
        if n_threads == 1:
            return self._make_clip(subject, label, clip_seed)
        torch.set_num_threads(1)
        try:
            return self._make_clip(subject, label, clip_seed)
        finally:
            torch.set_num_threads(n_threads)

    def _make_clip(self, subject: int, label: int, clip_seed: int) -> dict[str, torch.Tensor]:
        if not 0 <= label < self.num_classes:
            raise ValueError(f"label {label} out of range [0, {self.num_classes})")
        S, t = self.size, self.t
        sc = self._scene(subject, label, clip_seed)
        face, motion, a, g = sc.face, sc.motion, sc.a, sc.g

        p = _pixel_grid(S)  # (S, S, 2) as (x, y)
        reach = motion.reach() + float(g.abs().max())
        # D vanishes outside its support, so only pixels near it need the warp (elsewhere q = p - g_k)
        active = motion.support(S, reach + 1)
        idx = active.flatten().nonzero().squeeze(1)
        q = (p.unsqueeze(0) - g[:, None, None]).reshape(t, S * S, 2)
        qa = _invert(motion, q[:, idx], a)  # (t, M, 2)
        q[:, idx] = qa
        q = q.reshape(t, S, S, 2)

        video = face.render(q, sc.texture, reach) + sc.noise
        video = video.clamp(0, 1).unsqueeze(0).contiguous()

        da = (a[1:] - a[:-1])[:, None, None]
        flow = (g[1:] - g[:-1])[:, None].expand(t - 1, S * S, 2).clone()  # (t-1, S*S, 2)
        flow[:, idx] += da * motion(qa[:-1])
        flow = flow.reshape(t - 1, S, S, 2).permute(3, 1, 2, 0).contiguous()

        lm0 = face.landmarks()  # (68, 2)
        lm = lm0 + a[:, None, None] * motion(lm0) + g[:, None]  # (t, 68, 2)
        landmarks = lm.reshape(t, 136).t().contiguous()
        return {
            "video": video,
            "flow": flow,
            "landmarks": landmarks,
            "label": torch.tensor(label, dtype=torch.int64),
            "subject": torch.tensor(subject, dtype=torch.int64),
            "has_flow": torch.tensor(True),
            "has_landmarks": torch.tensor(True),
        }


_GRIDS: dict[int, torch.Tensor] = {}


def _pixel_grid(S: int) -> torch.Tensor:
    """``(S, S, 2)``: the (x, y) coordinates of every pixel centre (cached; do not modify)."""
    if S not in _GRIDS:
        ys, xs = torch.meshgrid(
            torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="ij"
        )
        _GRIDS[S] = torch.stack([xs, ys], -1)
    return _GRIDS[S]


def _smooth_noise(rng: np.random.Generator, n: int, out: int) -> torch.Tensor:
    """``(1, 1, out, out)``: an ``n x n`` white-noise grid upsampled bicubically (a smooth random field)."""
    x = torch.from_numpy(rng.standard_normal((1, 1, n, n))).float()
    return F.interpolate(x, size=(out, out), mode="bicubic", align_corners=True)


def _invert(motion: _Motion, p: torch.Tensor, a: torch.Tensor, tol: float = 1e-4, max_iter: int = 200):
    """Solve ``q + a_k D(q) = p_k`` for q by fixed-point iteration: ``p (t, M, 2)``, ``a (t,)`` -> ``(t, M, 2)``.

    Converges because ``a_k |grad D| < 1`` for the amplitudes used (the warp is a small perturbation).
    """
    q = p.clone()
    moving = a > 0
    if not moving.any() or not motion.windows or p.shape[1] == 0:
        return q
    am = a[moving][:, None]
    PX, PY = p[moving, :, 0], p[moving, :, 1]
    QX, QY = PX.clone(), PY.clone()
    for _ in range(max_iter):
        DX, DY = motion.xy(QX, QY)
        NX, NY = PX - am * DX, PY - am * DY
        step = max(float((NX - QX).abs().max()), float((NY - QY).abs().max()))
        QX, QY = NX, NY
        if step < tol:
            break
    else:
        raise RuntimeError("the synthetic warp did not converge: amplitude too large for an invertible warp")
    q[moving] = torch.stack([QX, QY], -1)
    return q


# ---------------------------------------------------------------------------------------------------------
# Real data sets stored as frame folders
# ---------------------------------------------------------------------------------------------------------

_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
_COLUMNS = ("subject", "clip", "onset", "apex", "offset", "label")


def _frame_number(name: str) -> Optional[int]:
    m = re.search(r"(\d+)(?!.*\d)", os.path.splitext(name)[0])
    return int(m.group(1)) if m else None


def _list_frames(folder: str) -> dict[int, str]:
    """Frame number -> file path for the images in ``folder`` (the number is the last integer in the name)."""
    frames: dict[int, str] = {}
    for name in os.listdir(folder):
        if not name.lower().endswith(_IMAGE_EXT):
            continue
        n = _frame_number(name)
        if n is None:
            continue
        if n in frames:
            raise ValueError(
                f"{folder}: two images with frame number {n}: {os.path.basename(frames[n])}, {name}"
            )
        frames[n] = os.path.join(folder, name)
    return dict(sorted(frames.items()))


def _subject_ids(names: Sequence[str]) -> dict[str, int]:
    """Subject name -> int: the last integer in the name ("sub01" -> 1, "006" -> 6, "s3" -> 3) when that is
    one-to-one over all names, else the position in the sorted unique names."""
    uniq = sorted(set(names))
    nums = [_frame_number(n) for n in uniq]
    if all(n is not None for n in nums) and len(set(nums)) == len(uniq):
        return dict(zip(uniq, nums))
    return {n: i for i, n in enumerate(uniq)}


class FrameFolderDataset(torch.utils.data.Dataset):
    """A real micro-expression data set stored as frame folders plus a label CSV.

    Layout: ``root/<subject>/<clip>/`` holds the frames of one clip, ordered by the last integer in their
    file names (``img46.jpg``, ``046.png``, ``reg_img46.jpg``). ``root/<csv>`` (or ``csv`` itself when it is
    an absolute path) has the header ``subject,clip,onset,apex,offset,label`` (case-insensitive; other
    columns are ignored): onset and offset are inclusive frame numbers as in the file names, apex is kept
    in ``self.rows`` but unused, label is an int or a class name.

    Sampling: the frame numbers ``rint(linspace(onset, offset, t))`` (frames repeat when the clip is shorter
    than t), loaded as greyscale, resized to ``size x size`` (PIL bilinear) and scaled to [0, 1].

    Labels: with ``classes`` (list of names) a name maps to its position and an int must lie in
    ``[0, len(classes))``; rows whose name is not in ``classes`` raise, or are dropped when
    ``skip_unknown``. Without ``classes``: all-int labels are used as they are (``num_classes = max + 1``),
    all-name labels are numbered in sorted order (``self.classes`` is then that order).

    Subjects: ``self.subject_names`` are the CSV strings (folder names); ``self.subjects`` their ints: the
    last integer in the name ("sub01" -> 1) when that is one-to-one, else the sorted position.

    Optional ground truth (a missing file gives ``has_* = False`` and zeros):

    - ``landmarks_dir/<subject>/<clip>.npy``: ``(n, 68, 2)`` or ``(n, 136)`` (x, y) in original pixels, or
      ``<clip>.csv`` with 136 interleaved columns per row (a non-numeric header row is skipped). Row i is
      frame ``onset + i`` when ``n == offset - onset + 1``, else the i-th frame of the sorted folder when
      ``n`` is the folder's frame count. Points are mapped to the resized frame with the pixel-centre
      convention ``x' = (x + 0.5) * size / W - 0.5`` (same for y with H).
    - ``flow_dir/<subject>/<clip>.npy``: ``(t-1, 2, H, W)``, the forward flow (dx, dy) in pixels between
      the *sampled* frames, at any resolution H x W; resized bilinearly to ``size x size`` with dx scaled
      by ``size / W`` and dy by ``size / H``.
    """

    def __init__(
        self,
        root: str,
        csv: str = "labels.csv",
        t: int = 8,
        size: int = 128,
        classes: Optional[Sequence[str]] = None,
        flow_dir: Optional[str] = None,
        landmarks_dir: Optional[str] = None,
        skip_unknown: bool = False,
    ):
        if t < 2:
            raise ValueError(f"t must be >= 2, got {t}")
        self.root = str(root)
        self.t = t
        self.size = size
        self.flow_dir = None if flow_dir is None else str(flow_dir)
        self.landmarks_dir = None if landmarks_dir is None else str(landmarks_dir)
        csv_path = csv if os.path.isabs(str(csv)) else os.path.join(self.root, str(csv))
        if not os.path.isfile(csv_path):
            raise FileNotFoundError(f"label CSV not found: {csv_path}")
        with open(csv_path, newline="") as fh:
            reader = _csv.DictReader(fh)
            header = {(h or "").strip().lower(): h for h in (reader.fieldnames or [])}
            missing = [c for c in _COLUMNS if c not in header]
            if missing:
                raise ValueError(
                    f"{csv_path}: missing column(s) {missing}; expected header {','.join(_COLUMNS)}, "
                    f"got {reader.fieldnames}"
                )
            raw = [
                (line, {c: (r[header[c]] or "").strip() for c in _COLUMNS})
                for line, r in enumerate(reader, 2)
            ]

        # labels
        labels_raw = [r["label"] for _, r in raw]
        is_int = [_is_int(x) for x in labels_raw]
        if classes is not None:
            self.classes: Optional[list[str]] = [str(c) for c in classes]
            self.num_classes = len(self.classes)
        elif all(is_int):
            self.classes = None
            self.num_classes = max((int(x) for x in labels_raw), default=-1) + 1
        elif not any(is_int):
            self.classes = sorted(set(labels_raw))
            self.num_classes = len(self.classes)
        else:
            raise ValueError(f"{csv_path}: labels mix ints and names; pass classes= to map the names")

        self.rows: list[dict[str, object]] = []
        for line, r in raw:
            where = f"{csv_path} line {line} ({r['subject']}/{r['clip']})"
            lab = r["label"]
            if _is_int(lab):
                y = int(lab)
                if not 0 <= y < self.num_classes:
                    raise ValueError(f"{where}: label {y} out of range [0, {self.num_classes})")
            elif lab in self.classes:
                y = self.classes.index(lab)
            elif skip_unknown:
                continue
            else:
                raise ValueError(f"{where}: unknown label name {lab!r}; expected one of {self.classes}")
            for c in ("onset", "offset"):
                if not _is_int(r[c]):
                    raise ValueError(f"{where}: {c} must be an integer frame number, got {r[c]!r}")
            onset, offset = int(r["onset"]), int(r["offset"])
            if onset > offset:
                raise ValueError(f"{where}: onset {onset} > offset {offset}")
            folder = os.path.join(self.root, r["subject"], r["clip"])
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"{where}: clip folder not found: {folder}")
            frames = _list_frames(folder)
            numbers = [int(x) for x in np.rint(np.linspace(onset, offset, t))]
            absent = sorted({n for n in numbers if n not in frames})
            if absent:
                have = f"{min(frames)}..{max(frames)}" if frames else "none"
                raise FileNotFoundError(
                    f"{where}: frame number(s) {absent} not found in {folder} (frames: {have})"
                )
            self.rows.append(
                {
                    "subject": r["subject"],
                    "clip": r["clip"],
                    "onset": onset,
                    "apex": int(r["apex"]) if _is_int(r["apex"]) else None,
                    "offset": offset,
                    "label": y,
                    "numbers": numbers,
                    "frames": frames,
                    "line": line,
                }
            )
        self.labels: list[int] = [int(r["label"]) for r in self.rows]
        self.subject_names: list[str] = [str(r["subject"]) for r in self.rows]
        ids = _subject_ids(self.subject_names)
        self.subjects: list[int] = [ids[s] for s in self.subject_names]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        r = self.rows[index]
        S, t = self.size, self.t
        imgs = []
        W = H = None
        for n in r["numbers"]:
            with Image.open(r["frames"][n]) as im:
                W, H = im.size
                im = im.convert("L").resize((S, S), Image.BILINEAR)
                imgs.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0))
        video = torch.stack(imgs).unsqueeze(0)

        landmarks = torch.zeros(136, t)
        lm = self._load_landmarks(r)
        has_lm = lm is not None
        if has_lm:
            n_rows = lm.shape[0]
            span = r["offset"] - r["onset"] + 1
            order = list(r["frames"])
            if n_rows == span:
                idx = [n - r["onset"] for n in r["numbers"]]
            elif n_rows == len(order):
                idx = [order.index(n) for n in r["numbers"]]
            else:
                raise ValueError(
                    f"{self._gt_path(self.landmarks_dir, r)}: {n_rows} landmark rows; expected "
                    f"offset-onset+1 = {span} or the folder's frame count {len(order)}"
                )
            pts = torch.from_numpy(lm[idx]).float().reshape(t, 68, 2)
            scale = torch.tensor([S / W, S / H])
            pts = (pts + 0.5) * scale - 0.5
            landmarks = pts.reshape(t, 136).t().contiguous()

        flow = torch.zeros(2, S, S, t - 1)
        fl = self._load_flow(r)
        has_flow = fl is not None
        if has_flow:
            _, _, fh, fw = fl.shape
            f = F.interpolate(torch.from_numpy(fl).float(), size=(S, S), mode="bilinear", align_corners=False)
            f = f * torch.tensor([S / fw, S / fh]).view(1, 2, 1, 1)
            flow = f.permute(1, 2, 3, 0).contiguous()

        return {
            "video": video,
            "flow": flow,
            "landmarks": landmarks,
            "label": torch.tensor(r["label"], dtype=torch.int64),
            "subject": torch.tensor(self.subjects[index], dtype=torch.int64),
            "has_flow": torch.tensor(has_flow),
            "has_landmarks": torch.tensor(has_lm),
        }

    @staticmethod
    def _gt_path(base: str, r, ext: str = ".npy") -> str:
        return os.path.join(base, str(r["subject"]), str(r["clip"]) + ext)

    def _load_landmarks(self, r) -> Optional[np.ndarray]:
        """``(n, 136)`` float array or None when there is no file."""
        if self.landmarks_dir is None:
            return None
        path = self._gt_path(self.landmarks_dir, r)
        if os.path.isfile(path):
            a = np.load(path)
            if not (a.ndim == 3 and a.shape[1:] == (68, 2)) and not (a.ndim == 2 and a.shape[1] == 136):
                raise ValueError(f"{path}: landmarks of shape {a.shape}; expected (n, 68, 2) or (n, 136)")
            return a.reshape(a.shape[0], 136).astype(np.float32)
        path = self._gt_path(self.landmarks_dir, r, ".csv")
        if os.path.isfile(path):
            with open(path, newline="") as fh:
                rows = [row for row in _csv.reader(fh) if row]
            if rows and not _is_float(rows[0][0]):
                rows = rows[1:]
            bad = [i for i, row in enumerate(rows) if len(row) != 136]
            if not rows or bad:
                raise ValueError(f"{path}: expected rows of 136 interleaved x,y values (bad rows: {bad[:5]})")
            return np.asarray(rows, dtype=np.float32)
        return None

    def _load_flow(self, r) -> Optional[np.ndarray]:
        """``(t-1, 2, H, W)`` float array or None when there is no file."""
        if self.flow_dir is None:
            return None
        path = self._gt_path(self.flow_dir, r)
        if not os.path.isfile(path):
            return None
        a = np.load(path)
        if a.ndim != 4 or a.shape[0] != self.t - 1 or a.shape[1] != 2:
            raise ValueError(
                f"{path}: flow of shape {a.shape}; expected (t-1, 2, H, W) with t-1 = {self.t - 1}"
            )
        return a.astype(np.float32)


def _is_int(s: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", s.strip()) is not None


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------
# Splits and landmark helpers
# ---------------------------------------------------------------------------------------------------------


def loso_folds(subjects: Sequence[int]) -> list[tuple[int, list[int], list[int]]]:
    """Leave-one-subject-out folds: ``[(test_subject, train_idx, test_idx), ...]`` sorted by subject.

    ``subjects[i]`` is the subject of item i; every subject gives one fold, the index lists are ascending.
    """
    subjects = [int(s) for s in subjects]
    folds = []
    for s in sorted(set(subjects)):
        test = [i for i, x in enumerate(subjects) if x == s]
        train = [i for i, x in enumerate(subjects) if x != s]
        folds.append((s, train, test))
    return folds


def split_indices(
    n: int, test_fraction: float = 0.2, seed: int = 0, labels: Optional[Sequence[int]] = None
) -> tuple[list[int], list[int]]:
    """A random ``(train_idx, test_idx)`` split of ``range(n)`` (both ascending).

    The test set has ``round(test_fraction * n)`` items; with ``labels`` it is stratified:
    ``round(test_fraction * n_c)`` items of each class c.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    rng = np.random.default_rng(seed)
    if labels is None:
        perm = rng.permutation(n)
        test = perm[: int(round(test_fraction * n))].tolist()
    else:
        labels = [int(y) for y in labels]
        if len(labels) != n:
            raise ValueError(f"len(labels) = {len(labels)} != n = {n}")
        test = []
        for c in sorted(set(labels)):
            idx = np.array([i for i, y in enumerate(labels) if y == c])
            idx = idx[rng.permutation(len(idx))]
            test += idx[: int(round(test_fraction * len(idx)))].tolist()
    test_set = set(test)
    return [i for i in range(n) if i not in test_set], sorted(test_set)


def inter_ocular_distance(landmarks: torch.Tensor) -> torch.Tensor:
    """Distance between the pupil centres: ``landmarks (..., 136)`` interleaved iBUG-68 -> ``(...)``.

    The pupil centres are the means of points 36-41 and 42-47 (0-based). Item landmarks are ``(136, t)``;
    pass ``landmarks.transpose(-1, -2)`` to get one distance per frame.
    """
    landmarks = torch.as_tensor(landmarks)
    if landmarks.shape[-1] != 136:
        raise ValueError(f"expected (..., 136) landmarks, got {tuple(landmarks.shape)}")
    pts = landmarks.reshape(*landmarks.shape[:-1], 68, 2)
    right = pts[..., 36:42, :].mean(-2)
    left = pts[..., 42:48, :].mean(-2)
    return torch.linalg.vector_norm(left - right, dim=-1)
