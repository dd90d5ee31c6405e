"""Spatial-correlation family (SPEC section 7): the FlowNetC cost volume of MOL's optical-flow branch."""

from .corr import spatial_correlation
from .reference import spatial_correlation_loop, spatial_correlation_ref

__all__ = ["spatial_correlation", "spatial_correlation_ref", "spatial_correlation_loop"]
