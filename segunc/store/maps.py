"""The map file: one ``.npz`` (zip, deflate) per (slice, mode) result, readable with ``np.load``.

Entries (H x W = slice grid):

* ``format``                 int array ``[FORMAT_VERSION, bits, H, W]``
* ``<map>`` for each of ``mean, variance, entropy, expected_entropy, mutual_information``:
  unsigned integer codes (``uint8`` for bits <= 8, else ``uint16``), and ``<map>__range``
  float64 ``[lo, hi]`` with lo = min(0, min v), hi = max(max v, lo + floor); floor = 0.05 for
  maps in [0, 1] and 0.0125 (= 0.05 · 0.25, its maximum) for the variance. Decoding:
  v' = lo + q·(hi − lo)/L, L = 2^bits − 1, so |v' − v| <= (hi − lo) / (2L). With the default
  8 bits: 0.2 % of the map's own range, at most 0.00196 for probabilities / entropies and
  0.00049 for variances, and at most 1e-4 (variance 2.5e-5) on a map that stays below its
  floor (a slice where the model sees nothing: its background noise is not worth 8 bits).
  NaN pixels (if any) are listed in ``<map>__nan`` (bit-packed) and restored.
* ``mask``                   the thresholded mask, ``np.packbits`` of H·W booleans.
* ``samples`` (optional)     the T x H x W probabilities as float16 (``keep_samples``).

Why quantise: float16 maps compress badly (≈ 360 KB per slice × mode on real U-Net output:
the low bits of near-zero background probabilities and entropies are noise); 8-bit codes with a
per-map range keep every visible structure at a fraction of that (see the store README). ``bits`` (8..16) is a store option;
a file records its own, so files of different depths mix freely.
"""
from __future__ import annotations

import io
import zipfile

import numpy as np

#: = segunc.pipeline.MAP_NAMES (repeated so reading the store does not import torch; a test checks)
MAP_NAMES = ("mean", "variance", "entropy", "expected_entropy", "mutual_information")

__all__ = ["FORMAT_VERSION", "MapFileError", "encode_maps", "decode_maps", "value_range", "max_error", "without_samples"]

FORMAT_VERSION = 1
#: smallest quantisation range per map (see the module docstring)
RANGE_FLOOR = {"variance": 0.0125}
DEFAULT_FLOOR = 0.05


class MapFileError(ValueError):
    """A map file that is unreadable, truncated or of the wrong shape."""


def _levels(bits: int) -> int:
    if not 2 <= int(bits) <= 16:
        raise ValueError(f"bits must be in 2..16, got {bits}")
    return (1 << int(bits)) - 1


def value_range(name: str, v: np.ndarray) -> tuple[float, float]:
    """The [lo, hi] a map is quantised over (finite values; floor applied)."""
    v = np.asarray(v, dtype=np.float64)
    finite = v[np.isfinite(v)]
    lo = min(0.0, float(finite.min())) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 0.0
    return lo, max(hi, lo + RANGE_FLOOR.get(name, DEFAULT_FLOOR))


def max_error(name: str, v: np.ndarray, bits: int = 8) -> float:
    """Worst-case absolute decoding error of map ``name`` with values ``v``."""
    lo, hi = value_range(name, v)
    return (hi - lo) / (2 * _levels(bits))


def _quantise(name: str, v: np.ndarray, bits: int) -> dict[str, np.ndarray]:
    L = _levels(bits)
    v = np.asarray(v, dtype=np.float64)
    nan = np.isnan(v)
    lo, hi = value_range(name, v)
    x = np.where(nan, 0.0, (v - lo) / (hi - lo))
    q = np.rint(np.clip(x, 0.0, 1.0) * L).astype(np.uint8 if bits <= 8 else np.uint16)
    out = {"": q, "__range": np.array([lo, hi], dtype=np.float64)}
    if nan.any():
        out["__nan"] = np.packbits(nan.ravel())
    return out


def encode_maps(maps: dict[str, np.ndarray], samples: np.ndarray | None = None, bits: int = 8) -> bytes:
    """``maps`` (MAP_NAMES float H W + ``mask`` bool H W) → npz bytes."""
    h, w = np.asarray(maps["mask"]).shape
    arrays: dict[str, np.ndarray] = {"format": np.array([FORMAT_VERSION, bits, h, w], dtype=np.int64)}
    for name in MAP_NAMES:
        m = np.asarray(maps[name])
        if m.shape != (h, w):
            raise ValueError(f"map {name!r} has shape {m.shape}, expected {(h, w)}")
        for suffix, arr in _quantise(name, m, bits).items():
            arrays[name + suffix] = arr
    arrays["mask"] = np.packbits(np.asarray(maps["mask"], dtype=bool).ravel())
    if samples is not None:
        arrays["samples"] = np.asarray(samples, dtype=np.float16)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def decode_maps(data: bytes, shape: tuple[int, int] | None = None, with_samples: bool = False) -> dict[str, np.ndarray]:
    """npz bytes → MAP_NAMES (float32) + ``mask`` (bool) [+ ``samples`` float32]; any problem → MapFileError."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            version, bits, h, w = (int(x) for x in z["format"])
            if version != FORMAT_VERSION:
                raise MapFileError(f"map file format {version}, expected {FORMAT_VERSION}")
            if shape is not None and (h, w) != tuple(shape):
                raise MapFileError(f"map file holds {h}x{w} maps, expected {shape[0]}x{shape[1]}")
            L = _levels(bits)
            out: dict[str, np.ndarray] = {}
            for name in MAP_NAMES:
                q = z[name]
                if q.shape != (h, w):
                    raise MapFileError(f"map {name!r} has shape {q.shape}, expected {(h, w)}")
                lo, hi = (float(x) for x in z[name + "__range"])
                v = (lo + q.astype(np.float64) * ((hi - lo) / L)).astype(np.float32)
                if name + "__nan" in z.files:
                    v[np.unpackbits(z[name + "__nan"], count=h * w).reshape(h, w).astype(bool)] = np.nan
                out[name] = v
            out["mask"] = np.unpackbits(z["mask"], count=h * w).reshape(h, w).astype(bool)
            if with_samples:
                if "samples" not in z.files:
                    raise MapFileError("map file holds no samples")
                out["samples"] = z["samples"].astype(np.float32)
            return out
    except MapFileError:
        raise
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, TypeError) as exc:
        raise MapFileError(f"unreadable map file ({type(exc).__name__}: {exc})") from None


def without_samples(data: bytes) -> bytes:
    """The map file ``data`` with its ``samples`` entry left out (the maps and mask unchanged): what the
    app reads, at a fraction of the size (T float16 samples are about 70x the maps on a U-Net slice)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as src:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
                for info in src.infolist():
                    if info.filename != "samples.npy":
                        dst.writestr(info.filename, src.read(info))
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise MapFileError(f"unreadable map file: {exc}") from exc
    return buf.getvalue()
