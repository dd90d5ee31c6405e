"""Spectral temporal filter family: rfft -> complex filter -> irfft (+ residual), fused (see README.md)."""

from .reference import dft_matrices, spectral_filter_dft, spectral_filter_ref
from .spectral import MAX_T, spectral_filter

__all__ = ["spectral_filter", "spectral_filter_ref", "spectral_filter_dft", "dft_matrices", "MAX_T"]

# exported as fxkernels.<name> (fxkernels/_families.py)
OPS = ["spectral_filter", "spectral_filter_ref"]
