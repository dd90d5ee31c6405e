"""Backend selection shared by every op: "auto" | "reference" | "triton" | "cuda" | "cpu"."""

from __future__ import annotations

import contextlib
import os
import threading

import torch

from . import _ext

BACKENDS = ("auto", "reference", "triton", "cuda", "cpu")
_state = threading.local()


def _check_name(name: str, what: str = "backend") -> str:
    if name not in BACKENDS:
        raise ValueError(f"fxkernels: {what} must be one of {BACKENDS}, got {name!r}")
    return name


_ENV_DEFAULT = _check_name(os.environ.get("FXKERNELS_BACKEND", "auto"), "FXKERNELS_BACKEND")


def triton_interpret() -> bool:
    """Triton on CPU tensors is allowed only under TRITON_INTERPRET=1 (that is how the tests run it)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_TRITON_OK: list = []  # filled on first use: importing triton costs ~1 s, so only when asked


def _triton_importable() -> bool:
    if not _TRITON_OK:
        try:
            import triton  # noqa: F401
            import triton.language  # noqa: F401

            _TRITON_OK.append(True)
        except Exception:
            _TRITON_OK.append(False)
    return _TRITON_OK[0]


def _gpu_visible() -> bool:
    return torch.cuda.is_available()


def backends() -> dict:
    """Which backends are usable in this process.

    "cuda" = CUDA kernels compiled in and a GPU visible; "cpu" = CPU kernels compiled in;
    "triton" = triton importable and a GPU visible (or TRITON_INTERPRET=1, which runs it on CPU tensors).
    """
    return {
        "reference": True,
        "triton": _triton_importable() and (_gpu_visible() or triton_interpret()),
        "cuda": bool(_ext._INFO.get("cuda")) and _gpu_visible(),
        "cpu": _ext._C is not None,
    }


def default_backend() -> str:
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else _ENV_DEFAULT


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager setting the default backend of every op called with backend="auto"."""
    _check_name(name)
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    stack.append(name)
    try:
        yield
    finally:
        stack.pop()


def _available_str(op: str, kernels: dict) -> str:
    avail = [b for b in BACKENDS[1:] if backend_available(b, op, kernels)]
    return ", ".join(avail)


def backend_available(name: str, op: str, kernels: dict) -> bool:
    """`kernels` maps backend -> C++ kernel name (for cpu/cuda) or True (triton) for this op.

    Cached per (backend, op, kernels, TRITON_INTERPRET): availability is fixed once the extension is loaded, and
    every op call asks."""
    key = (name, op, id(kernels), triton_interpret())
    hit = _AVAILABLE.get(key)
    if hit is None:
        hit = _AVAILABLE[key] = _backend_available(name, op, kernels)
    return hit


_AVAILABLE: dict = {}


def _backend_available(name: str, op: str, kernels: dict) -> bool:
    if name == "reference":
        return True
    if name not in kernels:
        return False
    if name == "triton":
        return backends()["triton"]
    if name == "cuda":
        return _gpu_visible() and _ext.has_kernel(kernels["cuda"], "cuda")
    if name == "cpu":
        return _ext.has_kernel(kernels["cpu"], "cpu")
    return False


def resolve(backend: str, device: torch.device, op: str, kernels: dict, why_not=None) -> str:
    """The concrete backend for tensors on `device`; raises a clear error for an impossible request.

    why_not(candidate) -> None if the fused backend `candidate` takes this call, else the reason: "auto"
    skips such a backend (the next candidate, finally the reference), an explicit request raises ValueError.
    """
    _check_name(backend)
    asked = backend
    if backend == "auto":
        backend = default_backend()
    if backend == "auto":
        if device.type == "cuda":
            cands = ("triton", "cuda")
        else:
            cands = ("cpu",) if device.type == "cpu" else ()
        for cand in cands:
            if backend_available(cand, op, kernels) and (why_not is None or why_not(cand) is None):
                return cand
        return "reference"
    if backend == "reference":
        return backend
    if not backend_available(backend, op, kernels):
        raise RuntimeError(
            f"fxkernels.{op}: backend {backend!r} is not available here "
            f"(available: {_available_str(op, kernels)}; see `python -m fxkernels`)"
        )
    dev = device.type
    if not (
        dev == backend or (backend == "triton" and (dev == "cuda" or (dev == "cpu" and triton_interpret())))
    ):
        hint = " (Triton runs on CPU tensors only under TRITON_INTERPRET=1)" if backend == "triton" else ""
        raise RuntimeError(
            f"fxkernels.{op}: backend {backend!r} cannot run on {device.type} tensors{hint}; "
            f"use backend='auto' or move the tensors"
        )
    why = why_not(backend) if why_not is not None else None
    if why is not None:
        if asked == "auto":  # a default set by use_backend / FXKERNELS_BACKEND: fall back quietly
            return "reference"
        raise ValueError(f"fxkernels.{op}: {why}")
    return backend
