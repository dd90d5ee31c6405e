"""fxkernels: fused Triton / CUDA / CPU C++ kernels for facial-expression-recognition models.

Every op takes `backend="auto" | "reference" | "triton" | "cuda" | "cpu"`; `use_backend(name)` sets the
default in a `with` block and the FXKERNELS_BACKEND environment variable sets the process default.
The ops (`fxkernels.ops`) and modules (`fxkernels.nn`) of every family in fxkernels/_families.py are exported
here by name, e.g. `fxkernels.circular_conv2d`, `fxkernels.FCC`.
"""

from . import (
    _ext,  # noqa: F401  (loads the C++ ops if built)
    nn,
    ops,
)
from ._backend import BACKENDS, backends, default_backend, use_backend

__version__ = "0.1.0"

__all__ = ["BACKENDS", "backends", "default_backend", "use_backend", "nn", "ops"]
for _name in ops.__all__:
    if _name not in ("FAMILIES", "REGISTRY", "OP_FAMILIES"):
        globals()[_name] = getattr(ops, _name)
        __all__.append(_name)
for _name in nn.__all__:
    globals()[_name] = getattr(nn, _name)
    __all__.append(_name)
del _name
