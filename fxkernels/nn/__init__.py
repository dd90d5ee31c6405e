"""Drop-in nn.Module layers built on fxkernels ops: `fxkernels.nn.<family>` for every family of
fxkernels/_families.py that has modules, everything in its `__all__` exported here and as `fxkernels.<name>`."""

import importlib
import importlib.util

from .._families import FAMILIES

__all__ = []
for _family in FAMILIES:
    if importlib.util.find_spec(f"{__name__}.{_family}") is None:
        continue
    _mod = importlib.import_module(f"{__name__}.{_family}")
    for _name in _mod.__all__:
        globals()[_name] = getattr(_mod, _name)
        __all__.append(_name)
del _family, _mod, _name
