"""Own images: decode an uploaded slice (and optional mask) from bytes into what the pipeline takes.

The app's *Your image* page hands the raw bytes of ``st.file_uploader`` here; nothing is read
from or written to disk, and nothing goes into the results store.

Policies (each applied step is recorded in :attr:`UploadedSlice.notes` and shown to the user):

* **Format** — PNG or TIFF, recognised by their magic bytes (not by the file name); anything else,
  or bytes that do not decode, is an :class:`UploadError` naming the file and the problem.
  A multi-page TIFF: the first page is used.
* **Channels** — three channels are taken as LGG's (pre-contrast, FLAIR, post-contrast). A
  single-channel (grayscale) image is **replicated** into all three channels. An alpha channel
  is dropped when it is fully opaque (constant); a transparent alpha, or any other channel count
  (e.g. a 5-channel stack), is rejected. Channel-first TIFFs (3 × H × W) are transposed.
* **Bit depth** — 8-bit is used as is. 16-bit (and 32-bit / float) images are **rescaled**
  linearly from their own min..max to 0..255 and rounded to uint8. The backends normalise each
  image themselves (U-Net: per-channel z-score; MedSAM family: min-max), so this changes nothing
  for them but the 8-bit rounding; the note gives the original dtype and range. NaN/inf → error.
* **Memory** — samples per pixel, bits per sample and the decoded size are checked from the
  header against :mod:`segunc.data.budget` before anything is decoded.
* **Size** — LGG slices are 256 × 256. Another size is **resized** to 256 × 256: a non-square image
  is first padded with zeros (black, like the MRI background) to a centred square, so the anatomy
  keeps its aspect ratio; then bilinear (antialiased) resizing for the image and nearest-neighbour
  for the mask. Sides below 32 px or above 4096 px are rejected.
* **Mask** — PNG or TIFF, binary: values {0, v} for one v > 0 (0/255 and 0/1 both work; a
  colour mask must be grey or have one colour). More than two values (a label map, an
  antialiased drawing) is rejected with the values found. It must have the image's original size.

:func:`segunc.pipeline_upload.evaluate_upload` runs :func:`segunc.pipeline.evaluate_slice` on the decoded slice, with an
optional typed box for the MedSAM family; without a mask it returns no metrics.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .budget import budget_problem, tiff_page_problem

SIZE = 256
MIN_SIDE = 32
MAX_SIDE = 4096
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF

__all__ = ["UploadError", "UploadedSlice", "decode_image", "decode_mask", "load_upload", "check_box",
           "evaluate_upload", "SIZE"]


class UploadError(ValueError):
    """An uploaded file that cannot be used; ``name`` is the uploaded file's name."""

    def __init__(self, name: str, problem: str):
        self.name = name
        self.problem = problem
        super().__init__(f"{name}: {problem}")


