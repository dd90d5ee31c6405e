"""Input normalisation shared by the tasks: `--input-norm` and `--input-scale`, and `model_input`."""

from __future__ import annotations

import torch

INPUT_NORMS = ("clip", "temporal", "none")


def add_input_arguments(group, default: str, why: str) -> None:
    """Add `--input-norm` (default `default`) and `--input-scale` to an argparse group; `why` ends the help."""
    group.add_argument(
        "--input-norm",
        choices=INPUT_NORMS,
        default=default,
        help="clip: standardise each clip; temporal: subtract each pixel's temporal mean, then standardise; "
        f"none: raw [0, 1] frames ({why})",
    )
    group.add_argument(
        "--input-scale", type=float, default=1.0, help="factor applied to the normalised input"
    )


def model_input(video: torch.Tensor, args, time_dim: int = 2) -> torch.Tensor:
    """(B, C, t, S, S) clips (the time axis at `time_dim`) -> model input (`args.input_norm`,
    `args.input_scale`): "none" scales the raw frames, "clip" standardises each clip over all but the batch
    axis, "temporal" first subtracts each pixel's mean over t (only what changes over time is left: the
    motion)."""
    if args.input_norm == "none":
        return video * args.input_scale
    if args.input_norm == "temporal":
        video = video - video.mean(time_dim, keepdim=True)
    dims = tuple(range(1, video.dim()))
    video = (video - video.mean(dims, keepdim=True)) / video.std(dims, keepdim=True).clamp_min(1e-6)
    return video * args.input_scale
