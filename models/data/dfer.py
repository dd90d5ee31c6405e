"""Dynamic facial expression recognition (DFER) clips for the STT model: 7 classes ``DFER_CLASSES``, each
clip sampled to 16 frames with the Former-DFER segment sampling (``segment_indices``).

- ``SyntheticDFER``: rendered in-the-wild-like clips (variable length, distractor head motion, sensor
  noise), every item a deterministic function of ``(seed, index)``.
- ``DFEWDataset`` / ``AFEWDataset`` (in ``dfer_folder``): the real DFEW data set (frame folders plus the
  Former-DFER list files or DFEW's CSVs) and AFEW in the same list format and class order.

All return dict items that torch's default collate stacks into batches:

- ``"frames"``: float32 ``(16, 3, S, S)`` (T, C, H, W), RGB in [0, 1]; a batch is ``(B, 16, 3, S, S)``.
- ``"label"``: int64 scalar in ``[0, 7)``, an index into ``DFER_CLASSES``.
- ``"num_frames"``: int64 scalar, the length of the raw clip the 16 frames were sampled from.
- ``"subject"``: int64 scalar (-1 for the real data sets, which name no subjects).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .face import Face, smooth_noise, subject_colors
from .geometry import pixel_grid
from .mfed import CLASS_MOTIONS as MFED_CLASS_MOTIONS
from .motion import MAX_AMPLITUDE, Motion, add_primitive
from .synthetic import balanced_labels, one_thread, render_clip

__all__ = ["DFER_CLASSES", "CLASS_MOTIONS", "NUM_SAMPLED", "MIN_FRAMES", "segment_indices", "SyntheticDFER"]

#: The DFEW / Former-DFER class order (DFEW's CSV labels 1..7 are these, 1-based).
DFER_CLASSES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")

#: The motion primitives of each synthetic class with their share of the amplitude: the MFED class of the
#: same expression; "neutral" does not move.
CLASS_MOTIONS = {
    "happy": MFED_CLASS_MOTIONS["happiness"],
    "sad": MFED_CLASS_MOTIONS["sadness"],
    "neutral": (),
    "angry": MFED_CLASS_MOTIONS["anger"],
    "surprise": MFED_CLASS_MOTIONS["surprise"],
    "disgust": MFED_CLASS_MOTIONS["disgust"],
    "fear": MFED_CLASS_MOTIONS["fear"],
}

SEGMENTS, PER_SEGMENT = 8, 2
NUM_SAMPLED = SEGMENTS * PER_SEGMENT  # 16 frames per item
MIN_FRAMES = NUM_SAMPLED  # shorter real clips are dropped


def segment_indices(
    n: int,
    train: bool,
    rng: Optional[np.random.Generator] = None,
    segments: int = SEGMENTS,
    per_segment: int = PER_SEGMENT,
) -> list[int]:
    """The Former-DFER frame sampling: ``segments * per_segment`` indices into a clip of ``n`` frames.

    One offset per segment s = 0..segments-1, then ``per_segment`` consecutive frames from each offset
    (the last frame repeats at the end of the clip). With ``a = (n - per_segment + 1) // segments`` and
    ``tick = (n - per_segment + 1) / segments`` (``a = (n-1)//8``, ``tick = (n-1)/8`` by default):

    - train: offsets ``s * a + U[0, a)`` drawn from ``rng`` (a new default generator when None); clips with
      ``a == 0`` draw ``segments`` sorted offsets in ``[0, n - per_segment]`` when ``n > segments``;
    - test: offsets ``int(tick / 2 + s * tick)`` when ``n > segments + per_segment - 1``.

    Otherwise the offsets are ``0..n-1`` padded with the last one. Returns a list of ints in ``[0, n)``.
    """
    if n < 1 or segments < 1 or per_segment < 1:
        raise ValueError(
            f"segment_indices: n, segments and per_segment must be >= 1, got n={n}, segments={segments}, "
            f"per_segment={per_segment}"
        )
    span = n - per_segment + 1
    if train:
        rng = np.random.default_rng() if rng is None else rng
        a = span // segments
        if a > 0:
            offsets = [s * a + int(x) for s, x in enumerate(rng.integers(0, a, size=segments))]
        elif n > segments:
            offsets = sorted(int(x) for x in rng.integers(0, span, size=segments))
        else:
            offsets = [min(s, n - 1) for s in range(segments)]
    elif n > segments + per_segment - 1:
        tick = span / float(segments)
        offsets = [int(tick / 2.0 + tick * s) for s in range(segments)]
    else:
        offsets = [min(s, n - 1) for s in range(segments)]
    return [min(p + i, n - 1) for p in offsets for i in range(per_segment)]


def _item(frames: torch.Tensor, label: int, num_frames: int, subject: int) -> dict[str, torch.Tensor]:
    def i64(v):
        return torch.tensor(int(v), dtype=torch.int64)

    return {"frames": frames, "label": i64(label), "num_frames": i64(num_frames), "subject": i64(subject)}


class SyntheticDFER(torch.utils.data.Dataset):
    """Rendered RGB face clips of the 7 DFER classes, in-the-wild-like: variable length, head motion, noise.

    Args:
        num_subjects: subjects 0..num_subjects-1; each has its own face shape, position, brightness, skin
            colour and background colour.
        clips_per_class: clips of each class per subject; ``len = num_subjects * num_classes *
            clips_per_class``, item ``i`` belongs to subject ``i // (num_classes * clips_per_class)``; the
            labels are shuffled within a subject by ``seed``.
        frames: the raw length of every clip; None (default) draws it per clip in ``[min_frames,
            max_frames]``.
        size: frame side S (>= 16).
        seed: every item is a deterministic function of ``(seed, index)`` (and of the epoch in train mode).
        num_classes: the classes are ``DFER_CLASSES[:num_classes]`` (1..7).
        min_frames, max_frames: bounds of the raw clip length (``16 <= min_frames <= max_frames``).
        amplitude: peak displacement of the class motion in pixels at S = 128 (scaled by S / 128); each clip
            draws an intensity of 0.8..1.2 times it.
        drift: largest translation of the head (px at S = 128) at the start and end of its drift.
        zoom: the head's scale drifts between values in ``[1 - zoom, 1 + zoom]``.
        noise: std of the per-frame, per-channel sensor noise.
        train: sample the 16 frames with the random train offsets of ``segment_indices`` (seeded by
            ``(seed, index, epoch)``, see ``set_epoch``) instead of the deterministic test offsets.

    A raw clip of n frames shows the class's motion ``CLASS_MOTIONS[c]`` with an intensity that ramps in
    (``sin^2``) from a random onset in the first 30 % of the clip to an apex 20-50 % later, then holds,
    decaying by up to 30 % to the last frame. On top, the whole image of the face drifts (distractor head
    motion): a smooth translation between two random positions plus a small sinusoidal wobble, and a scale
    about the face centre drifting between two random values. The drift, the length, the timing, the face
    and the noise are drawn before and independently of the class, so two classes rendered with the same
    ``clip_seed`` differ only in the (moving) face and a few pixels around it (the motions of the brows
    and the jaw also move the face outline). Only the 16 sampled frames are rendered (~50 ms at
    S = 112, ~12 ms at S = 32 on one core); ``make_clip(..., raw=True)`` renders all n.
    """

    def __init__(
        self,
        num_subjects: int = 4,
        clips_per_class: int = 1,
        frames: Optional[int] = None,
        size: int = 112,
        seed: int = 0,
        num_classes: int = len(DFER_CLASSES),
        min_frames: int = 16,
        max_frames: int = 32,
        amplitude: float = 4.0,
        drift: float = 6.0,
        zoom: float = 0.08,
        noise: float = 0.02,
        train: bool = False,
    ):
        if not 1 <= num_classes <= len(DFER_CLASSES):
            raise ValueError(f"num_classes must be in [1, {len(DFER_CLASSES)}], got {num_classes}")
        if frames is not None:
            min_frames = max_frames = frames
        if not NUM_SAMPLED <= min_frames <= max_frames:
            raise ValueError(
                f"the raw clip length must satisfy {NUM_SAMPLED} <= min_frames <= max_frames (frames), got "
                f"min_frames={min_frames}, max_frames={max_frames}"
            )
        if num_subjects < 1 or clips_per_class < 1 or size < 16:
            raise ValueError(
                f"num_subjects and clips_per_class must be >= 1 and size >= 16, got "
                f"num_subjects={num_subjects}, clips_per_class={clips_per_class}, size={size}"
            )
        if not 0.0 <= amplitude <= MAX_AMPLITUDE:
            raise ValueError(f"amplitude must be in [0, {MAX_AMPLITUDE}] pixels, got {amplitude}")
        if drift < 0 or not 0 <= zoom < 0.5 or noise < 0:
            raise ValueError(
                f"drift and noise must be >= 0 and zoom in [0, 0.5), got drift={drift}, zoom={zoom}, "
                f"noise={noise}"
            )
        self.num_subjects, self.clips_per_class = num_subjects, clips_per_class
        self.min_frames, self.max_frames = int(min_frames), int(max_frames)
        self.size, self.seed, self.num_classes = size, seed, num_classes
        self.classes = list(DFER_CLASSES[:num_classes])
        self.amplitude, self.drift, self.zoom, self.noise = (
            float(amplitude),
            float(drift),
            float(zoom),
            float(noise),
        )
        self.train, self.epoch = bool(train), 0
        self.subjects, self.labels = balanced_labels(
            num_subjects, num_classes * clips_per_class, num_classes, seed
        )

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        """Select the train-mode frame offsets of ``epoch`` (no effect in test mode). DataLoader workers copy
        the data set when an iterator starts, so call it before ``iter(loader)`` (not with persistent
        workers)."""
        self.epoch = int(epoch)

    def clip_seed(self, index: int) -> int:
        """The per-clip seed of ``index`` (derived from (seed, index))."""
        return int(np.random.SeedSequence([self.seed, 1, index]).generate_state(1)[0])

    def sample_rng(self, index: int) -> np.random.Generator:
        """The generator of the train-mode offsets of ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, 4, index, self.epoch])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        rng = self.sample_rng(index) if self.train else None
        return self.make_clip(self.subjects[index], self.labels[index], self.clip_seed(index), rng=rng)

    def _scene(self, subject: int, label: int, clip_seed: int) -> SimpleNamespace:
        """The random draws of one raw clip of n frames: face, colours, intensities ``a (n,)``, head shift
        ``shift (n, 2)`` and scale ``scale (n,)``, texture, noise seed and the class motion. Only ``motion``
        depends on ``label``."""
        S = self.size
        u = S / 128.0
        crng = np.random.default_rng(clip_seed)
        face = Face(np.random.default_rng([self.seed, 0, subject]), crng, S)
        n = int(crng.integers(self.min_frames, self.max_frames + 1))
        intensity = crng.uniform(0.8, 1.2)
        onset = crng.uniform(0.0, 0.3)
        apex = onset + crng.uniform(0.2, 0.5)
        decay = crng.uniform(0.0, 0.3)
        tau = np.arange(n) / (n - 1)
        ramp = np.clip((tau - onset) / (apex - onset), 0.0, 1.0)
        a = np.sin(0.5 * np.pi * ramp) ** 2 * (1 - decay * np.clip((tau - apex) / (1 - apex), 0.0, 1.0))
        d0, d1 = crng.uniform(-self.drift, self.drift, (2, 2)) * u
        wobble = crng.uniform(0.0, 0.25 * self.drift, 2) * u
        freq, phase = crng.uniform(0.5, 1.5), crng.uniform(0.0, 2 * np.pi, 2)
        smooth = tau * tau * (3 - 2 * tau)
        shift = d0 + (d1 - d0) * smooth[:, None] + wobble * np.sin(2 * np.pi * freq * tau[:, None] + phase)
        z0, z1 = np.log(crng.uniform(1 - self.zoom, 1 + self.zoom, 2))
        scale = np.exp(z0 + (z1 - z0) * smooth)
        texture = 0.03 * smooth_noise(crng, 12, 64) + 0.015 * smooth_noise(crng, 40, 64)
        noise_seed = int(crng.integers(2**62))
        motion = Motion()
        for name, share in CLASS_MOTIONS[DFER_CLASSES[label]]:
            add_primitive(name, face, share * self.amplitude * intensity * u, motion)
        return SimpleNamespace(
            n=n,
            face=face,
            colors=subject_colors(self.seed, subject),
            a=torch.from_numpy(a).float(),
            shift=torch.from_numpy(shift).float(),
            scale=torch.from_numpy(scale).float(),
            texture=texture,
            noise_seed=noise_seed,
            motion=motion,
        )

    def make_clip(
        self,
        subject: int,
        label: int,
        clip_seed: int,
        rng: Optional[np.random.Generator] = None,
        raw: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Render one item: the 16 frames ``segment_indices(n, train=rng is not None, rng)`` of the raw clip
        (all n frames with ``raw=True``: ``"frames"`` is then ``(n, 3, S, S)``). Everything but the class
        motion depends only on ``(seed, subject, clip_seed)``."""
        if not 0 <= label < self.num_classes:
            raise ValueError(f"label {label} out of range [0, {self.num_classes})")
        S = self.size
        with one_thread():
            sc = self._scene(subject, label, clip_seed)
            idx = list(range(sc.n)) if raw else segment_indices(sc.n, rng is not None, rng)
            t = len(idx)
            # the head motion is applied to the rendered frames below, so render_clip sees a still head
            # (and renders repeated frames once) and no noise (the noise must not move with the head)
            video, _, _ = render_clip(
                sc.face,
                sc.motion,
                sc.a[idx],
                torch.zeros(t, 2),
                sc.texture,
                torch.zeros(3, t, S, S),
                sc.colors,
            )
            frames = _move_head(video.transpose(0, 1), sc.face, sc.shift[idx], sc.scale[idx])
            gen = torch.Generator().manual_seed(sc.noise_seed)
            noise = torch.randn(sc.n, 3, S, S, generator=gen)[idx] * self.noise
            frames = (frames + noise).clamp_(0, 1).contiguous()
        return _item(frames, label, sc.n, subject)


def _move_head(frames: torch.Tensor, face: Face, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Scale frame k of ``frames (t, 3, S, S)`` by ``scale[k]`` about the face centre, then shift it by
    ``shift[k] (x, y)`` pixels (bilinear, border padding) -> ``(t, 3, S, S)``."""
    S = frames.shape[-1]
    c = torch.tensor([face.cx, face.cy], dtype=torch.float32)
    p = pixel_grid(S).unsqueeze(0)  # (1, S, S, 2)
    q = c + (p - c - shift[:, None, None]) / scale[:, None, None, None]  # where output pixel p samples
    grid = 2 * q / (S - 1) - 1
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=True)
