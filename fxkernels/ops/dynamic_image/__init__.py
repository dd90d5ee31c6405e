"""Dynamic image family: Bilen's approximate rank pooling over a time axis, fused (see README.md)."""

from .dynamic_image import dynamic_image
from .reference import dynamic_image_coefficients, dynamic_image_ref

__all__ = ["dynamic_image", "dynamic_image_ref", "dynamic_image_coefficients"]

# exported as fxkernels.<name> (fxkernels/_families.py)
OPS = ["dynamic_image", "dynamic_image_ref", "dynamic_image_coefficients"]
