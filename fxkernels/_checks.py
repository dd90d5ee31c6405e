"""Input validation shared by the public ops: clear ValueErrors naming the argument, before any launch."""

from __future__ import annotations

import functools
import math
import os

import torch
from torch._subclasses.fake_tensor import FakeTensor

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
            f"fxkernels.{op}: {name} must have shape {shape_desc + '= ' if shape_desc else ''}{tuple(shape)}, "
            f"got {tuple(t.shape)}"
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


@functools.cache
def _memory_bytes(device: torch.device):
    """Physical memory of `device` in bytes (None if unknown)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None  # meta and others: nothing is allocated


def check_alloc(op: str, what: str, shape: tuple, like: torch.Tensor):
    """A ValueError instead of an out-of-memory kill when an output could never fit on like's device."""
    if torch.compiler.is_compiling():
        return  # symbolic sizes
    need = math.prod(shape) * like.element_size()
    if need < 2**30:
        return
    have = _memory_bytes(like.device)  # None for meta: nothing is allocated
    if have is not None and need > have:
        raise ValueError(
            f"fxkernels.{op}: {what} = {tuple(int(s) for s in shape)} would take {need / 2**30:.1f} GiB, more "
            f"than the {have / 2**30:.1f} GiB of memory of {like.device}"
        )


def has_data(t: torch.Tensor) -> bool:
    """False while tracing and for meta / fake tensors: data-dependent checks (.item()) must be skipped."""
    if torch.compiler.is_compiling() or t.device.type == "meta":
        return False
    return not isinstance(t, FakeTensor)
