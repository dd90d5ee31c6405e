"""FCC family: circular fully-connected convolution of MOL, one pass or two fused (see README.md)."""

from .fcc import KERNELS, circular_conv, circular_conv2d
from .reference import fcc2d_ref, fcc_ref

__all__ = ["circular_conv", "circular_conv2d", "fcc_ref", "fcc2d_ref", "KERNELS"]

# exported as fxkernels.<name> (fxkernels/_families.py)
OPS = ["circular_conv", "circular_conv2d", "fcc_ref", "fcc2d_ref"]
