"""Loads the compiled extension `fxkernels._C` (CPU C++ and CUDA kernels), if it was built.

`import fxkernels` never fails because of it: without `_C` the reference and Triton paths still work,
and one warning says what is unavailable.
"""

from __future__ import annotations

import importlib
import warnings

import torch  # noqa: F401  (loads libc10 / libtorch, which _C links against)

_C = None
_LOAD_ERROR: str | None = None
try:  # the .so registers the `fxkernels::*_fwd/_bwd` C++ ops on import
    _C = importlib.import_module("fxkernels._C")
except Exception as e:  # ImportError, or an undefined symbol from a torch mismatch
    _LOAD_ERROR = f"{type(e).__name__}: {e}"
    warnings.warn(
        "fxkernels: the compiled extension fxkernels._C is not available "
        f"({_LOAD_ERROR}); the 'cpu' and 'cuda' backends are disabled, 'reference' and 'triton' still work. "
        "Rebuild with `pip install -e . --no-build-isolation`.",
        RuntimeWarning,
        stacklevel=2,
    )


# read once: the op dispatch consults it on every call (and torch.compile must not trace into pybind11)
_INFO = {"loaded": False, "error": _LOAD_ERROR, "cuda": False, "kernels": []}
if _C is not None:
    _INFO = dict(_C.build_info(), loaded=True)
_KERNELS = frozenset(_INFO.get("kernels", []))


def build_info() -> dict:
    """What the extension was compiled with (`loaded: False` and the load error when it is missing)."""
    return dict(_INFO)


def has_kernel(name: str, device: str) -> bool:
    """True if the C++ kernel `name` (e.g. "fcc_fwd") was compiled for `device` ("cpu" or "cuda")."""
    return f"{name}:{device}" in _KERNELS