@dataclass
class UploadedSlice:
    """A decoded upload, shaped like :class:`segunc.data.Slice` for :func:`segunc.pipeline.evaluate_slice`:
    ``image`` 256 × 256 × 3 uint8, ``mask`` 256 × 256 bool (all False when no mask was given —
    :attr:`has_mask` tells), ``notes`` = what was done to the files."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    has_mask: bool
    notes: list[str] = field(default_factory=list)
    mask_name: str | None = None

    @property
    def slice_id(self) -> str:
        """``upload_<first 12 hex of sha256(image, mask)>``: also seeds the stochastic modes."""
        h = hashlib.sha256(self.image.tobytes())
        if self.has_mask:
            h.update(np.packbits(self.mask).tobytes())
        return f"upload_{h.hexdigest()[:12]}"

    @property
    def patient_id(self) -> str:
        return "upload"

    @property
    def has_tumour(self) -> bool:
        return bool(self.mask.any())


# ------------------------------------------------------------------------------------- decoding
def _kind(data: bytes) -> str | None:
    if data.startswith(PNG_MAGIC):
        return "PNG"
    if data[:4] in TIFF_MAGICS:
        return "TIFF"
    return None


def _describe_format(data: bytes) -> str:
    known = {b"\xff\xd8\xff": "a JPEG", b"GIF8": "a GIF", b"BM": "a BMP", b"%PDF": "a PDF", b"PK\x03\x04": "a ZIP archive",
             b"\x1f\x8b": "a gzip file", b"DICM": "DICOM"}
    for magic, what in known.items():
        if data.startswith(magic) or (magic == b"DICM" and data[128:132] == magic):
            return f"it is {what} file"
    if data[:5].lower() in (b"<!doc", b"<html"):
        return "it is an HTML page"
    return "its first bytes are not a PNG or TIFF signature"


def _read_array(data: bytes, name: str, what: str) -> tuple[np.ndarray, list[str]]:
    """Bytes → the raw array of the first image (any dtype, H W or H W C), with notes."""
    if not data:
        raise UploadError(name, f"the {what} file is empty (0 bytes)")
    kind = _kind(data)
    if kind is None:
        raise UploadError(name, f"not a PNG or TIFF {what} ({_describe_format(data)})")
    notes: list[str] = []
    if kind == "TIFF":
        import tifffile

        try:
            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                if len(tif.pages) == 0:
                    raise ValueError("no image page (file truncated?)")
                page = tif.pages[0]
                end = max((o + n for o, n in zip(page.dataoffsets, page.databytecounts)), default=0)
                if end > len(data):
                    raise ValueError(f"file truncated: image data needs {end} bytes, the upload has {len(data)}")
                h, w = _tiff_hw(page.shape)
                _check_side(name, h, w, what)
                problem = tiff_page_problem(page)  # from the header, before anything is decoded
                if problem:
                    raise UploadError(name, f"{what} {problem}")
                arr = np.asarray(page.asarray())
                if len(tif.pages) > 1:
                    notes.append(f"{name}: TIFF with {len(tif.pages)} pages; the first page was used")
        except UploadError:
            raise
        except Exception as exc:  # tifffile raises many types on corrupt files
            raise UploadError(name, f"unreadable TIFF {what} ({type(exc).__name__}: {exc})") from None
        return arr, notes
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            _check_side(name, h, w, what)
            bands = len(img.getbands())
            bits = 1 if img.mode == "1" else 16 if img.mode.startswith("I;16") else 32 if img.mode in ("I", "F") else 8
            problem = budget_problem((h, w, bands), bands, bits)  # from the header, before anything is decoded
            if problem:
                raise UploadError(name, f"{what} {problem}")
            if img.mode == "P":  # palette PNG → its colours
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                notes.append(f"{name}: palette PNG converted to {img.mode}")
            elif img.mode == "1":
                img = img.convert("L")
            img.load()
            arr = np.asarray(img)
    except UploadError:
        raise
    except Exception as exc:  # PIL: UnidentifiedImageError, OSError (truncated), SyntaxError, DecompressionBombError
        raise UploadError(name, f"unreadable PNG {what} ({type(exc).__name__}: {exc})") from None
    return arr, notes


def _tiff_hw(shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 3 and _channel_first(shape):
        return shape[1], shape[2]
    return (shape[0], shape[1]) if len(shape) >= 2 else (0, 0)


def _channel_first(shape: Sequence[int]) -> bool:
    """C H W (a few planes, then two image sides) rather than H W C."""
    return shape[0] <= 8 < shape[2]


def _check_side(name: str, h: int, w: int, what: str) -> None:
    if min(h, w) < MIN_SIDE:
        raise UploadError(name, f"the {what} is {h} × {w} pixels; at least {MIN_SIDE} × {MIN_SIDE} is needed "
                                f"(LGG slices are {SIZE} × {SIZE})")
    if max(h, w) > MAX_SIDE:
        raise UploadError(name, f"the {what} is {h} × {w} pixels; at most {MAX_SIDE} per side is accepted "
                                f"(it is resized to {SIZE} × {SIZE} anyway)")


def _channels_last(arr: np.ndarray, name: str, notes: list[str]) -> np.ndarray:
    if arr.ndim == 3 and _channel_first(arr.shape):
        notes.append(f"{name}: channel-first array {arr.shape} read as {arr.shape[1]} × {arr.shape[2]} × {arr.shape[0]}")
        arr = np.moveaxis(arr, 0, -1)
    return arr


def _drop_alpha(arr: np.ndarray, name: str, notes: list[str]) -> np.ndarray:
    """H W 2 (grey + alpha) or H W 4 (RGB + alpha) → without alpha, if the alpha is constant."""
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        alpha = arr[..., -1]
        if alpha.min() != alpha.max():
            raise UploadError(name, f"has {arr.shape[2]} channels and the last is not an opaque alpha channel "
                                    "(it varies); expected 3 channels (pre-contrast, FLAIR, post-contrast, as in LGG) "
                                    "or 1 (grayscale), saved without transparency")
        notes.append(f"{name}: opaque alpha channel dropped")
        arr = arr[..., :-1]
    return arr


def _to_uint8(arr: np.ndarray, name: str, notes: list[str]) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        notes.append(f"{name}: 1-bit image mapped to 0 / 255")
        return arr.astype(np.uint8) * 255
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise UploadError(name, f"pixel type {arr.dtype} is not supported (expected 8- or 16-bit integers)")
    dtype = arr.dtype
    a = arr.astype(np.float32 if arr.dtype.itemsize <= 2 and np.issubdtype(arr.dtype, np.integer) else np.float64)
    if not (np.isfinite(a.min()) and np.isfinite(a.max())):  # NaN propagates through min / max
        raise UploadError(name, f"the {dtype} image holds NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    bits = f"{dtype.itemsize * 8}-bit" if np.issubdtype(dtype, np.integer) else f"{dtype} (floating point)"
    if hi > lo:  # in place: one float copy of the image at most (float32 for <= 16-bit integers: exact)
        a -= lo
        a *= 255.0 / (hi - lo)
        np.rint(a, out=a)
    else:
        a[...] = 0
    notes.append(f"{name}: {bits} image rescaled to 8-bit: its range {lo:g}..{hi:g} mapped linearly to 0..255")
    return a.astype(np.uint8)


def _resize_plan(h: int, w: int) -> tuple[tuple[int, int, int, int], bool]:
    """Zero padding (top, bottom, left, right) to a centred square, and whether resizing is needed."""
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return (top, side - h - top, left, side - w - left), side != SIZE


def _square(arr: np.ndarray, pad: tuple[int, int, int, int]) -> np.ndarray:
    top, bottom, left, right = pad
    if not any(pad):
        return arr
    widths = [(top, bottom), (left, right)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, widths, mode="constant", constant_values=0)


def _resize_image(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(img), "RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR))


def _resize_mask(mask: np.ndarray) -> np.ndarray:
    from PIL import Image

    m = Image.fromarray(np.ascontiguousarray(mask.astype(np.uint8) * 255), "L")
    return np.asarray(m.resize((SIZE, SIZE), Image.Resampling.NEAREST)) > 0


def _size_note(name: str, h: int, w: int, pad: tuple[int, int, int, int]) -> str:
    how = f"padded with zeros to {max(h, w)} × {max(h, w)} (aspect ratio kept), then " if any(pad) else ""
    return f"{name}: {h} × {w} pixels, {how}resized to {SIZE} × {SIZE} (the LGG slice size)"


def decode_image(data: bytes, name: str = "image") -> tuple[np.ndarray, list[str], tuple[int, int]]:
    """Uploaded image bytes → (``256 256 3`` uint8, notes, original ``(H, W)``); :class:`UploadError` if unusable."""
    arr, notes = _read_array(data, name, "image")
    arr = _channels_last(arr, name, notes)
    arr = _drop_alpha(arr, name, notes)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = _to_uint8(arr, name, notes)
        notes.append(f"{name}: single-channel (grayscale) image replicated into all three channels "
                     "(pre-contrast, FLAIR, post-contrast)")
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 3:
        arr = _to_uint8(arr, name, notes)
    elif arr.ndim == 3:
        raise UploadError(name, f"image has {arr.shape[2]} channels ({'×'.join(map(str, arr.shape))}); expected 3 "
                                "(pre-contrast, FLAIR, post-contrast, as in LGG) or 1 (grayscale)")
    else:
        raise UploadError(name, f"image has shape {arr.shape}; expected H × W × 3 or H × W")
    h, w = arr.shape[:2]
    pad, resize = _resize_plan(h, w)
    if resize or any(pad):
        arr = _resize_image(_square(arr, pad)) if resize else _square(arr, pad)
        notes.append(_size_note(name, h, w, pad))
    return np.require(arr, np.uint8, ["C", "W"]), notes, (h, w)  # writable: torch.from_numpy warns otherwise


def decode_mask(data: bytes, name: str = "mask", shape: tuple[int, int] | None = None) -> tuple[np.ndarray, list[str]]:
    """Uploaded mask bytes → (``256 256`` bool, notes); ``shape`` = the image's original (H, W), checked."""
    arr, notes = _read_array(data, name, "mask")
    arr = _channels_last(arr, name, notes)
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        arr = _drop_alpha(arr, name, notes)
    if arr.ndim == 3 and arr.shape[2] == 3:
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            colours = np.unique(arr.reshape(-1, 3), axis=0)
            if len(colours) > 2:
                raise UploadError(name, f"mask has {len(colours)} colours; expected a binary mask (black and one colour, "
                                        "e.g. 0/255 or 0/1)")
            arr = arr.any(axis=2).astype(np.uint8)
        else:
            arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise UploadError(name, f"mask has shape {arr.shape}; expected H × W (one channel)")
    if shape is not None and arr.shape != tuple(shape):
        raise UploadError(name, f"mask is {arr.shape[0]} × {arr.shape[1]} pixels but the image is "
                                f"{shape[0]} × {shape[1]}; they must have the same size")
    values = np.unique(arr)
    if len(values) > 2 or (len(values) == 2 and values[0] != 0):
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", …" if len(values) > 6 else "")
        raise UploadError(name, f"mask is not binary: {len(values)} values ({shown}); expected 0 for background and "
                                "one value for tumour (0/255 or 0/1)")
    mask = arr > 0 if arr.dtype != bool else arr
    if len(values) == 1 and values[0] != 0:
        notes.append(f"{name}: the mask is one value everywhere ({values[0]:g}): the whole image is marked tumour")
    h, w = mask.shape
    pad, resize = _resize_plan(h, w)
    if resize or any(pad):
        mask = _resize_mask(_square(mask, pad)) if resize else _square(mask, pad)
        notes.append(_size_note(name, h, w, pad).replace("resized", "resized (nearest neighbour)"))
    if not mask.any():
        notes.append(f"{name}: the mask is empty (no tumour pixel)")
    return np.require(mask, bool, ["C", "W"]), notes


