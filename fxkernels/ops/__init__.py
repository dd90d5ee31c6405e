"""fxkernels.ops: one sub-package per kernel family."""

from .fcc import circular_conv, circular_conv2d, fcc2d_ref, fcc_ref

# op name -> (family module, kernels per backend); used by `python -m fxkernels` and the demo
OP_FAMILIES = {
    "circular_conv": "fxkernels.ops.fcc",
    "circular_conv2d": "fxkernels.ops.fcc",
}

__all__ = ["circular_conv", "circular_conv2d", "fcc_ref", "fcc2d_ref", "OP_FAMILIES"]
