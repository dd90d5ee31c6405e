from .fcc import KERNELS, circular_conv, circular_conv2d
from .reference import fcc2d_ref, fcc_ref

__all__ = ["circular_conv", "circular_conv2d", "fcc_ref", "fcc2d_ref", "KERNELS"]
