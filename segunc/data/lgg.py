"""LGG brain-MRI dataset (Buda et al. 2019) in the original Kaggle layout.

``<root>/<PATIENT_FOLDER>/<PATIENT_FOLDER>_<n>.tif`` holds a 256x256x3 uint8 slice
(channels: pre-contrast, FLAIR, post-contrast) and ``..._<n>_mask.tif`` its 0/255 mask.

Discovery only lists files; :func:`load_slice` reads and validates one pair and raises
:class:`SliceError` naming the file, so a sweep can record a bad slice and go on.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

CHANNELS = ("pre-contrast", "FLAIR", "post-contrast")
SPLITS = ("train", "val", "test")

_SLICE_RE = re.compile(r"^(?P<folder>.+)_(?P<n>\d+)\.tiff?$", re.IGNORECASE)


class DataError(ValueError):
    """A data folder that cannot be used (empty, not LGG-shaped, missing)."""


class SliceError(ValueError):
    """One slice that cannot be used; ``path`` names the offending file."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True, order=True)
class SliceRef:
    """Where one slice lives. Sorts by patient folder, then integer slice number."""

    patient_folder: str
    index: int
    image_path: Path
    mask_path: Path

    @property
    def patient_id(self) -> str:
        return patient_id(self.patient_folder)

    @property
    def slice_id(self) -> str:
        return f"{self.patient_folder}_{self.index}"

    @property
    def split(self) -> str:
        return split_of(self.patient_id)


@dataclass
class Slice:
    """A loaded slice: ``image`` (H, W, 3) uint8 and boolean ``mask`` (H, W)."""

    ref: SliceRef
    image: np.ndarray
    mask: np.ndarray

    @property
    def slice_id(self) -> str:
        return self.ref.slice_id

    @property
    def patient_id(self) -> str:
        return self.ref.patient_id

    @property
    def has_tumour(self) -> bool:
        return bool(self.mask.any())


def patient_id(folder_name: str) -> str:
    """Patient id = first three ``_`` tokens of the folder name (``TCGA_CS_4941``)."""
    parts = folder_name.split("_")
    if len(parts) < 3:
        raise DataError(f"{folder_name!r} is not an LGG patient folder name (expected TCGA_XX_NNNN_DATE)")
    return "_".join(parts[:3])


@lru_cache(maxsize=4096)
def split_of(pid: str) -> str:
    """Patient-level split: ``h = int(sha256(pid), 16) % 100``; train < 70, val < 85, else test."""
    h = int(hashlib.sha256(pid.encode()).hexdigest(), 16) % 100
    return "train" if h < 70 else "val" if h < 85 else "test"


