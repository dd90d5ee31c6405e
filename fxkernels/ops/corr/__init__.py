"""Spatial-correlation family: the FlowNetC cost volume of MOL's optical-flow branch (see README.md)."""

from .corr import spatial_correlation
from .reference import spatial_correlation_loop, spatial_correlation_ref

__all__ = ["spatial_correlation", "spatial_correlation_ref", "spatial_correlation_loop"]

# exported as fxkernels.<name> (fxkernels/_families.py)
OPS = ["spatial_correlation", "spatial_correlation_ref"]
