"""MFED, the masked facial expression data set of MTSTWN: RGB clips with two labels, the ``experienced``
(genuine, leaked at the onset) and the ``required`` (displayed) expression, one of ``MFED_CLASSES`` each;
the joint class of the 36-class task is ``6 * experienced + required``.

- ``SyntheticMFED``: rendered faces with class-defined local motions, every item a deterministic function
  of ``(seed, index)``.
- ``MFEDFolderDataset``: the real data set stored as frame folders plus a label CSV.

Both return dict items that torch's default collate stacks into batches:

- ``"video"``: float32 ``(3, t, S, S)``, RGB in [0, 1].
- ``"experienced"``, ``"required"``: int64 scalars in ``[0, num_classes)``.
- ``"label"``: int64 scalar ``num_classes * experienced + required``.
- ``"subject"``: int64 scalar.
- ``"onset"``, ``"apex"``, ``"offset"``: int64 scalars, frame indices into the t frames of ``"video"``.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Optional

import numpy as np
import torch

from .face import Face, smooth_noise, subject_colors
from .frames import (
    LabelMap,
    check_frames,
    is_int,
    list_frames,
    load_frames,
    read_csv,
    sample_numbers,
    subject_ids,
)
from .motion import MAX_AMPLITUDE, Motion, add_primitive
from .synthetic import balanced_labels, one_thread, render_clip

__all__ = ["MFED_CLASSES", "CLASS_MOTIONS", "COLUMNS", "SyntheticMFED", "MFEDFolderDataset"]

MFED_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")

#: The motion primitives (``motion.PRIMITIVES``) of each synthetic class with their share of the class's
#: amplitude, loosely after the FACS action units of the expression; every class has its own set, so the six
#: are told apart by where and how the face moves. The eyes narrow at half strength: at full strength on top
#: of a frown the warp is close to folding (and slow to invert).
CLASS_MOTIONS = {
    "anger": (("brows_lower", 1.0), ("eyes_narrow", 0.5)),
    "disgust": (("nose_wrinkle", 1.0),),
    "fear": (("brows_raise", 1.0), ("lip_pucker", 1.0)),
    "happiness": (("mouth_corners_up", 1.0),),
    "sadness": (("mouth_corners_down", 1.0),),
    "surprise": (("brows_raise", 1.0), ("jaw_drop", 1.0)),
}

#: The label CSV columns of ``MFEDFolderDataset``.
COLUMNS = ("subject", "clip", "onset", "apex", "offset", "experienced", "required")


def _item(video, experienced, required, num_classes, subject, onset, apex, offset) -> dict[str, torch.Tensor]:
    def i64(v):
        return torch.tensor(int(v), dtype=torch.int64)

    return {
        "video": video,
        "experienced": i64(experienced),
        "required": i64(required),
        "label": i64(num_classes * experienced + required),
        "subject": i64(subject),
        "onset": i64(onset),
        "apex": i64(apex),
        "offset": i64(offset),
    }


class SyntheticMFED(torch.utils.data.Dataset):
    """Rendered RGB face clips carrying an experienced and a required expression.

    Args:
        num_subjects: subjects 0..num_subjects-1; each has its own face shape, position, brightness, skin
            colour and background colour.
        clips_per_class: how often each of the ``num_classes**2`` (experienced, required) pairs appears per
            subject; ``len = num_subjects * num_classes**2 * clips_per_class``, item ``i`` belongs to subject
            ``i // (num_classes**2 * clips_per_class)``; the pairs are shuffled within a subject by ``seed``.
        t: frames per clip (>= 2); ``size``: frame side S (>= 16).
        seed: every item is a deterministic function of ``(seed, index)``.
        num_classes: the classes are ``MFED_CLASSES[:num_classes]`` (1..6).
        amplitude: peak displacement of the required motion in pixels at S = 128 (scaled by S / 128).
        experienced_amplitude: peak displacement of the experienced motion (same units), weaker by default.
        experienced_at_apex: share of the experienced motion left from the apex on (faint, but still there
            for a model that sees the apex frame only).
        noise: std of the per-frame, per-channel sensor noise.
        jitter: std in pixels (at S = 128) of a per-frame global shift of the whole image (camera shake).

    Each clip draws its own intensities (0.8..1.2 times ``amplitude`` and ``experienced_amplitude``) and its
    apex; it spans onset -> offset like a real MFED clip, so ``onset = 0``, ``offset = t - 1`` and the apex is
    drawn in ``[0.35, 0.65] * (t - 1)`` (at least frame 1). With ``r_k = min(k / apex, 1)`` frame k shows

    - the required class's motion ``CLASS_MOTIONS[c]`` at ``sin^2(pi/2 r_k)``: 0 at the onset, ramping in to
      its peak at the apex, held there to the offset;
    - the experienced class's motion at ``f + (1 - f) cos^2(pi/2 r_k)`` (``f = experienced_at_apex``): at its
      peak at the onset, fading to ``f`` at the apex and held there.

    So a clip with ``experienced == required`` differs from the other pairs with that required class by its
    onset frame. The moved face is rendered exactly (the warp is inverted per pixel, see
    ``SyntheticMicroExpressions``); ``make_clip`` renders any combination and, with ``neutral=True``, the
    same clip without motion. A (3, 8, 64, 64) clip takes ~15 ms on one (busy) CPU core, (3, 30, 224, 224)
    ~0.3 s.
    """

    def __init__(
        self,
        num_subjects: int = 4,
        clips_per_class: int = 1,
        t: int = 30,
        size: int = 224,
        seed: int = 0,
        num_classes: int = 6,
        amplitude: float = 4.0,
        experienced_amplitude: float = 2.0,
        experienced_at_apex: float = 0.35,
        noise: float = 0.01,
        jitter: float = 0.0,
    ):
        if not 1 <= num_classes <= len(MFED_CLASSES):
            raise ValueError(f"num_classes must be in [1, {len(MFED_CLASSES)}], got {num_classes}")
        if t < 2:
            raise ValueError(f"t must be >= 2 (onset and offset are frames of their own), got {t}")
        if num_subjects < 1 or clips_per_class < 1 or size < 16:
            raise ValueError(
                f"num_subjects and clips_per_class must be >= 1 and size >= 16, got num_subjects={num_subjects}, "
                f"clips_per_class={clips_per_class}, size={size}"
            )
        for name, v in (("amplitude", amplitude), ("experienced_amplitude", experienced_amplitude)):
            if not 0.0 <= v <= MAX_AMPLITUDE:
                raise ValueError(f"{name} must be in [0, {MAX_AMPLITUDE}] pixels, got {v}")
        if not 0.0 <= experienced_at_apex <= 1.0:
            raise ValueError(f"experienced_at_apex must be in [0, 1], got {experienced_at_apex}")
        # the largest summed displacement of a frame (at the apex, or at the onset when the experienced motion
        # dominates); larger ones fold the warp where both classes move the same part
        peak = max(amplitude + experienced_at_apex * experienced_amplitude, experienced_amplitude)
        if peak > MAX_AMPLITUDE:
            raise ValueError(
                f"amplitude + experienced_at_apex * experienced_amplitude must be <= {MAX_AMPLITUDE} pixels "
                f"(both motions can move the same part), got {peak}"
            )
        if noise < 0 or jitter < 0:
            raise ValueError(f"noise and jitter must be >= 0, got noise={noise}, jitter={jitter}")
        self.num_subjects, self.clips_per_class = num_subjects, clips_per_class
        self.t, self.size, self.seed = t, size, seed
        self.num_classes = num_classes
        self.classes = list(MFED_CLASSES[:num_classes])
        self.amplitude, self.experienced_amplitude = float(amplitude), float(experienced_amplitude)
        self.experienced_at_apex = float(experienced_at_apex)
        self.noise, self.jitter = float(noise), float(jitter)
        n2 = num_classes * num_classes
        self.subjects, self.labels = balanced_labels(num_subjects, n2 * clips_per_class, n2, seed)
        self.experienced_labels = [y // num_classes for y in self.labels]
        self.required_labels = [y % num_classes for y in self.labels]

    def __len__(self) -> int:
        return len(self.labels)

    def clip_seed(self, index: int) -> int:
        """The per-clip seed of ``index`` (derived from (seed, index))."""
        return int(np.random.SeedSequence([self.seed, 1, index]).generate_state(1)[0])

    def subject_colors(self, subject: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(skin_rgb, background_rgb)`` channel gains of ``subject`` (see ``Face.render``)."""
        return subject_colors(self.seed, subject)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return self.make_clip(
            self.subjects[index],
            self.experienced_labels[index],
            self.required_labels[index],
            self.clip_seed(index),
        )

    def _scene(self, subject: int, experienced: int, required: int, clip_seed: int) -> SimpleNamespace:
        """The random draws of one clip: face, colours, the two motions ``[required, experienced]`` with their
        intensities ``a (t, 2)``, the apex, shifts ``g (t, 2)``, texture and noise ``(3, t, S, S)``. Only the
        motions depend on the classes."""
        S, t = self.size, self.t
        u = S / 128.0
        crng = np.random.default_rng(clip_seed)
        face = Face(np.random.default_rng([self.seed, 0, subject]), crng, S)
        i_re, i_ex = crng.uniform(0.8, 1.2, 2)
        apex = int(np.clip(np.rint(crng.uniform(0.35, 0.65) * (t - 1)), 1, t - 1))
        g = torch.from_numpy(crng.normal(0.0, self.jitter * u, size=(t, 2))).float()
        texture = 0.03 * smooth_noise(crng, 12, 64) + 0.015 * smooth_noise(crng, 40, 64)
        gen = torch.Generator().manual_seed(int(crng.integers(2**62)))
        noise = torch.randn(3, t, S, S, generator=gen) * self.noise
        r = np.minimum(np.arange(t) / apex, 1.0)
        f = self.experienced_at_apex
        a = np.stack([np.sin(0.5 * np.pi * r) ** 2, f + (1 - f) * np.cos(0.5 * np.pi * r) ** 2], 1)
        motions = []
        for c, A in ((required, self.amplitude * i_re), (experienced, self.experienced_amplitude * i_ex)):
            m = Motion()
            for name, share in CLASS_MOTIONS[MFED_CLASSES[c]]:
                add_primitive(name, face, share * A * u, m)
            motions.append(m)
        return SimpleNamespace(
            face=face,
            colors=self.subject_colors(subject),
            motions=motions,
            a=torch.from_numpy(a).float(),
            apex=apex,
            g=g,
            texture=texture,
            noise=noise,
        )

    def make_clip(
        self, subject: int, experienced: int, required: int, clip_seed: int, neutral: bool = False
    ) -> dict[str, torch.Tensor]:
        """Render one clip (an item dict). The nuisances (face, colours, apex, intensities, noise, jitter)
        depend only on ``(seed, subject, clip_seed)``, so two class pairs with the same arguments differ only
        by their motions; ``neutral=True`` renders the clip with both motions at zero intensity."""
        for name, c in (("experienced", experienced), ("required", required)):
            if not 0 <= c < self.num_classes:
                raise ValueError(f"{name} class {c} out of range [0, {self.num_classes})")
        with one_thread():
            sc = self._scene(subject, experienced, required, clip_seed)
            a = torch.zeros_like(sc.a) if neutral else sc.a
            video, _, _ = render_clip(sc.face, sc.motions, a, sc.g, sc.texture, sc.noise, sc.colors)
        return _item(video, experienced, required, self.num_classes, subject, 0, sc.apex, self.t - 1)


