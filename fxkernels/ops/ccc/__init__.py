"""CCC family: k-NN graph edge convolution of MOL, channel and spatial graphs (math, contract: README.md)."""

from .ccc import channel_edge_conv, knn_cosine, spatial_edge_conv
from .reference import channel_edge_conv_ref, edge_conv_loop, knn_cosine_ref, spatial_edge_conv_ref

__all__ = [
    "knn_cosine",
    "channel_edge_conv",
    "spatial_edge_conv",
    "knn_cosine_ref",
    "channel_edge_conv_ref",
    "spatial_edge_conv_ref",
    "edge_conv_loop",
]

# exported as fxkernels.<name> (fxkernels/_families.py)
OPS = [
    "knn_cosine",
    "channel_edge_conv",
    "spatial_edge_conv",
    "knn_cosine_ref",
    "channel_edge_conv_ref",
    "spatial_edge_conv_ref",
]
