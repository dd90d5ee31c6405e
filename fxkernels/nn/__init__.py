"""Drop-in nn.Module layers built on fxkernels ops."""

from .fcc import FCC, FCCH, FCCV, ParCFCC

__all__ = ["FCC", "FCCH", "FCCV", "ParCFCC"]
