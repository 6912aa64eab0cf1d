"""Own images (segunc/data/upload.py and pages/upload.py) and the Home page's set-up help and downloads.

Library: a real LGG slice from ../shared encoded in memory as PNG and TIFF decodes back to the same
arrays; grayscale is replicated, 16-bit rescaled, other sizes padded and resized, and unusable bytes
give an :class:`UploadError` naming the upload. The run path is :func:`evaluate_upload` (the real
U-Net, mode normal). App: Streamlit's AppTest uploads files (``file_uploader.set_value``), runs the
U-Net and checks the viewer, and that nothing reaches the results store. Home: an empty machine
(no data, no weights) gets the exact commands and licence-gated download buttons; a download from a
local HTTP server installs the file; an unreachable server gives a message, not a traceback.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from segunc.data.upload import SIZE, UploadError, check_box, decode_image, decode_mask, load_upload
from segunc.pipeline_upload import evaluate_upload
from tests.conftest import VAL_TUMOUR
from tests.conftest_app import APP, app_env, app_store  # noqa: F401

pytestmark = pytest.mark.app

TIMEOUT = 300


# ------------------------------------------------------------------------------------ helpers
def png(arr: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr).save(b, "PNG")
    return b.getvalue()


def tiff(arr: np.ndarray, **kw) -> bytes:
    b = io.BytesIO()
    tifffile.imwrite(b, arr, **kw)
    return b.getvalue()


@pytest.fixture(scope="module")
def real(lgg_root):
    """(image H W 3 uint8, mask H W bool) of a real val tumour slice."""
    from segunc.data import load_image, load_mask

    folder = VAL_TUMOUR[0].rsplit("_", 1)[0]
    image = load_image(lgg_root / folder / f"{VAL_TUMOUR[0]}.tif")
    mask = load_mask(lgg_root / folder / f"{VAL_TUMOUR[0]}_mask.tif", image.shape[:2])
    assert image.shape == (SIZE, SIZE, 3) and mask.any()
    return image, mask


# ------------------------------------------------------------------------------------ decoding
def test_png_and_tiff_of_a_real_slice_decode_unchanged(real):
    image, mask = real
    for data, mdata, name in ((png(image), png(mask.astype(np.uint8) * 255), "slice.png"),
                              (tiff(image, photometric="rgb"), tiff(mask.astype(np.uint8)), "slice.tif")):
        up = load_upload(data, name, mdata, "mask")
        assert up.image.dtype == np.uint8 and np.array_equal(up.image, image)
        assert up.has_mask and np.array_equal(up.mask, mask)
        assert up.notes == []  # nothing had to be changed
    # the original LGG TIFF bytes themselves, and a 0/1 mask
    up = load_upload(tiff(image), "x.tif", png(mask.astype(np.uint8)), "m01.png")
    assert np.array_equal(up.image, image) and np.array_equal(up.mask, mask)
    no_mask = load_upload(png(image), "slice.png")
    assert not no_mask.has_mask and not no_mask.mask.any() and no_mask.slice_id != up.slice_id


def test_grayscale_is_replicated_into_three_channels(real):
    image, _ = real
    flair = image[..., 1]
    for data in (png(flair), tiff(flair), tiff(flair[..., None], photometric="minisblack")):
        img, notes, hw = decode_image(data, "gray.png")
        assert hw == (SIZE, SIZE) and img.shape == (SIZE, SIZE, 3)
        assert all(np.array_equal(img[..., c], flair) for c in range(3))
        assert any("replicated" in n and "gray.png" in n for n in notes)


def test_16_bit_is_rescaled_to_8_bit(real):
    image, _ = real
    wide = image.astype(np.uint16) * 257 + 1000
    lo, hi = float(wide.min()), float(wide.max())
    expect = np.round((wide - lo) / (hi - lo) * 255).astype(np.uint8)
    img, notes, _ = decode_image(tiff(wide, photometric="rgb"), "deep.tif")
    assert np.array_equal(img, expect)
    assert any("16-bit" in n and "0..255" in n for n in notes)
    gray16 = wide[..., 1]
    img, notes, _ = decode_image(png(gray16), "deep.png")  # a 16-bit grayscale PNG (PIL mode I;16)
    assert img.dtype == np.uint8 and img[..., 0].max() == 255 and img[..., 0].min() == 0
    assert np.array_equal(img[..., 0], img[..., 2])
    assert any("16-bit" in n for n in notes) and any("replicated" in n for n in notes)
    mask16 = (real[1].astype(np.uint16) * 65535)
    m, _ = decode_mask(tiff(mask16), "mask16.tif", (SIZE, SIZE))
    assert np.array_equal(m, real[1])


@pytest.mark.parametrize("data, problem", [
    (b"", "empty"),
    (b"this is not an image at all" * 10, "not a PNG or TIFF"),
    (b"\xff\xd8\xff\xe0" + bytes(200), "JPEG"),
    (b"<!DOCTYPE html><html>error page</html>", "HTML"),
    ("png-truncated", "unreadable PNG"),
    ("tiff-truncated", "truncated"),
    ("tiff-corrupt", "unreadable TIFF"),
])
def test_garbage_bytes_name_the_file_and_the_problem(real, data, problem):
    good_png, good_tiff = png(real[0]), tiff(real[0])
    data = {"png-truncated": good_png[: len(good_png) // 3], "tiff-truncated": good_tiff[:5000],
            "tiff-corrupt": good_tiff[:8] + bytes(range(256)) * 4}.get(data, data)
    with pytest.raises(UploadError) as err:
        load_upload(data, "my scan.png")
    assert err.value.name == "my scan.png" and str(err.value).startswith("my scan.png: ")
    assert problem in str(err.value)


def test_other_sizes_are_padded_and_resized_or_refused(real):
    image, mask = real
    wide_img = np.asarray(Image.fromarray(image).resize((384, 256), Image.Resampling.BILINEAR))
    wide_mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((384, 256), Image.Resampling.NEAREST))
    up = load_upload(png(wide_img), "wide.png", png(wide_mask), "wide_mask.png")
    assert up.image.shape == (SIZE, SIZE, 3) and up.mask.shape == (SIZE, SIZE)
    assert any("256 × 384" in n and "padded" in n and "resized" in n for n in up.notes)
    assert not up.image[:32].any() and not up.image[-32:].any()  # 64 rows of black padding → 42 rows at 256
    # the mask moved with the image: the tumour is where the resized image has it
    ys, xs = np.nonzero(up.mask)
    ys0, xs0 = np.nonzero(mask)
    assert abs(xs.mean() - xs0.mean()) < 3 and abs(ys.mean() - (ys0.mean() * 256 / 384 + 256 * (64 / 384))) < 3
    big = np.asarray(Image.fromarray(image).resize((512, 512)))
    img, notes, hw = decode_image(png(big), "big.png")
    assert hw == (512, 512) and img.shape == (SIZE, SIZE, 3) and not any("padded" in n for n in notes)
    with pytest.raises(UploadError, match="at least 32"):
        decode_image(png(image[:16, :16]), "tiny.png")
    with pytest.raises(UploadError, match="same size"):
        load_upload(png(image), "slice.png", png(wide_mask), "wide_mask.png")


def test_channel_counts(real):
    image, mask = real
    rgba = np.concatenate([image, np.full((*image.shape[:2], 1), 255, np.uint8)], axis=2)
    img, notes, _ = decode_image(png(rgba), "rgba.png")
    assert np.array_equal(img, image) and any("alpha" in n for n in notes)
    rgba[..., 3] = 7
    rgba[0, 0, 3] = 0
    with pytest.raises(UploadError, match="rgba.png: has 4 channels"):
        decode_image(png(rgba), "rgba.png")
    five = np.concatenate([image, image[..., :2]], axis=2)
    for data in (tiff(five, photometric="minisblack", planarconfig="contig"),
                 tiff(np.moveaxis(five, -1, 0), photometric="minisblack", planarconfig="separate")):
        with pytest.raises(UploadError, match="five.tif: image has 5 channels"):
            decode_image(data, "five.tif")
    planar = tiff(np.moveaxis(image, -1, 0), photometric="rgb", planarconfig="separate")
    assert np.array_equal(decode_image(planar, "planar.tif")[0], image)
    pages = tiff(np.stack([image[..., 1], image[..., 0]]), photometric="minisblack")  # two pages, not channels
    img, notes, _ = decode_image(pages, "stack.tif")
    assert np.array_equal(img[..., 0], image[..., 1]) and any("2 pages; the first page was used" in n for n in notes)


def test_masks_must_be_binary(real):
    image, mask = real
    labels = mask.astype(np.uint8)
    labels[:10, :10] = 2
    with pytest.raises(UploadError, match="labels.png: mask is not binary: 3 values"):
        load_upload(png(image), "slice.png", png(labels), "labels.png")
    colour = np.zeros((*mask.shape, 3), np.uint8)
    colour[mask] = (255, 0, 0)
    m, _ = decode_mask(png(colour), "red.png")
    assert np.array_equal(m, mask)
    empty, notes = decode_mask(png(np.zeros(mask.shape, np.uint8)), "empty.png")
    assert not empty.any() and any("empty" in n for n in notes)


def test_box_check():
    assert check_box(None) is None
    np.testing.assert_array_equal(check_box([10, 20, 30, 40]), [10, 20, 30, 40])
    for bad in ([10, 20, 5, 40], [0, 0, 256, 10], [1, 2, 3], [-1, 0, 5, 5], [0, 0, float("nan"), 5]):
        with pytest.raises(ValueError):
            check_box(bad)


# ------------------------------------------------------------------------------------ run path
def test_evaluate_upload_equals_the_pipeline_on_the_same_slice(real, unet, lgg_root):
    from segunc.config import PipelineConfig
    from segunc.data import discover, load_slice
    from segunc.pipeline import evaluate_slice

    image, mask = real
    config = PipelineConfig(samples=2)
    ref = next(r for r in discover(lgg_root) if r.slice_id == VAL_TUMOUR[0])
    expect = evaluate_slice(unet, load_slice(ref), ["normal"], config)["normal"]
    seen = []
    got = evaluate_upload(unet, load_upload(png(image), "s.png", png(mask.astype(np.uint8) * 255), "m.png"),
                          ["normal"], config, on_mode=seen.append)["normal"]
    assert seen == ["normal"]
    assert got.metrics == pytest.approx(expect.metrics) and got.metrics["dice"] > 0.5
    np.testing.assert_array_equal(got.maps["mask"], expect.maps["mask"])
    bare = evaluate_upload(unet, load_upload(tiff(image), "s.tif"), ["normal"], config)["normal"]
    assert bare.metrics == {} and bare.tumour_px == 0  # no mask, nothing to score against
    np.testing.assert_array_equal(bare.maps["mask"], expect.maps["mask"])
    with pytest.raises(ValueError, match="at least one mode"):
        evaluate_upload(unet, load_upload(png(image), "s.png"), [], config)


class _BoxModel:
    """Stands in for a box-prompted backend where only its contract matters."""
    name, needs_box, device = "boxy", True, torch.device("cpu")

    def prepare_slice(self, slice_):
        from segunc.backends import box_from_mask

        return {"box": box_from_mask(slice_.mask)}


def test_a_typed_box_replaces_the_mask_box(real):
    from segunc.modes import SliceInput

    image, mask = real
    up = load_upload(png(image), "s.png", png(mask.astype(np.uint8) * 255), "m.png")
    from_mask = SliceInput.from_slice(up, _BoxModel())
    ys, xs = np.nonzero(mask)
    assert from_mask.box.tolist() == [[xs.min(), ys.min(), xs.max(), ys.max()]]
    typed = SliceInput.from_slice(up, _BoxModel(), box=np.array([5, 6, 70, 80], np.float32))
    assert typed.box.tolist() == [[5, 6, 70, 80]]
    with pytest.raises(ValueError, match="needs a box prompt"):
        evaluate_upload(_BoxModel(), load_upload(png(image), "s.png"), ["normal"], None)


# ------------------------------------------------------------------------------------ the page
def open_upload() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/upload.py")
    return at.run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_upload_page_renders_without_an_upload(app_env):
    at = open_upload()
    assert_clean(at)
    assert at.title[0].value == "Your image"
    assert any("Upload a slice" in i.value for i in at.info)
    assert len(at.file_uploader) == 2


def _store_state(app_store):
    from segunc.store import ResultStore

    db = app_store / "store.sqlite"
    return len(ResultStore(app_store).metrics_frame()), db.stat().st_mtime_ns


def test_upload_page_runs_unet_with_a_mask_and_stores_nothing(app_env, app_store, real, unet):
    from segunc.config import PipelineConfig

    image, mask = real
    before = _store_state(app_store)
    at = open_upload()
    at.file_uploader(key="up_image").set_value(("my slice.png", png(image), "image/png"))
    at.file_uploader(key="up_mask").set_value(("my mask.tif", tiff(mask.astype(np.uint8) * 255), "image/tiff"))
    at.run()
    assert_clean(at)
    assert at.selectbox(key="up_backend").value == "unet"
    at.multiselect(key="up_modes").set_value(["normal"])
    at.button(key="up_run").click().run()
    assert_clean(at)
    assert len(at.get("image")) == 2  # image + mask, the uncertainty over the anatomy (with both contours)
    at.radio(key="up_show").set_value("both").run()
    assert_clean(at)
    assert len(at.get("image")) == 3  # … and the prediction against the mask (TP / FP / FN)
    table = at.dataframe[0].value
    expect = evaluate_upload(unet, load_upload(png(image), "x", png(mask.astype(np.uint8)), "m"), ["normal"],
                             PipelineConfig(samples=10))["normal"].metrics
    assert list(table["mode"]) == ["normal"] and table["Dice"].iloc[0] == pytest.approx(expect["dice"])
    text = " ".join(m.value for m in at.markdown)
    assert "my slice.png" in text and "my mask.tif" in text and "Dice" in text
    assert _store_state(app_store) == before  # nothing written to the shared store
    at.selectbox(key="up_map").set_value("variance").run()  # the viewer's controls work on the kept result
    assert_clean(at)
    assert len(at.get("image")) == 3
    assert any("n/a" in m.value for m in at.markdown)  # Normal has no variance map: the reason, not a blank map


def test_upload_page_grayscale_without_a_mask(app_env, real):
    at = open_upload()
    at.file_uploader(key="up_image").set_value(("flair.tif", tiff(real[0][..., 1]), "image/tiff"))
    at.run()
    assert_clean(at)
    assert any("replicated" in i.value for i in at.info)  # the policy used is said
    at.button(key="up_run").click().run()
    assert_clean(at)
    assert len(at.get("image")) == 2 and len(at.dataframe) == 0  # slice, uncertainty panel; no mask: no metrics
    assert any("No mask" in m.value for m in at.markdown)


def test_upload_page_bad_file_is_a_clear_error(app_env):
    at = open_upload()
    at.file_uploader(key="up_image").set_value(("scan.png", b"\x89PNG\r\n\x1a\n" + bytes(100), "image/png"))
    at.run()
    assert not at.exception
    assert len(at.error) == 1 and "scan.png" in at.error[0].value and "unreadable PNG" in at.error[0].value
    assert len(at.button) == 0 or "up_run" not in [b.key for b in at.button]


def test_upload_page_box_defaults_to_the_mask_box_for_litemedsam(app_env, real):
    image, mask = real
    at = open_upload()
    at.file_uploader(key="up_image").set_value(("s.png", png(image), "image/png"))
    at.file_uploader(key="up_mask").set_value(("m.png", png(mask.astype(np.uint8) * 255), "image/png"))
    at.run()
    at.selectbox(key="up_backend").set_value("litemedsam").run()
    assert_clean(at)
    ys, xs = np.nonzero(mask)
    box = [n.value for n in at.number_input if n.key and n.key.startswith("up_box_")]
    assert box == [xs.min(), ys.min(), xs.max(), ys.max()]
    assert "Box jitter" in at.multiselect(key="up_modes").options  # options show their labels


# ------------------------------------------------------------------------------------ Home
@pytest.fixture
def empty_machine(tmp_path, monkeypatch):
    env = {"SEGUNC_DATA": tmp_path / "data", "SEGUNC_WEIGHTS": tmp_path / "weights", "SEGUNC_CACHE": tmp_path / "cache"}
    for k, v in env.items():
        v.mkdir()
        monkeypatch.setenv(k, str(v))
    return env


def open_home() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    return at.run()


def diagram(at: AppTest) -> str:
    return at.get("graphviz_chart")[0].proto.spec


def test_home_on_an_empty_machine_says_what_to_run(empty_machine):
    from segunc.config import PipelineConfig

    at = open_home()
    assert_clean(at)
    assert any("No LGG data" in w.value for w in at.warning)
    code = [c.value for c in at.code]
    assert "python -m segunc fetch lgg" in code and any("SEGUNC_DATA=" in c for c in code)
    text = " ".join(m.value for m in at.markdown)
    assert "CC BY-NC-SA" in text and "SOLELY FOR RESEARCH" in text  # licences shown before any download
    assert "LiteMedSAM needs no download" in " ".join(c.value for c in at.caption)
    for name in ("lgg", "unet", "medsam", "universeg"):  # one gated button per missing item
        assert at.button(key=f"home_fetch_{name}").disabled
        assert not at.checkbox(key=f"home_accept_{name}").value
    models = at.dataframe[0].value.set_index("backend")
    assert models.loc["litemedsam", "ready"] and not models.loc["unet", "ready"]
    assert f"σ = {PipelineConfig().sigma:g}" in diagram(at) and "σ = 0.05" not in diagram(at)


def test_home_with_the_shared_data(app_env):
    at = open_home()
    assert_clean(at)
    assert not at.warning and "python -m segunc fetch lgg" not in [c.value for c in at.code]
    patients, slices = at.metric[0], at.metric[1]  # the Data section's (the store's come later)
    assert patients.label == "Patients" and int(patients.value) > 10
    assert slices.label == "Slices" and int(slices.value.replace(",", "")) > 1000
    keys = [b.key for b in at.button]
    assert "home_fetch_unet" not in keys and "home_fetch_lgg" not in keys  # present: nothing to download
    assert "medsam" in " ".join(m.value for m in at.markdown if m.value.startswith("Missing:"))


def test_home_downloads_after_the_licence_is_accepted(empty_machine, monkeypatch):
    from segunc import fetch as F
    from tests.test_fetch import LocalServer

    payload = np.random.default_rng(0).bytes(3_000_000)
    srv = LocalServer()
    try:
        url = srv.add("/universeg.pt", payload)
        asset = replace(F.ASSETS["universeg"], sources=(F.Source(url, f"sha256:{hashlib.sha256(payload).hexdigest()}"),),
                        approx_bytes=len(payload), min_bytes=1000)
        monkeypatch.setitem(F.ASSETS, "universeg", asset)
        at = open_home()
        at.checkbox(key="home_accept_universeg").check().run()
        assert not at.button(key="home_fetch_universeg").disabled
        at.button(key="home_fetch_universeg").click().run()
        assert_clean(at)
        dest = empty_machine["SEGUNC_WEIGHTS"] / "universeg_v1_nf64_ss64_STA.pt"
        assert dest.read_bytes() == payload
        assert any("universeg downloaded" in s.value for s in at.success)
        assert "home_fetch_universeg" not in [b.key for b in at.button]  # present now
    finally:
        srv.close()


def test_home_download_offline_is_a_message_not_a_traceback(empty_machine, monkeypatch):
    from segunc import fetch as F
    from tests.test_fetch import closed_port

    url = f"http://127.0.0.1:{closed_port()}/unet.pt"
    monkeypatch.setitem(F.ASSETS, "unet", replace(F.ASSETS["unet"], sources=(F.Source(url),)))
    at = open_home()
    at.checkbox(key="home_accept_unet").check().run()
    at.button(key="home_fetch_unet").click().run()
    assert not at.exception
    assert len(at.error) == 1 and "No network" in at.error[0].value and "python -m segunc fetch unet" in at.error[0].value
    assert not (empty_machine["SEGUNC_WEIGHTS"] / "unet.pt").exists()


def test_home_offers_no_download_into_a_read_only_folder(app_env):
    at = open_home()  # the shared weights folder is read-only (r-x)
    assert_clean(at)
    assert "home_fetch_medsam" not in [b.key for b in at.button]
    assert any("is read-only here" in c.value and "SEGUNC_WEIGHTS" in c.value for c in at.caption)
