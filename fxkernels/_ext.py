"""Loads the compiled extension `fxkernels._C` (CPU C++ and CUDA kernels), if it was built.

`import fxkernels` never fails because of it: without `_C` the reference and Triton paths still work,
and one warning says what is unavailable.
"""

from __future__ import annotations

import importlib
import warnings

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


def build_info() -> dict:
    """What the extension was compiled with (empty-ish dict when it is missing)."""
    if _C is None:
        return {"loaded": False, "error": _LOAD_ERROR, "cuda": False, "kernels": []}
    info = dict(_C.build_info())
    info["loaded"] = True
    return info


def has_kernel(name: str, device: str) -> bool:
    """True if the C++ kernel `name` (e.g. "fcc_fwd") was compiled for `device` ("cpu" or "cuda")."""
    return _C is not None and f"{name}:{device}" in build_info().get("kernels", [])