def load_upload(image: bytes, image_name: str = "image", mask: bytes | None = None,
                mask_name: str | None = None) -> UploadedSlice:
    """Decode an uploaded image and optional mask into an :class:`UploadedSlice` (see the module policies)."""
    img, notes, hw = decode_image(image, image_name)
    if mask is None:
        return UploadedSlice(image_name, img, np.zeros(img.shape[:2], bool), False, notes)
    mname = mask_name or "mask"
    m, mnotes = decode_mask(mask, mname, hw)
    return UploadedSlice(image_name, img, m, True, notes + mnotes, mname)


# ------------------------------------------------------------------------------------------ box
def check_box(box: Sequence[float] | None, shape: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray | None:
    """Validate an xyxy box (pixels of the 256 × 256 slice): ``0 ≤ x0 < x1 < W``, ``0 ≤ y0 < y1 < H``."""
    if box is None:
        return None
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.size != 4 or not np.isfinite(b).all():
        raise ValueError(f"a box is four numbers x0, y0, x1, y1; got {list(np.asarray(box).reshape(-1))}")
    x0, y0, x1, y1 = b
    h, w = shape
    if not (0 <= x0 < x1 <= w - 1 and 0 <= y0 < y1 <= h - 1):
        raise ValueError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) must satisfy 0 ≤ x0 < x1 ≤ {w - 1} and "
                         f"0 ≤ y0 < y1 ≤ {h - 1} (pixels of the {w} × {h} slice)")
    return b.astype(np.float32)

