"""Class motions of the synthetic data sets: smooth, compactly supported displacement fields around the
moving face parts, the named local motions (``PRIMITIVES``) they are built from, and the inversion of the
warp that renders a frame.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .face import Face

__all__ = ["PRIMITIVES", "MAX_AMPLITUDE", "Motion", "add_primitive", "as_groups", "invert"]

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

MAX_AMPLITUDE = 6.0  # px at S = 128; 7 already folds the warp of some clips (x1.2 per-clip intensity)

_CUT = 3.5  # window support radius in sigmas
_CUT_E = math.exp(-0.5 * _CUT**2)


class Motion:
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

    def boxes(self, X: torch.Tensor, Y: torch.Tensor, grow: float) -> list[tuple[slice, slice]]:
        """Per window, for points ``(X, Y)`` on grids ``(n, H, W)``: the ``(rows, cols)`` slices outside of
        which no point lies within ``grow`` of the window's support box (so the window is 0 at points that
        move by less than ``grow``); empty slices when no point does."""
        out = []
        for cx, cy, sx, sy, *_ in self.windows:
            rows = ((Y - cy).abs() <= _CUT * sy + grow).any(0).any(-1).nonzero()
            cols = ((X - cx).abs() <= _CUT * sx + grow).any(0).any(0).nonzero()
            if rows.numel() and cols.numel():
                out.append((slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)))
            else:
                out.append((slice(0, 0), slice(0, 0)))
        return out

    def xy(
        self, X: torch.Tensor, Y: torch.Tensor, boxes: Optional[list[tuple[slice, slice]]] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``D`` at the points ``(X, Y)`` (same shapes) -> ``(DX, DY)``.

        ``boxes`` (points on grids ``(n, H, W)`` only): per window the part of the grid where it can be
        non-zero (``boxes``); it is evaluated there only, with the same arithmetic: the same result, faster.
        """
        DX, DY = torch.zeros_like(X), torch.zeros_like(Y)
        for i, win in enumerate(self.windows):
            if boxes is None:
                _add_window(win, X, Y, DX, DY)
            else:
                b = (slice(None), *boxes[i])
                if X[b].numel():
                    _add_window(win, X[b], Y[b], DX[b], DY[b])  # views: DX[b] is updated in place
        return DX, DY


def _add_window(win: tuple[float, ...], X, Y, DX: torch.Tensor, DY: torch.Tensor) -> None:
    """Add the displacement of one window at the points ``(X, Y)`` to ``(DX, DY)`` in place."""
    cx, cy, sx, sy, vx, vy, mxx, mxy, myx, myy = win
    dx, dy = X - cx, Y - cy
    r2 = (dx * (1 / sx)).square_().add_((dy * (1 / sy)).square_())
    # r2 beyond 50 gives w = 0 as well; exp of the underflowing -r2/2 < -87 is several times slower
    w = r2.clamp_(max=50.0).mul_(-0.5).exp_().sub_(_CUT_E).clamp_(min=0).mul_(1 / (1 - _CUT_E))
    if mxx or mxy:
        DX += w * (vx + mxx * dx + mxy * dy)
    elif vx:
        DX.add_(w, alpha=vx)
    if myx or myy:
        DY += w * (vy + myx * dx + myy * dy)
    elif vy:
        DY.add_(w, alpha=vy)


def add_primitive(name: str, f: Face, A: float, motion: Motion) -> None:
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


def as_groups(motion, a: torch.Tensor) -> tuple[list[Motion], torch.Tensor]:
    """``(motions, a (t, G))`` from one ``Motion`` with ``a (t,)`` or a sequence of G motions with ``a (t, G)``
    (motion g moves with its own intensities ``a[:, g]``: frame k warps q to ``q + sum_g a[k, g] D_g(q)``)."""
    if isinstance(motion, Motion):
        if a.dim() != 1:
            raise ValueError(f"one Motion takes intensities a of shape (t,), got {tuple(a.shape)}")
        return [motion], a[:, None]
    motions = list(motion)
    if a.dim() != 2 or a.shape[1] != len(motions):
        raise ValueError(
            f"{len(motions)} motions take intensities a of shape (t, {len(motions)}), got {tuple(a.shape)}"
        )
    return motions, a


def invert(motion, p: torch.Tensor, a: torch.Tensor, tol: float = 1e-4, max_iter: int = 200):
    """Solve ``q + a_k D(q) = p_k`` for q by fixed-point iteration: ``p (t, M, 2)``, ``a (t,)`` -> ``(t, M, 2)``.

    ``p`` may also be grids of points ``(t, H, W, 2)`` (e.g. a crop of the pixel grid): each window is then
    evaluated only on the part of the grid it can reach (same result, faster). ``motion`` may also be a
    sequence of G motions with ``a (t, G)`` (see ``as_groups``): frame k then solves
    ``q + sum_g a[k, g] D_g(q) = p_k``. Converges because ``|sum_g a_kg grad D_g| < 1`` for the amplitudes used
    (the warp is a small perturbation).
    """
    motions, a = as_groups(motion, a)
    q = p.clone()
    moving = (a > 0).any(1)
    if not moving.any() or not any(m.windows for m in motions) or p[0, ..., 0].numel() == 0:
        return q
    PX, PY = p[moving, ..., 0], p[moving, ..., 1]
    shape = (-1,) + (1,) * (PX.dim() - 1)
    # |q - p| = |sum_g a_g D_g(q)| stays below grow: a window is 0 at the points whose p is farther away
    grow = sum(float(a[:, g].max()) * m.reach() for g, m in enumerate(motions)) + 1.0
    am = [
        (m, a[moving, g].reshape(shape), m.boxes(PX, PY, grow) if PX.dim() == 3 else None)
        for g, m in enumerate(motions)
        if m.windows
    ]
    QX, QY = PX.clone(), PY.clone()
    for _ in range(max_iter):
        NX, NY = PX, PY
        for m, ag, boxes in am:
            DX, DY = m.xy(QX, QY, boxes)
            NX, NY = NX - ag * DX, NY - ag * DY
        step = max(float((NX - QX).abs().max()), float((NY - QY).abs().max()))
        QX, QY = NX, NY
        if step < tol:
            break
    else:
        raise RuntimeError("the synthetic warp did not converge: amplitude too large for an invertible warp")
    q[moving] = torch.stack([QX, QY], -1)
    return q


# ---------------------------------------------------------------------------------------------------------