class MFEDFolderDataset(torch.utils.data.Dataset):
    """The real MFED data set stored as frame folders plus a label CSV.

    Layout: ``root/<subject>/<clip>/`` holds the face crops of one clip, ordered by the last integer in their
    file names (``img46.jpg``, ``046.png``). ``root/labels.csv`` (or ``root/<csv>``, or ``csv`` itself when it
    is an absolute path) has the header ``subject,clip,onset,apex,offset,experienced,required``
    (case-insensitive; other columns are ignored): onset <= apex <= offset are inclusive frame numbers as in
    the file names; the labels are ints 0..5 or names of ``MFED_CLASSES`` (case-insensitive), one form for
    the whole file.

    Sampling: the frame numbers ``rint(linspace(onset, offset, t))`` (frames repeat when the clip is shorter
    than t), loaded as RGB, resized to ``size x size`` (PIL bilinear), scaled to [0, 1]. In an item, onset
    and offset are 0 and t - 1 and apex is the index of the sampled frame whose number is closest to the
    apex number (the first such frame).

    Attributes: ``rows`` (per clip: names, frame numbers, labels, CSV line), ``labels`` (joint,
    ``6 * experienced + required``), ``experienced_labels``, ``required_labels``, ``subject_names`` (the CSV
    strings), ``subjects`` (their ints: the last integer in the name when that is one-to-one, else the
    sorted position), ``classes``, ``num_classes``.
    """

    def __init__(self, root: str, csv: Optional[str] = None, t: int = 30, size: int = 224):
        if t < 2 or size < 1:
            raise ValueError(f"t must be >= 2 and size >= 1, got t={t}, size={size}")
        self.root, self.t, self.size = str(root), t, size
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"MFED root folder not found: {self.root}")
        csv_path, raw = read_csv(self.root, "labels.csv" if csv is None else csv, COLUMNS)
        self.classes, self.num_classes = list(MFED_CLASSES), len(MFED_CLASSES)
        _check_one_label_form(csv_path, raw)
        label_map = LabelMap([], self.classes, csv_path)

        self.rows: list[dict[str, object]] = []
        for line, r in raw:
            where = f"{csv_path} line {line} ({r['subject']}/{r['clip']})"
            y = {}
            for c in ("experienced", "required"):
                y[c] = label_map(r[c].lower(), f"{where}: {c}")
                if y[c] is None:
                    raise ValueError(f"{where}: unknown {c} class {r[c]!r}; expected one of {self.classes}")
            n = {}
            for c in ("onset", "apex", "offset"):
                if not is_int(r[c]):
                    raise ValueError(f"{where}: {c} must be an integer frame number, got {r[c]!r}")
                n[c] = int(r[c])
            if not n["onset"] <= n["apex"] <= n["offset"]:
                raise ValueError(
                    f"{where}: expected onset <= apex <= offset, got onset {n['onset']}, apex {n['apex']}, "
                    f"offset {n['offset']}"
                )
            folder = os.path.join(self.root, r["subject"], r["clip"])
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"{where}: clip folder not found: {folder}")
            frames = list_frames(folder)
            if not frames:
                raise FileNotFoundError(f"{where}: no numbered images in {folder}")
            lo, hi = next(iter(frames)), next(reversed(frames))
            outside = [f"{c} {v}" for c, v in n.items() if not lo <= v <= hi]
            if outside:
                raise ValueError(
                    f"{where}: {', '.join(outside)} outside the clip's frames {lo}..{hi} in {folder}"
                )
            numbers = sample_numbers(n["onset"], n["offset"], t)
            check_frames(numbers, frames, folder, where)
            self.rows.append(
                {
                    "subject": r["subject"],
                    "clip": r["clip"],
                    **n,
                    "apex_index": int(np.argmin(np.abs(np.asarray(numbers) - n["apex"]))),
                    **y,
                    "numbers": numbers,
                    "frames": frames,
                    "line": line,
                }
            )
        self.experienced_labels: list[int] = [int(r["experienced"]) for r in self.rows]
        self.required_labels: list[int] = [int(r["required"]) for r in self.rows]
        self.labels = [
            self.num_classes * e + q for e, q in zip(self.experienced_labels, self.required_labels)
        ]
        self.subject_names: list[str] = [str(r["subject"]) for r in self.rows]
        ids = subject_ids(self.subject_names)
        self.subjects: list[int] = [ids[s] for s in self.subject_names]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        r = self.rows[index]
        video, _ = load_frames([r["frames"][n] for n in r["numbers"]], self.size, mode="RGB")
        return _item(
            video,
            r["experienced"],
            r["required"],
            self.num_classes,
            self.subjects[index],
            0,
            r["apex_index"],
            self.t - 1,
        )


def _check_one_label_form(csv_path: str, raw) -> None:
    """Raise when the label fields of the CSV mix ints and class names (naming one of each)."""
    first: dict[bool, str] = {}
    for line, r in raw:
        for c in ("experienced", "required"):
            first.setdefault(is_int(r[c]), f"line {line} {c}={r[c]!r}")
    if len(first) == 2:
        raise ValueError(
            f"{csv_path}: labels mix ints and class names ({first[True]}, {first[False]}); "
            f"use ints 0..{len(MFED_CLASSES) - 1} or names of {list(MFED_CLASSES)} throughout"
        )