def resolve_root(root: Path | str) -> Path:
    """Accept the ``kaggle_3m`` folder itself or a folder that contains it."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: data folder does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    for candidate in (root / "kaggle_3m", root / "lgg" / "kaggle_3m", root / "lgg-mri-segmentation" / "kaggle_3m"):
        if candidate.is_dir():
            return candidate
    return root


def discover(root: Path | str) -> list[SliceRef]:
    """List every image/mask pair under ``root``, sorted by patient then slice number.

    An image whose mask file is missing is still listed (``load_slice`` reports it), so a
    sweep records the failure instead of silently shrinking.
    """
    root = resolve_root(root)
    refs: list[SliceRef] = []
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    for folder in folders:
        for f in folder.iterdir():
            name = f.name
            if name.lower().endswith(("_mask.tif", "_mask.tiff")):
                continue
            m = _SLICE_RE.match(name)
            if not m or m.group("folder") != folder.name:
                continue
            mask = f.with_name(f"{f.stem}_mask{f.suffix}")
            refs.append(SliceRef(folder.name, int(m.group("n")), f, mask))
    if not refs:
        if not any(root.iterdir()):
            raise DataError(f"{root}: the data folder is empty (expected <PATIENT>/<PATIENT>_<n>.tif files)")
        raise DataError(
            f"{root}: not an LGG (Kaggle kaggle_3m) folder: found no <PATIENT>/<PATIENT>_<n>.tif slices"
        )
    refs.sort()
    return refs


def select(
    refs: Iterable[SliceRef],
    split: str = "all",
    patients: Sequence[str] | None = None,
) -> list[SliceRef]:
    """Filter slice references by split (``train|val|test|all``) and patient ids."""
    if split not in (*SPLITS, "all"):
        raise ValueError(f"unknown split {split!r}; expected one of {(*SPLITS, 'all')}")
    out = [r for r in refs if split == "all" or r.split == split]
    if patients:
        wanted = set(patients)
        out = [r for r in out if r.patient_id in wanted or r.patient_folder in wanted]
    return out


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    from .budget import tiff_page_problem

    if not path.exists():
        raise SliceError(path, "file is missing")
    try:
        size = path.stat().st_size
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) == 0:
                raise ValueError("no image page (file truncated?)")
            page = tif.pages[0]
            end = max((o + n for o, n in zip(page.dataoffsets, page.databytecounts)), default=0)
            if end > size:
                raise ValueError(f"file truncated: image data needs {end} bytes, file has {size}")
            problem = tiff_page_problem(page)  # from the header, before anything is decoded
            if problem:
                raise SliceError(path, f"TIFF {problem}")
            return np.asarray(page.asarray())
    except SliceError:
        raise
    except Exception as exc:  # tifffile raises several types for corrupt/truncated files
        raise SliceError(path, f"unreadable TIFF ({type(exc).__name__}: {exc})") from None


def load_image(path: Path | str) -> np.ndarray:
    """Read and validate an LGG image: 256x256x3 uint8 (or another H, W with 3 channels)."""
    path = Path(path)
    img = _read_tiff(path)
    if img.dtype != np.uint8:
        raise SliceError(path, f"image has dtype {img.dtype}, expected uint8")
    if img.ndim == 2:
        raise SliceError(path, f"image is single-channel {img.shape}, expected H x W x 3 (pre-contrast, FLAIR, post-contrast)")
    if img.ndim != 3 or img.shape[2] != 3:
        raise SliceError(path, f"image has shape {img.shape}, expected H x W x 3")
    return img


def load_mask(path: Path | str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read and validate a 0/255 mask; returns a boolean (H, W) array."""
    path = Path(path)
    mask = _read_tiff(path)
    if mask.ndim == 3 and mask.shape[2] in (1, 3, 4):
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise SliceError(path, f"mask has shape {mask.shape}, expected H x W")
    if shape is not None and mask.shape != tuple(shape):
        raise SliceError(path, f"mask shape {mask.shape} does not match image shape {tuple(shape)}")
    return mask > 0


def load_slice(ref: SliceRef) -> Slice:
    """Load one image/mask pair, raising :class:`SliceError` that names the bad file."""
    image = load_image(ref.image_path)
    if not ref.mask_path.exists():
        raise SliceError(ref.mask_path, "mask file is missing for this slice")
    mask = load_mask(ref.mask_path, image.shape[:2])
    return Slice(ref, image, mask)


def image_shape(path: Path | str) -> tuple[int, int]:
    """(H, W) of a TIFF from its header (nothing decoded); :class:`SliceError` if unreadable."""
    import tifffile

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            return tuple(int(x) for x in tif.pages[0].shape[:2])
    except Exception as exc:
        raise SliceError(path, f"unreadable TIFF ({type(exc).__name__}: {exc})") from None


def has_tumour(ref: SliceRef) -> bool:
    """Whether the slice's mask is non-empty (reads the mask and the image's header). Unreadable,
    or of another size than its image → True, so that the failure surfaces when the slice is loaded
    rather than being filtered away as tumour-free."""
    try:
        return bool(load_mask(ref.mask_path, image_shape(ref.image_path)).any())
    except SliceError:
        return True


def tumour_only(refs: Iterable[SliceRef]) -> list[SliceRef]:
    """Keep slices with a non-empty mask (the paper evaluates only those)."""
    return [r for r in refs if has_tumour(r)]
