"""Drop-in nn.Module layers built on fxkernels ops."""

from .ccc import CCC, F5C, MOLF5C
from .corr import SpatialCorrelation
from .fcc import FCC, FCCH, FCCV, ParCFCC

__all__ = ["FCC", "FCCH", "FCCV", "ParCFCC", "CCC", "F5C", "MOLF5C", "SpatialCorrelation"]
