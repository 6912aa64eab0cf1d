"""LGG discovery, split rule, loading and bad-input errors — on the real shared data."""
from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import tifffile

from segunc.data import (DataError, SliceError, discover, load_slice, patient_id, select, split_of, tumour_only)

pytestmark = pytest.mark.unit


def test_split_rule_matches_shared_readme(lgg_refs):
    val = select(lgg_refs, "val")
    assert len({r.patient_id for r in val}) == 17
    assert len(val) == 584
    assert len(tumour_only(val)) == 229
    assert not select(lgg_refs, "test")  # the test split is withheld on purpose


def test_split_rule_formula_and_patient_id():
    assert patient_id("TCGA_CS_4941_19960909") == "TCGA_CS_4941"
    for pid in ("TCGA_CS_4941", "TCGA_DU_5849", "TCGA_HT_7608"):
        h = int(hashlib.sha256(pid.encode()).hexdigest(), 16) % 100
        assert split_of(pid) == ("train" if h < 70 else "val" if h < 85 else "test")


def test_split_independent_of_file_order(lgg_refs):
    shuffled = list(reversed(lgg_refs))
    assert sorted(select(shuffled, "val")) == select(lgg_refs, "val")


def test_slices_sort_by_integer_number(lgg_refs):
    one = [r for r in lgg_refs if r.patient_folder == lgg_refs[0].patient_folder]
    assert [r.index for r in one] == sorted(r.index for r in one)
    assert one[0].index == 1 and one[9].index == 10  # 10 after 9, not after 1


def test_loads_plain_and_deflate_tiffs(lgg_refs):
    plain = next(r for r in lgg_refs if r.patient_folder == "TCGA_CS_5396_20010302")
    compressed = next(r for r in lgg_refs if r.patient_folder != "TCGA_CS_5396_20010302")
    for ref in (plain, compressed):
        s = load_slice(ref)
        assert s.image.shape == (256, 256, 3) and s.image.dtype == np.uint8
        assert s.mask.shape == (256, 256) and s.mask.dtype == bool
    with tifffile.TiffFile(plain.image_path) as t:
        assert t.pages[0].compression == 1  # uncompressed
    with tifffile.TiffFile(compressed.image_path) as t:
        assert t.pages[0].compression != 1


def _copy_patient(lgg_refs, tmp_path, n=3):
    ref = tumour_only(select(lgg_refs, "val"))[0]
    dst = tmp_path / ref.patient_folder
    dst.mkdir()
    refs = [r for r in lgg_refs if r.patient_folder == ref.patient_folder][:n]
    for r in refs:
        shutil.copy(r.image_path, dst / r.image_path.name)
        shutil.copy(r.mask_path, dst / r.mask_path.name)
    return dst, refs


BAD_CASES = {
    "corrupt_tiff": (lambda img, mask: img.write_bytes(b"this is not a tiff at all" * 10), "image", "unreadable TIFF"),
    "truncated_tiff": (lambda img, mask: img.write_bytes(img.read_bytes()[:1000]), "image", "unreadable TIFF"),
    "size_mismatch": (lambda img, mask: tifffile.imwrite(mask, np.zeros((128, 128), np.uint8)), "mask", "does not match"),
    "missing_mask": (lambda img, mask: mask.unlink(), "mask", "mask file is missing"),
    "grayscale": (lambda img, mask: tifffile.imwrite(img, np.zeros((256, 256), np.uint8)), "image", "single-channel"),
    "uint16": (lambda img, mask: tifffile.imwrite(img, np.zeros((256, 256, 3), np.uint16)), "image", "dtype uint16"),
    "four_channels": (lambda img, mask: tifffile.imwrite(img, np.zeros((256, 256, 4), np.uint8)), "image", "expected H x W x 3"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_slice_errors_name_the_file(case, lgg_refs, tmp_path):
    folder, refs = _copy_patient(lgg_refs, tmp_path)
    damage, which, message = BAD_CASES[case]
    found = discover(tmp_path)
    victim = found[1]
    damage(victim.image_path, victim.mask_path)
    with pytest.raises(SliceError) as err:
        load_slice(discover(tmp_path)[1])
    expected_file = victim.image_path if which == "image" else victim.mask_path
    assert err.value.path == expected_file
    assert str(expected_file) in str(err.value) and message in str(err.value)
    # the neighbours still load
    load_slice(found[0]), load_slice(found[2])


def test_empty_and_non_lgg_folders(tmp_path):
    with pytest.raises(DataError, match="empty"):
        discover(tmp_path)
    (tmp_path / "holiday_photos").mkdir()
    (tmp_path / "holiday_photos" / "beach.tif").write_bytes(b"x")
    with pytest.raises(DataError, match="not an LGG"):
        discover(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        discover(tmp_path / "nope")


def test_accepts_parent_of_kaggle_3m(shared):
    assert len(discover(shared / "lgg")) == 2003
