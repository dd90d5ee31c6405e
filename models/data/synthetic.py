"""``SyntheticMicroExpressions``, the synthetic data set of the MOL pipeline, and the pieces every synthetic
data set shares: ``render_clip`` (a face, a motion and the per-frame intensities -> video with exact flow
and landmarks), ``balanced_labels`` and ``one_thread``.

A further synthetic data set is one new module: it draws its own scene (face, motion, intensity profile)
and calls ``render_clip``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Optional

import numpy as np
import torch

from .face import Face, smooth_noise
from .geometry import NUM_LANDMARKS, pixel_grid
from .motion import MAX_AMPLITUDE, PRIMITIVES, Motion, add_primitive, as_groups, invert

__all__ = ["SyntheticMicroExpressions", "render_clip", "balanced_labels", "one_thread"]


@contextlib.contextmanager
def one_thread():
    """Run the block with one intra-op thread (restored afterwards): a clip is many small tensor ops, which
    extra threads slow down by up to 30x on a busy machine."""
    n_threads = torch.get_num_threads()
    if n_threads != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n_threads != 1:
            torch.set_num_threads(n_threads)


def balanced_labels(
    num_subjects: int, clips: int, num_classes: int, seed: int
) -> tuple[list[int], list[int]]:
    """``(subjects, labels)`` of ``num_subjects * clips`` items, item i of subject ``i // clips``; within each
    subject the labels are balanced (counts differ by at most one) and shuffled deterministically by seed."""
    subjects: list[int] = []
    labels: list[int] = []
    for s in range(num_subjects):
        base = [(j + s) % num_classes for j in range(clips)]
        perm = np.random.default_rng([seed, 2, s]).permutation(clips)
        subjects += [s] * clips
        labels += [base[p] for p in perm]
    return subjects, labels


def render_clip(
    face: Face,
    motion,
    a: torch.Tensor,
    g: torch.Tensor,
    texture: torch.Tensor,
    noise: torch.Tensor,
    colors: Optional[tuple[Sequence[float], Sequence[float]]] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render a clip of ``face`` moved by ``motion`` and return its exact ground truth.

    Material point q of the neutral face sits at ``x_k(q) = q + a[k] D(q) + g[k]`` in frame k (``D``:
    ``motion``; ``a (t,)``: intensities in [0, 1]; ``g (t, 2)``: global shifts). ``motion`` may also be a
    sequence of G motions, each with its own intensities ``a (t, G)``: ``x_k(q) = q + sum_j a[k, j] D_j(q) +
    g[k]``. ``texture (1, 1, h, w)``: the skin texture; ``noise (t, S, S)`` (``(3, t, S, S)`` with
    ``colors``): sensor noise added to the frames. ``colors = (skin_rgb, background_rgb)``: per-channel gains
    of a colour render (see ``Face.render``). Returns ``video (1, t, S, S)`` (``(3, t, S, S)`` with
    ``colors``) in [0, 1], ``flow (2, S, S, t-1)`` (forward, frame k -> k+1) and ``landmarks (136, t)``
    (interleaved x, y).
    """
    motions, ag = as_groups(motion, a)
    t, S = noise.shape[-3], noise.shape[-1]
    p = pixel_grid(S)  # (S, S, 2) as (x, y)
    reach = sum(m.reach() for m in motions) + float(g.abs().max())
    # D vanishes outside its support, so only the box of pixels near it needs the warp (elsewhere q = p - g_k)
    active = motions[0].support(S, reach + 1)
    for m in motions[1:]:
        active |= m.support(S, reach + 1)
    rows, cols = active.any(1).nonzero(), active.any(0).nonzero()
    box = (slice(None), slice(0, 0), slice(0, 0))
    if rows.numel():
        box = (slice(None), slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    # frames with the same intensities and shift are the same image: warp and render each of them once
    _, inv = torch.unique(torch.cat([ag, g], 1), dim=0, return_inverse=True)
    rep = torch.full((int(inv.max()) + 1,), t).scatter_reduce_(0, inv, torch.arange(t), "amin")
    if len(rep) == t:
        rep = inv = torch.arange(t)
    q = p.unsqueeze(0) - g[rep, None, None]  # (n, S, S, 2)
    q[box] = invert(motion, q[box], a[rep])  # (n, h, w, 2)
    img = face.render(q, texture, reach, colors)[..., inv, :, :]
    q = q[inv]
    qa = q[box]

    video = (img + noise).clamp(0, 1)
    video = (video.unsqueeze(0) if video.dim() == 3 else video).contiguous()

    flow = (g[1:] - g[:-1])[:, None, None].expand(t - 1, S, S, 2).clone()  # (t-1, S, S, 2)
    lm0 = face.landmarks()  # (68, 2)
    lm = lm0
    for j, m in enumerate(motions):
        da = (ag[1:, j] - ag[:-1, j])[:, None, None]
        flow[box] += da[..., None] * m(qa[:-1])
        lm = lm + ag[:, j, None, None] * m(lm0)  # (t, 68, 2)
    flow = flow.permute(3, 1, 2, 0).contiguous()
    lm = lm + g[:, None]
    landmarks = lm.reshape(t, 2 * NUM_LANDMARKS).t().contiguous()
    return video, flow, landmarks


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
            draws an intensity in [0.8, 1.2] times it. At most ``MAX_AMPLITUDE`` (6): larger values fold the
            warp of some clips (not invertible, so no exact flow exists).
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
            raise ValueError(
                f"num_subjects and clips must be >= 1 and size >= 16, got num_subjects={num_subjects}, "
                f"clips={clips}, size={size}"
            )
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
        self.subjects, self.labels = balanced_labels(num_subjects, clips, num_classes, seed)

    def __len__(self) -> int:
        return len(self.labels)

    def class_primitives(self, label: int) -> tuple[str, ...]:
        """The motion primitives of class ``label``."""
        n = len(PRIMITIVES)
        if 0 <= label < n:
            return (PRIMITIVES[label],)
        m = label - n
        for i in range(n):
            for j in range(i + 1, n):
                if m == 0:
                    return PRIMITIVES[i], PRIMITIVES[j]
                m -= 1
        raise ValueError(f"label {label} out of range [0, {n + n * (n - 1) // 2})")

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
        face = Face(np.random.default_rng([self.seed, 0, subject]), crng, S)
        intensity = crng.uniform(0.8, 1.2)
        apex = crng.uniform(0.35, 0.65)
        g = torch.from_numpy(crng.normal(0.0, self.jitter * u, size=(t, 2))).float()
        texture = 0.03 * smooth_noise(crng, 12, 64) + 0.015 * smooth_noise(crng, 40, 64)
        gen = torch.Generator().manual_seed(int(crng.integers(2**62)))
        noise = torch.randn(t, S, S, generator=gen) * self.noise
        # onset -> apex -> offset: 0 at the first and last frame, 1 at the apex
        tau = np.arange(t) / (t - 1)
        a = np.where(
            tau <= apex,
            np.sin(0.5 * np.pi * tau / apex) ** 2,
            np.sin(0.5 * np.pi * (1 - tau) / (1 - apex)) ** 2,
        )
        motion = Motion()
        for name in self.class_primitives(label):
            add_primitive(name, face, self.amplitude * intensity * u, motion)
        return SimpleNamespace(
            face=face, motion=motion, a=torch.from_numpy(a).float(), g=g, texture=texture, noise=noise
        )

    def make_clip(self, subject: int, label: int, clip_seed: int) -> dict[str, torch.Tensor]:
        """Render one clip; the nuisances (face, noise, jitter, intensity) depend only on
        ``(seed, subject, clip_seed)``, so two labels with the same arguments differ only by their motion.

        Runs with one intra-op thread (restored afterwards): the clip is many small tensor ops, which extra
        threads slow down by up to 30x on a busy machine.
        """
        if not 0 <= label < self.num_classes:
            raise ValueError(f"label {label} out of range [0, {self.num_classes})")
        with one_thread():
            sc = self._scene(subject, label, clip_seed)
            video, flow, landmarks = render_clip(sc.face, sc.motion, sc.a, sc.g, sc.texture, sc.noise)
        return {
            "video": video,
            "flow": flow,
            "landmarks": landmarks,
            "label": torch.tensor(label, dtype=torch.int64),
            "subject": torch.tensor(subject, dtype=torch.int64),
            "has_flow": torch.tensor(True),
            "has_landmarks": torch.tensor(True),
        }
