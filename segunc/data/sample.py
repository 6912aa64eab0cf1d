"""A small curated LGG sample shipped with the project, and the script that builds it.

The sample lives at ``data/sample/kaggle_3m`` in the original Kaggle layout (so the
normal loader reads it) and holds a few train and val patients (project split rule,
:func:`segunc.data.lgg.split_of`), each with tumour and tumour-free slices spread over
the volume. Files are lossless deflate TIFFs whose pixels equal the source's.

Data: Buda et al., Comput Biol Med 2019; Mazurowski et al., J Neurooncol 2017;
licence CC BY-NC-SA 4.0 (see ``data/sample/README.md``).

Re-create it with ``python -m segunc.data.sample build --from <kaggle_3m folder>``.
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

import numpy as np

from .lgg import SliceRef, discover, load_image, load_mask, resolve_root

#: The curated patients: three train, three val (checked against the split rule on build).
SAMPLE_PATIENTS = {
    "train": ("TCGA_CS_4941_19960909", "TCGA_HT_7877_19980917", "TCGA_HT_A616_19991226"),
    "val": ("TCGA_FG_7634_20000128", "TCGA_HT_7692_19960724", "TCGA_HT_8106_19970727"),
}
#: Slices kept per patient: this many with tumour and this many without, evenly spread.
TUMOUR_PER_PATIENT = 4
FREE_PER_PATIENT = 3
#: Size budget of the whole sample folder (bytes).
MAX_BYTES = 5 * 1024 * 1024
#: How the app labels data coming from the sample.
SAMPLE_LABEL = "LGG sample (6 patients, 42 slices; shipped with segunc)"

_SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "sample" / "kaggle_3m"


def sample_data_dir() -> Path | None:
    """The shipped sample's ``kaggle_3m`` folder, or ``None`` when it is not there
    (e.g. an installed wheel without the repository's ``data/``)."""
    d = _SAMPLE_DIR
    return d if d.is_dir() and any(d.iterdir()) else None


def is_sample_dir(path: Path | str | None) -> bool:
    """Whether ``path`` (the folder or one containing it) is the shipped sample."""
    if path is None or _SAMPLE_DIR is None:
        return False
    try:
        p = Path(path).expanduser().resolve()
    except OSError:
        return False
    return p in (_SAMPLE_DIR, _SAMPLE_DIR.parent)


def _spread(items: list, k: int) -> list:
    """``k`` items evenly spread over ``items``, at the centres of ``k`` equal parts (so
    not the near-empty first and last slices); all of them when there are fewer."""
    if len(items) <= k:
        return list(items)
    idx = ((np.arange(k) + 0.5) * len(items) / k).astype(int)
    return [items[i] for i in idx.tolist()]


def pick(refs: list[SliceRef]) -> list[SliceRef]:
    """The sample's slices from a full listing: per curated patient, spread tumour and
    tumour-free slices. Raises ``ValueError`` when a patient is missing or has the wrong split."""
    by_folder: dict[str, list[SliceRef]] = {}
    for r in refs:
        by_folder.setdefault(r.patient_folder, []).append(r)
    chosen: list[SliceRef] = []
    for split, folders in SAMPLE_PATIENTS.items():
        for folder in folders:
            rs = sorted(by_folder.get(folder, []))
            if not rs:
                raise ValueError(f"patient folder {folder} is not in the source data")
            if rs[0].split != split:
                raise ValueError(f"{folder} is in split {rs[0].split}, expected {split}")
            tumour = [r for r in rs if load_mask(r.mask_path).any()]
            free = [r for r in rs if r not in tumour]
            chosen += _spread(tumour, TUMOUR_PER_PATIENT) + _spread(free, FREE_PER_PATIENT)
    return sorted(chosen)


def _copy_tiff(src: Path, dst: Path, kind: str) -> None:
    """Copy a TIFF; an uncompressed one is re-encoded as deflate (pixels unchanged)."""
    import tifffile

    with tifffile.TiffFile(src) as tif:
        compressed = tif.pages[0].compression != 1
    if compressed:
        shutil.copyfile(src, dst)
        return
    arr = load_image(src) if kind == "image" else tifffile.imread(src)
    tifffile.imwrite(dst, arr, compression="zlib", photometric="rgb" if arr.ndim == 3 else "minisblack")


def build(source: Path | str, dest: Path | str | None = None) -> dict:
    """Write the sample from a ``kaggle_3m`` folder into ``dest`` (default: the repo's
    ``data/sample/kaggle_3m``), replacing the slice folders there. Returns a summary."""
    src = resolve_root(source)
    dest = Path(dest) if dest is not None else _SAMPLE_DIR
    chosen = pick(discover(src))
    if dest.exists():
        for p in dest.iterdir():
            if p.is_dir() and p.name.startswith("TCGA_"):
                shutil.rmtree(p)
    dest.mkdir(parents=True, exist_ok=True)
    for r in chosen:
        out = dest / r.patient_folder
        out.mkdir(exist_ok=True)
        _copy_tiff(r.image_path, out / r.image_path.name, "image")
        _copy_tiff(r.mask_path, out / r.mask_path.name, "mask")
    csv_src = src / "data.csv"
    if csv_src.exists():
        pids = {r.patient_id for r in chosen}
        with open(csv_src, newline="") as f:
            rows = list(csv.reader(f))
        with open(dest / "data.csv", "w", newline="") as f:
            csv.writer(f).writerows([rows[0]] + [row for row in rows[1:] if row and row[0] in pids])
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    if size > MAX_BYTES:
        raise ValueError(f"{dest}: sample is {size} bytes, over the {MAX_BYTES} byte budget")
    return {"slices": len(chosen), "patients": len({r.patient_folder for r in chosen}), "bytes": size,
            "dest": str(dest)}


def verify(source: Path | str, sample: Path | str | None = None) -> None:
    """Raise ``AssertionError`` unless every sample slice's pixels equal the source's."""
    sample = Path(sample) if sample is not None else _SAMPLE_DIR
    src = resolve_root(source)
    for r in discover(sample):
        s_img = src / r.patient_folder / r.image_path.name
        s_mask = src / r.patient_folder / r.mask_path.name
        if not np.array_equal(load_image(r.image_path), load_image(s_img)):
            raise AssertionError(f"{r.image_path}: pixels differ from {s_img}")
        if not np.array_equal(load_mask(r.mask_path), load_mask(s_mask)):
            raise AssertionError(f"{r.mask_path}: mask differs from {s_mask}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m segunc.data.sample", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="(re)create the sample from a kaggle_3m folder")
    b.add_argument("--from", dest="source", required=True, help="the LGG kaggle_3m folder (or one containing it)")
    b.add_argument("--to", dest="dest", default=None, help="output kaggle_3m folder (default: data/sample/kaggle_3m)")
    v = sub.add_parser("verify", help="check the sample's pixels against a source folder")
    v.add_argument("--from", dest="source", required=True)
    args = p.parse_args(argv)
    try:
        if args.cmd == "build":
            s = build(args.source, args.dest)
            print(f"wrote {s['slices']} slices of {s['patients']} patients, {s['bytes'] / 1e6:.2f} MB, to {s['dest']}")
        else:
            verify(args.source)
            print("sample pixels equal the source")
    except (ValueError, AssertionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
