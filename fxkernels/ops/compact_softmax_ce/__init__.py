"""Compact softmax cross-entropy family: cross-entropy plus a symmetric KL pull of the non-target softmax towards
uniform, fused (see README.md)."""

from .compact_softmax_ce import compact_softmax_ce
from .reference import compact_softmax_ce_ref

__all__ = ["compact_softmax_ce", "compact_softmax_ce_ref"]

# exported as fxkernels.<name> (fxkernels/_families.py)
OPS = ["compact_softmax_ce", "compact_softmax_ce_ref"]
