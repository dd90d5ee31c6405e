"""Input validation shared by the public ops: clear ValueErrors naming the argument, before any launch."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_tensor(op: str, name: str, t, ndim: int | None = None, shape: tuple | None = None, shape_desc=""):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"fxkernels.{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"fxkernels.{op}: {name} must be float32, float64, float16 or bfloat16, got {t.dtype}"
        )
    if ndim is not None and t.dim() != ndim:
        raise ValueError(
            f"fxkernels.{op}: {name} must be {ndim}-D {shape_desc}, got shape {tuple(t.shape)}".replace(
                "  ", " "
            )
        )
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(
            f"fxkernels.{op}: {name} must have shape {shape_desc}= {tuple(shape)}, got {tuple(t.shape)}"
        )


def check_same(op: str, ref_name: str, ref: torch.Tensor, **others):
    """All given tensors on ref's device, with ref's dtype."""
    for name, t in others.items():
        if t is None:
            continue
        if t.device != ref.device:
            raise ValueError(
                f"fxkernels.{op}: {name} is on {t.device} but {ref_name} is on {ref.device}; "
                "all inputs must be on one device"
            )
        if t.dtype != ref.dtype:
            raise ValueError(
                f"fxkernels.{op}: {name} has dtype {t.dtype} but {ref_name} has {ref.dtype}; "
                "all inputs must share one dtype"
            )
