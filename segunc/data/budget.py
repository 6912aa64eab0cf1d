"""Memory budget of one decoded image, checked from the file's header *before* its pixels are decoded.

An image file is compressed; its header says what decoding it will take. A 1 MB TIFF can declare
4096 × 4096 × 64 samples (2 GB decoded), a 3 KB one 4096 × 4096 × 512 (8 GiB). Both the data
folder's TIFFs and uploads are refused, naming the file, when the header declares

* more than :data:`MAX_SAMPLES` samples per pixel (LGG: 3; RGB + alpha: 4),
* more than :data:`MAX_BITS` bits per sample (64-bit integers / float64 are not MRI intensities),
* more than :data:`MAX_DECODED_BYTES` decoded bytes (H · W · samples · bytes per sample).

With these, the worst accepted image is 4096 × 4096 × 3 at 16 bits (96 MiB decoded); the
conversion to 8 bits works on float32 for ≤ 16-bit integers, so it adds at most twice that.
"""
from __future__ import annotations

import math
from typing import Sequence

__all__ = ["MAX_SAMPLES", "MAX_BITS", "MAX_DECODED_BYTES", "budget_problem", "tiff_page_problem"]

MAX_SAMPLES = 4
MAX_BITS = 32
MAX_DECODED_BYTES = 128 << 20


def budget_problem(shape: Sequence[int], samples: int, bits: int) -> str | None:
    """What is wrong with decoding an image of ``shape`` (all axes, samples included), ``samples``
    per pixel and ``bits`` per sample, or None when it fits the budget."""
    if samples > MAX_SAMPLES:
        return (f"has {samples} channels (samples per pixel, from its header); at most {MAX_SAMPLES} are read "
                "(expected 3: pre-contrast, FLAIR, post-contrast, as in LGG, or 1: grayscale)")
    if bits > MAX_BITS:
        return f"has {bits} bits per sample (from its header); at most {MAX_BITS} are read"
    n = math.prod(int(s) for s in shape) * max(1, math.ceil(bits / 8))
    if n > MAX_DECODED_BYTES:
        dims = " × ".join(str(int(s)) for s in shape)
        return (f"has {dims} samples of {bits} bits (from its header: {n / 2**20:.0f} MiB decoded); at most "
                f"{MAX_DECODED_BYTES >> 20} MiB is decoded (e.g. 4096 × 4096 × 3 at 16 bits)")
    return None


def tiff_page_problem(page) -> str | None:
    """:func:`budget_problem` of a ``tifffile`` page, from its tags only (nothing decoded)."""
    bits = page.bitspersample
    bits = max(bits) if isinstance(bits, (tuple, list)) else int(bits)
    shape = tuple(page.shape)
    if page.imagedepth > 1 and page.imagedepth not in shape:
        shape = (page.imagedepth, *shape)
    return budget_problem(shape, int(page.samplesperpixel), bits)
