"""Spectral temporal filter family (SPEC section 3.1): rfft -> complex filter -> irfft (+ residual), fused."""

from .reference import dft_matrices, spectral_filter_dft, spectral_filter_ref
from .spectral import MAX_T, spectral_filter

__all__ = ["spectral_filter", "spectral_filter_ref", "spectral_filter_dft", "dft_matrices", "MAX_T"]
