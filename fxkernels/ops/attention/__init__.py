"""Attention family: softmax attention with MViTv2's decomposed rel-pos bias and residual pooling, fused, and
the MViT pooling (see README.md)."""

from .attention import MAX_HD, attention
from .pool import attention_pool
from .qkv import qkv_attention
from .reference import attention_pool_ref, attention_ref, attention_rel_ref, rel_pos_gather, rel_pos_project

__all__ = [
    "attention",
    "attention_pool",
    "attention_pool_ref",
    "attention_ref",
    "attention_rel_ref",
    "rel_pos_gather",
    "rel_pos_project",
    "qkv_attention",
    "MAX_HD",
]

# exported as fxkernels.<name> (fxkernels/_families.py)
OPS = ["attention", "attention_ref", "attention_pool", "attention_pool_ref", "rel_pos_gather"]
