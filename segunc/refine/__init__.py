"""Refinement of fused probability maps (paper §3.4)."""
from .crf import CRFParams, dense_crf

__all__ = ["CRFParams", "dense_crf"]
