"""fxkernels.ops: one sub-package per kernel family."""

from .ccc import (
    channel_edge_conv,
    channel_edge_conv_ref,
    knn_cosine,
    knn_cosine_ref,
    spatial_edge_conv,
    spatial_edge_conv_ref,
)
from .corr import spatial_correlation, spatial_correlation_ref
from .fcc import circular_conv, circular_conv2d, fcc2d_ref, fcc_ref
from .spectral import spectral_filter, spectral_filter_ref

# op name -> family module (which exposes KERNELS); used by `python -m fxkernels` and the demo
OP_FAMILIES = {
    "circular_conv": "fxkernels.ops.fcc",
    "circular_conv2d": "fxkernels.ops.fcc",
    "knn_cosine": "fxkernels.ops.ccc.ccc",
    "channel_edge_conv": "fxkernels.ops.ccc.ccc",
    "spatial_edge_conv": "fxkernels.ops.ccc.ccc",
    "spatial_correlation": "fxkernels.ops.corr.corr",
    "spectral_filter": "fxkernels.ops.spectral.spectral",
}

__all__ = [
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
    "OP_FAMILIES",
]
