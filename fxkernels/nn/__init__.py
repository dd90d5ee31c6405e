"""Drop-in nn.Module layers built on fxkernels ops."""

from .ccc import CCC, F5C, MOLF5C
from .corr import SpatialCorrelation
from .fcc import FCC, FCCH, FCCV, ParCFCC
from .spectral import FWM, STFE, STFM, SpatialExtractor, TemporalFilter

__all__ = [
    "FCC",
    "FCCH",
    "FCCV",
    "ParCFCC",
    "CCC",
    "F5C",
    "MOLF5C",
    "SpatialCorrelation",
    "TemporalFilter",
    "SpatialExtractor",
    "STFE",
    "FWM",
    "STFM",
]
