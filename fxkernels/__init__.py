"""fxkernels: fused Triton / CUDA / CPU C++ kernels for facial-expression-recognition models.

Every op takes `backend="auto" | "reference" | "triton" | "cuda" | "cpu"`; `use_backend(name)` sets the
default in a `with` block and the FXKERNELS_BACKEND environment variable sets the process default.
"""

from . import _ext  # noqa: F401  (loads the C++ ops if built)
from ._backend import BACKENDS, backends, default_backend, use_backend
from .nn import (
    CCC,
    F5C,
    FCC,
    FCCH,
    FCCV,
    FWM,
    MOLF5C,
    STFE,
    STFM,
    ParCFCC,
    SpatialCorrelation,
    SpatialExtractor,
    TemporalFilter,
)
from .ops import (
    channel_edge_conv,
    channel_edge_conv_ref,
    circular_conv,
    circular_conv2d,
    fcc2d_ref,
    fcc_ref,
    knn_cosine,
    knn_cosine_ref,
    spatial_correlation,
    spatial_correlation_ref,
    spatial_edge_conv,
    spatial_edge_conv_ref,
    spectral_filter,
    spectral_filter_ref,
)

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "backends",
    "default_backend",
    "use_backend",
    "circular_conv",
    "circular_conv2d",
    "fcc_ref",
    "fcc2d_ref",
    "knn_cosine",
    "channel_edge_conv",
    "spatial_edge_conv",
    "knn_cosine_ref",
    "channel_edge_conv_ref",
    "spatial_edge_conv_ref",
    "spatial_correlation",
    "spatial_correlation_ref",
    "spectral_filter",
    "spectral_filter_ref",
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
