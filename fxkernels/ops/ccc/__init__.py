"""CCC family (SPEC section 2). In progress: the reference is done; kernels and public ops follow (issue 3)."""

from .reference import channel_edge_conv_ref, knn_cosine_ref, spatial_edge_conv_ref

__all__ = ["knn_cosine_ref", "channel_edge_conv_ref", "spatial_edge_conv_ref"]
