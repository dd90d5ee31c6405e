"""fxkernels.ops: one sub-package per kernel family (listed once, in fxkernels/_families.py).

Each family package names its public functions in `OPS`; they are exported here and as `fxkernels.<name>`.
Every fused op is defined with the op kit (`fxkernels.ops.opkit.FusedOp`), which records it in `REGISTRY`.
"""

import importlib

from .._families import FAMILIES
from .opkit import REGISTRY

__all__ = ["FAMILIES", "REGISTRY", "OP_FAMILIES"]
for _family in FAMILIES:
    _mod = importlib.import_module(f"{__name__}.{_family}")
    for _name in _mod.OPS:
        globals()[_name] = getattr(_mod, _name)
        __all__.append(_name)
del _family, _mod, _name

# public op name -> the module defining it (which exposes KERNELS); used by `python -m fxkernels` and the demo.
# Kit ops named "_..." are a family's private helpers (e.g. attention's `_rel_pos_project`): not listed here.
OP_FAMILIES = {name: op.module for name, op in REGISTRY.items() if not name.startswith("_")}
