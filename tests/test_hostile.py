"""Hostile input, one case per row: snapshots built to attack the importer (paths in database
fields, oversized or unreferenced members, a huge manifest), and a store edited by hand.

The hostile-snapshot builder starts from a real export of real U-Net results, edits its database
with SQL, re-signs it (the manifest's sha256 and size match the edited database, as an attacker
would make them) and writes a new archive."""
from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from segunc.analysis.stored import stored_error_stats
from segunc.store.snapshot import MAX_MANIFEST_BYTES, SnapshotError, export_snapshot, import_snapshot, read_manifest
from segunc.store.readonly import ReadOnlyStore

from .test_snapshot import computed, store  # noqa: F401 - fixtures: a store of 4 real U-Net results

pytestmark = pytest.mark.integration

EVIL_KEY = "/tmp/segunc-hostile/PWNED"


class Hostile:
    """A real snapshot unpacked in memory; ``sql`` edits its database, ``build`` writes an archive
    whose manifest matches the edited database (sha256 and size)."""

    def __init__(self, good: Path, work: Path):
        with tarfile.open(good) as tar:
            self.members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        self.manifest = json.loads(self.members["manifest.json"])
        self.work = work
        self.sizes: dict[str, int] = {}  # declared size override: name → bytes of zeros

    def sql(self, *statements: tuple) -> "Hostile":
        db = self.work / "edit.sqlite"
        db.write_bytes(self.members["store.sqlite"])
        con = sqlite3.connect(db)
        for st in statements:
            con.execute(*st) if isinstance(st, tuple) else con.execute(st)
        con.commit()
        con.close()
        self.members["store.sqlite"] = db.read_bytes()
        db.unlink()
        return self

    def first_map(self) -> str:
        return next(n for n in self.members if n.startswith("maps/"))

    def build(self, name: str, resign: bool = True, manifest_raw: bytes | None = None) -> Path:
        if resign:
            data = self.members["store.sqlite"]
            self.manifest.update(db_sha256=hashlib.sha256(data).hexdigest(), db_bytes=len(data))
        self.members["manifest.json"] = manifest_raw if manifest_raw is not None else json.dumps(self.manifest).encode()
        path = self.work / name
        with tarfile.open(path, "w:gz", compresslevel=1) as tar:
            for n, data in self.members.items():
                info = tarfile.TarInfo(n)
                if n in self.sizes:  # a large member of zeros, streamed (never held in memory)
                    info.size = self.sizes[n]
                    tar.addfile(info, _Zeros(info.size))
                else:
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return path


class _Zeros(io.RawIOBase):
    def __init__(self, n: int):
        self.left = n

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


@pytest.fixture
def hostile(store, tmp_path) -> Hostile:
    good = tmp_path / "good.tar.gz"
    export_snapshot(good, store.root)
    return Hostile(good, tmp_path)


def _refused(archive: Path, target: Path, match: str) -> str:
    with pytest.raises(SnapshotError, match=match) as exc:
        import_snapshot(archive, target)
    assert not target.exists(), "a refused snapshot must leave nothing installed"
    assert not list(target.parent.glob(f".{target.name}.*")), "no staging folder left behind"
    print(f"refused {archive.name}: {exc.value}")
    return str(exc.value)


# -------------------------------------------------------------------------- database fields
def test_row_naming_a_file_outside_the_store(hostile, tmp_path):
    os_release = Path("/etc/os-release").read_bytes()
    sha = hashlib.sha256(os_release).hexdigest()
    hostile.sql(("UPDATE results SET map_file = '/etc/os-release', map_sha256 = ?, map_bytes = ? "
                 "WHERE rowid = (SELECT MIN(rowid) FROM results)", (sha, len(os_release))))
    hostile.members.pop(hostile.first_map())  # keep the member set consistent with the rows
    _refused(hostile.build("abs_map.tar.gz"), tmp_path / "t", "unsafe row.*map file '/etc/os-release'")


def test_row_with_a_traversing_map_file(hostile, tmp_path):
    rel = hostile.first_map()
    evil = rel.replace("maps/", "maps/../../", 1)
    hostile.sql(("UPDATE results SET map_file = ? WHERE map_file = ?", (evil, rel)))
    _refused(hostile.build("dotdot_map.tar.gz"), tmp_path / "t", "unsafe row")


def test_row_with_a_path_as_key(hostile, tmp_path):
    hostile.sql(("UPDATE results SET key = ? WHERE rowid = (SELECT MIN(rowid) FROM results)", (EVIL_KEY,)))
    _refused(hostile.build("path_key.tar.gz"), tmp_path / "t", "unsafe row.*result key")
    assert not Path(EVIL_KEY).parent.exists()


def test_row_with_an_absolute_image(hostile, tmp_path):
    hostile.sql("UPDATE results SET image = '../../../../etc/passwd'")
    _refused(hostile.build("image.tar.gz"), tmp_path / "t", "unsafe row.*image path")


def test_row_with_a_non_hex_sha(hostile, tmp_path):
    hostile.sql("UPDATE results SET map_sha256 = '../x'")
    _refused(hostile.build("sha.tar.gz"), tmp_path / "t", "unsafe row.*sha256")


# -------------------------------------------------------------------------- sizes
def test_database_larger_than_its_manifest_says_is_not_written(hostile, tmp_path):
    """A 256 MiB zero store.sqlite inside a small archive: refused from its header, nothing written."""
    hostile.sizes["store.sqlite"] = 256 << 20
    arch = hostile.build("bomb_db.tar.gz")
    assert arch.stat().st_size < 2 << 20
    _refused(arch, tmp_path / "t", r"store.sqlite declares 268435456 bytes, its manifest")


def test_manifest_without_a_database_size(hostile, tmp_path):
    m = dict(hostile.manifest)
    m.pop("db_bytes")
    arch = hostile.build("nosize.tar.gz", resign=False, manifest_raw=json.dumps(m).encode())
    _refused(arch, tmp_path / "t", "db_bytes")


def test_map_file_no_row_references(hostile, tmp_path):
    """A 64 MiB map member no row names: refused before it is written."""
    name = "maps/ab/" + "ab" * 32 + ".00000000.npz"
    hostile.members[name] = b""
    hostile.sizes[name] = 64 << 20
    _refused(hostile.build("orphan.tar.gz"), tmp_path / "t", "not referenced by any result row")


def test_map_member_larger_than_its_row(hostile, tmp_path):
    name = hostile.first_map()
    hostile.sizes[name] = 32 << 20
    _refused(hostile.build("bigmap.tar.gz"), tmp_path / "t", f"map file {name} declares 33554432 bytes, its row")


def test_snapshot_larger_than_the_free_disk_space(hostile, tmp_path, monkeypatch):
    import shutil

    from segunc.store import snapshot

    real = shutil.disk_usage
    monkeypatch.setattr(snapshot.shutil, "disk_usage", lambda p: real(p)._replace(free=10 << 20))
    _refused(hostile.build("fits.tar.gz"), tmp_path / "t", "MiB free")


def test_huge_manifest_is_refused_from_its_header(hostile, tmp_path):
    """A 64 MiB manifest (gzip makes it tiny): refused from its header without reading it, in a
    child whose peak RSS is measured before and after."""
    raw = json.dumps(hostile.manifest).encode()
    raw = raw[:-1] + b', "pad": "' + b" " * (64 << 20) + b'"}'
    assert len(raw) > MAX_MANIFEST_BYTES
    arch = hostile.build("big_manifest.tar.gz", manifest_raw=raw)
    with pytest.raises(SnapshotError, match="manifest.json declares"):
        read_manifest(arch)
    _refused(arch, tmp_path / "t", "manifest.json declares")
    code = ("import resource, sys\nfrom segunc.store.snapshot import read_manifest, SnapshotError\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\ntry:\n    read_manifest(sys.argv[1])\nexcept SnapshotError as e:\n    print('refused', e)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, str(arch)], capture_output=True, text=True, timeout=120)
    assert "refused" in out.stdout, out.stderr
    before, after = (int(x) / 1024 for x in (out.stdout.split()[0], out.stdout.split()[-1]))
    print(f"peak RSS refusing a {len(raw) / 2**20:.0f} MiB manifest: {after:.0f} MB ({after - before:+.1f} MB over the import)")
    assert after - before < 16


def test_good_snapshot_still_imports(hostile, store, tmp_path):
    res = import_snapshot(hostile.build("same.tar.gz"), tmp_path / "t")
    assert res["results"] == 4
    assert json.loads((tmp_path / "t" / "manifest.json").read_text())["db_sha256"] == hostile.manifest["db_sha256"]


# -------------------------------------------------------------------------- a store edited by hand
def test_hand_edited_store_serves_no_file_outside_it(store, tmp_path, lgg_root):
    os_release = Path("/etc/os-release").read_bytes()
    rows = store.con.execute("SELECT key FROM results ORDER BY key").fetchall()
    k_abs, k_evil = rows[0]["key"], rows[1]["key"]
    store.con.execute("UPDATE results SET map_file = '/etc/os-release', map_sha256 = ?, map_bytes = ? WHERE key = ?",
                      (hashlib.sha256(os_release).hexdigest(), len(os_release), k_abs))
    store.con.execute("UPDATE results SET key = ? WHERE key = ?", (EVIL_KEY, k_evil))
    ro = ReadOnlyStore(store.root)
    for st in (ro, store):
        with pytest.raises(KeyError, match="unsafe row"):
            st.load_maps(k_abs)
        assert k_abs not in st.valid_keys([k_abs])
    errs = stored_error_stats(ReadOnlyStore(store.root), [EVIL_KEY], lgg_root)
    assert "hex" in errs.missing[EVIL_KEY]
    errs = stored_error_stats(store, [EVIL_KEY], lgg_root)
    assert "hex" in errs.missing[EVIL_KEY]
    assert not Path(EVIL_KEY).parent.exists(), "the analysis cache wrote outside the store"
    good = store.con.execute("SELECT key FROM results WHERE key NOT IN (?, ?) LIMIT 1", (k_abs, EVIL_KEY)).fetchone()[0]
    store.con.execute("UPDATE results SET image = '../../../../etc/passwd' WHERE key = ?", (good,))
    errs = stored_error_stats(store, [good], lgg_root, cache=False)
    assert "image path" in errs.missing[good]


# -------------------------------------------------------------------------- decoding: memory before pixels
_RSS = """
import io, resource, sys, time
import numpy as np, tifffile
from segunc.data.upload import UploadError, decode_image
def status(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))
data = open(sys.argv[1], "rb").read()
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    hwm = True
except OSError:
    hwm = False
base = status("VmRSS")
t = time.perf_counter()
try:
    arr, notes, hw = decode_image(data, "upload.tif")
    print("accepted", arr.shape)
except UploadError as exc:
    print("refused", exc)
peak = status("VmHWM") if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"rss {base / 1024:.0f} {peak / 1024:.0f} {time.perf_counter() - t:.2f}")
"""


def _decode_in_child(path: Path) -> tuple[str, float, float, float]:
    """(first output line, peak RSS MB, its rise over the imports MB, seconds) of decode_image(path) in a child."""
    out = subprocess.run([sys.executable, "-c", _RSS, str(path)], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    lines = out.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("rss"), out.stderr[-2000:]
    base, peak, secs = (float(x) for x in lines[-1].split()[1:])
    return lines[0], peak, peak - base, secs


@pytest.mark.parametrize("samples", [64, 512])
def test_upload_header_bomb_is_refused_before_decoding(samples, tmp_path):
    from .test_robustness import write_header_bomb

    path = tmp_path / f"bomb{samples}.tif"
    write_header_bomb(path, samples)
    said, peak, rise, secs = _decode_in_child(path)
    print(f"{path.stat().st_size} B TIFF declaring 4096x4096x{samples}: {said!r}; peak RSS {peak:.0f} MB "
          f"(+{rise:.0f} MB over the imports), {secs:.2f} s")
    assert said.startswith("refused") and f"image has {samples} channels" in said
    assert rise < 32 and secs < 2


def test_upload_decode_budget_worst_cases(tmp_path):
    """The worst accepted upload (4096² RGB, 16 bits) and a refused float64 one, peak RSS measured."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 65535, (64, 64, 3), dtype=np.uint16)
    worst = np.kron(small, np.ones((64, 64, 1), np.uint16))  # 4096 × 4096 × 3, compressible
    ok = tmp_path / "rgb16.tif"
    tifffile.imwrite(ok, worst, compression="zlib", photometric="rgb")
    said, peak, rise, secs = _decode_in_child(ok)
    print(f"worst accepted (4096x4096x3 uint16, {ok.stat().st_size >> 10} KiB): {said!r}; peak RSS {peak:.0f} MB "
          f"(+{rise:.0f} MB), {secs:.2f} s")
    assert said.startswith("accepted") and rise < 400
    bad = tmp_path / "rgb64.tif"
    tifffile.imwrite(bad, worst[:2048].astype(np.float64), compression="zlib", photometric="rgb")
    said, peak, rise, secs = _decode_in_child(bad)
    print(f"refused (2048x4096x3 float64, {bad.stat().st_size >> 10} KiB): {said!r}; peak RSS {peak:.0f} MB "
          f"(+{rise:.0f} MB), {secs:.2f} s")
    assert said.startswith("refused") and "has 64 bits per sample" in said and rise < 32


# -------------------------------------------------------------------------- CLI arguments
from segunc.backends.base import WeightsError  # noqa: E402
from segunc.runner.jobs import JobSpec, submit_job  # noqa: E402
from segunc.runner.sweep import parse_modes, select_slices  # noqa: E402
from segunc.runner.worker import execute_job  # noqa: E402
from segunc.store import ResultStore  # noqa: E402

from .conftest import run_cli  # noqa: E402


def _rows(cache: Path) -> dict[str, int]:
    if not (cache / "store.sqlite").exists():
        return {"jobs": 0, "runs": 0}
    con = sqlite3.connect(cache / "store.sqlite")
    try:
        return {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("jobs", "runs")}
    finally:
        con.close()


@pytest.mark.parametrize("args, said", [
    (["--limit", "0"], "--limit: must be at least 1, not 0"),
    (["--limit", "-1"], "--limit: must be at least 1, not -1"),
    (["--modes", ""], "--modes: no mode given"),
    (["--modes", " , "], "--modes: no mode given"),
    (["--samples", "0"], "--samples: must be at least 1"),
], ids=["limit-0", "limit-minus-1", "modes-empty", "modes-commas", "samples-0"])
def test_cli_rejects_bad_numbers_and_empty_modes(args, said, lgg_root, unet_weights, tmp_path):
    cache = tmp_path / "cache"
    r = run_cli("run", "--data", lgg_root, "--weights", unet_weights, "--cache", cache, "--split", "val", *args)
    assert r.returncode == 2 and said in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and _rows(cache) == {"jobs": 0, "runs": 0}


def test_cli_weights_folder_is_named_and_leaves_no_rows(lgg_root, tmp_path):
    cache, folder = tmp_path / "cache", tmp_path / "weights_dir"
    folder.mkdir()
    base = ["run", "--data", lgg_root, "--cache", cache, "--limit", "1", "--modes", "normal"]
    first = run_cli(*base, "--weights", "/nonexistent.pt")
    assert first.returncode == 2 and "/nonexistent.pt: weights file not found" in first.stderr, first.stderr
    r = run_cli(*base, "--weights", folder)
    assert r.returncode == 2 and f"{folder}: is a folder, not a weights file" in r.stderr, r.stderr
    assert "/nonexistent.pt" not in r.stderr and "Traceback" not in r.stderr
    bg = run_cli(*base, "--weights", folder, "--background")
    assert bg.returncode == 2 and f"{folder}: is a folder" in bg.stderr, bg.stderr
    assert _rows(cache) == {"jobs": 0, "runs": 0}


def test_library_validates_selection_modes_and_weights(lgg_root, unet_weights, tmp_path):
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="limit must be a positive number"):
            JobSpec(data=lgg_root, limit=bad)
        with pytest.raises(ValueError, match="limit must be a positive number"):
            select_slices(lgg_root, "val", limit=bad)
    for bad in ("", " , ", []):
        with pytest.raises(ValueError, match="no mode given"):
            parse_modes(bad)
        with pytest.raises(ValueError, match="no mode given"):
            JobSpec(data=lgg_root, modes=bad)
    assert parse_modes(None) == parse_modes("all") and len(parse_modes(None)) == 6
    a = JobSpec(data=lgg_root, weights=tmp_path, modes="normal", limit=1)
    b = JobSpec(data=lgg_root, weights="/nonexistent.pt", modes="normal", limit=1)
    assert a.job_id() != b.job_id()  # a missing file is never "the same weights" as another
    with pytest.raises(WeightsError, match="is a folder"):
        a.check_weights()
    from segunc.backends import get_backend

    with pytest.raises(WeightsError, match="is a folder"):
        get_backend("unet", weights=tmp_path)


def test_failed_sweep_rows_are_removed(lgg_root, unet_weights, tmp_path):
    """A sweep that fails before storing anything: the foreground run leaves no rows; a queued one
    that a worker failed is removed by gc."""
    cache = tmp_path / "cache"
    broken = tmp_path / "broken.pt"
    broken.write_bytes(unet_weights.read_bytes()[:4096])
    r = run_cli("run", "--data", lgg_root, "--weights", broken, "--cache", cache, "--limit", "1", "--modes", "normal")
    assert r.returncode == 2 and "not a readable PyTorch checkpoint" in r.stderr, r.stderr
    assert _rows(cache) == {"jobs": 0, "runs": 0}
    store = ResultStore(cache)
    job = submit_job(store, JobSpec(data=lgg_root, weights=broken, modes="normal", limit=1))
    execute_job(store, job)
    assert store.con.execute("SELECT state FROM jobs WHERE job_id = ?", (job,)).fetchone()[0] == "failed"
    assert _rows(cache) == {"jobs": 1, "runs": 1}
    g = run_cli("gc", "--cache", cache)
    assert g.returncode == 0 and "empty_failed_jobs=1" in g.stdout, g.stdout + g.stderr
    assert _rows(cache) == {"jobs": 0, "runs": 0}


# -------------------------------------------------------------------------- server mode: what nginx lets through
def _nginx_locations() -> dict[tuple[str, str], str]:
    """``(modifier, path) → body`` of every ``location`` in the HTTPS server block of docs/server.md."""
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "server.md").read_text()
    conf = re.search(r"```nginx\n(.*?)```", doc, re.S).group(1)
    https = conf[conf.index("listen 443"):]
    out = {}
    for m in re.finditer(r"location\s+(=|~\*?|\^~)?\s*(\S+)\s*\{", https):
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(https[i], 0)
            i += 1
        out[(m.group(1) or "", m.group(2))] = https[m.end():i - 1]
    return out


def _nginx_route(locations: dict, path: str) -> str:
    """nginx's choice for ``path``: an exact (=) location, else the longest prefix location."""
    assert not [k for k in locations if k[0].startswith("~")], "regex locations: extend this matcher"
    if ("=", path) in locations:
        return locations[("=", path)]
    best = max((p for mod, p in locations if mod in ("", "^~") and path.startswith(p)), key=len)
    return locations[next(k for k in locations if k[1] == best and k[0] != "=")]


@pytest.mark.parametrize("path, passed", [
    ("/", True), ("/static/js/index.abc123.js", True), ("/media/abc123.png", True), ("/_stcore/stream", True),
    ("/_stcore/health", True), ("/_stcore/host-config", True), ("/_stcore/upload_file/sess/file", True),
    ("/auth/login", True), ("/oauth2callback", True),
    ("/_stcore/metrics", False), ("/_stcore/metrics/", False), ("/_stcore/script-health-check", False),
    ("/_stcore/agent/interact", False), ("/_stcore/agent/mcp", False), ("/_stcore/agent/openapi.json", False),
    ("/_stcore/bidi-components/x/index.js", False), ("/_stcore/health/../metrics", False),
    ("/component/x/index.html", False), ("/app/static/x.txt", False),
])
def test_nginx_config_passes_only_what_a_visitor_needs(path, passed):
    import posixpath

    body = _nginx_route(_nginx_locations(), posixpath.normpath(path) + ("/" if path.endswith("/") else ""))
    if passed:
        assert "proxy_pass http://127.0.0.1:8501" in body and "return" not in body, body
    else:
        assert "return 404" in body and "proxy_pass" not in body, body
    if path == "/_stcore/stream":
        assert "Upgrade $http_upgrade" in body


# -------------------------------------------------------------------------- text from a snapshot, the offline demo
EVIL_HOST = "![x](http://203.0.113.7/tracker.png) [Sign in again](http://203.0.113.7/phish) <img src=http://203.0.113.7/i.png>"


def test_row_with_markdown_in_a_name(hostile, tmp_path):
    hostile.sql("UPDATE results SET slice_id = '![x](http://203.0.113.7/t.png)' WHERE rowid = (SELECT MIN(rowid) FROM results)")
    _refused(hostile.build("md_name.tar.gz"), tmp_path / "t", "unsafe row.*slice_id")


def test_hand_edited_names_are_not_served(store):
    n = len(store.metrics_frame())
    store.con.execute("UPDATE results SET mode = '[click](http://203.0.113.7)' WHERE rowid = (SELECT MIN(rowid) FROM results)")
    df = store.metrics_frame()
    assert len(df) == n - 1 and not df["mode"].str.contains("http").any()


def test_snapshot_label_is_bounded_plain_text(tmp_path):
    from segunc.access import MAX_MANIFEST_BYTES as APP_MAX, plain_field, snapshot_label

    assert APP_MAX == MAX_MANIFEST_BYTES
    (tmp_path / "manifest.json").write_text(json.dumps({"host": "a\nb\u202ec" + "x" * 500, "results": "![i](x)"}))
    label = snapshot_label(tmp_path)
    assert "\n" not in label and "\u202e" not in label and len(label) < 120 and "![i]" not in label
    assert plain_field("a\x00b") == "a b"
    (tmp_path / "manifest.json").write_bytes(b'{"host": "' + b" " * MAX_MANIFEST_BYTES + b'"}')
    assert snapshot_label(tmp_path) is None


def test_demo_shows_snapshot_text_as_plain_text_and_makes_no_network_request(hostile, tmp_path, lgg_root, unet_weights):
    """A real demo server on a snapshot whose manifest ``host`` is Markdown / HTML, in a real headless
    Chromium that logs every request: the text is shown literally (no image, no link) and no
    request leaves 127.0.0.1."""
    from playwright.sync_api import sync_playwright

    from .test_browser import PAGES, VIEWPORT, Server, chromium_path, problems, wait_idle

    hostile.manifest["host"] = EVIL_HOST
    demo = tmp_path / "demo_store"
    import_snapshot(hostile.build("evil_host.tar.gz"), demo)
    env = {"SEGUNC_MODE": "demo", "SEGUNC_CACHE": str(demo), "SEGUNC_DATA": str(lgg_root),
           "SEGUNC_WEIGHTS": str(unet_weights.parent)}
    srv = Server(env, tmp_path / "streamlit.log")
    requests: list[str] = []

    def route(r):
        url = r.request.url
        requests.append(url)
        local = url.startswith((srv.url, "data:", "blob:", "about:"))
        r.continue_() if local else r.abort()

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-dev-shm-usage"])
            ctx = browser.new_context(viewport=VIEWPORT)
            ctx.route("**/*", route)
            page = ctx.new_page()
            for name in PAGES.values():  # every page of the demo
                page.goto(f"{srv.url}/{name}")
                wait_idle(page)
                main = page.inner_text('[data-testid="stMain"]')
                assert "Demo (read-only)" in main and EVIL_HOST[:60] in main, main[:500]
                assert not page.query_selector('a[href*="203.0.113.7"]') and not page.query_selector('img[src*="203.0.113.7"]')
                assert not problems(page), problems(page)
            browser.close()
    finally:
        srv.stop()
    outside = sorted({u for u in requests if not u.startswith((srv.url, "data:", "blob:", "about:"))})
    print(f"{len(requests)} requests, {len(outside)} outside {srv.url}: {outside}")
    assert requests and not outside, outside


# -------------------------------------------------------------------------- a store this user cannot write
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _cli_as(prefix: list[str], *args) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([*prefix, sys.executable, "-m", "segunc", *map(str, args)], cwd=root, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)


def _refused_read_only(r, db: Path):
    said = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in said, said
    assert f"results store {db}" in r.stderr and "not writable" in r.stderr and "chmod" in r.stderr, said


def test_read_only_mount_store_refuses_writes_clearly_and_still_reads(store, tmp_path, lgg_root, unet_weights):
    """Real: the store's folder bind-mounted read-only (root ignores file modes, not a read-only mount)."""
    root, db = store.root, store.root / "store.sqlite"
    store.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.con.close()
    m = subprocess.run(["mount", "--bind", str(root), str(root)], capture_output=True, text=True)
    if m.returncode != 0:
        pytest.fail(f"bind mount refused: {m.stderr}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(root)], check=True)
        for cmd in (["gc"], ["run", "--data", lgg_root, "--weights", unet_weights, "--limit", "1", "--modes", "normal"]):
            _refused_read_only(run_cli(*cmd, "--cache", root), db)
        out = tmp_path / "rows.csv"
        r = run_cli("export", "--cache", root, "--out", out)
        assert r.returncode == 0 and len(out.read_text().splitlines()) == 5, r.stdout + r.stderr
        from segunc.store.readonly import open_for_reading

        ro = open_for_reading(root)
        assert getattr(ro, "read_only", False) and len(ro.metrics_frame()) == 4
        ro.con.close()
    finally:
        if subprocess.run(["umount", str(root)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(root)], check=False)


def test_store_file_without_write_permission_for_a_normal_user(store, tmp_path):
    """Real permissions (run as user nobody): a 0444 store.sqlite is refused with the file named; reading
    it (export) leaves no read-only -shm that keeps failing once the permission is fixed."""
    import shutil as sh

    home = Path(tempfile.mkdtemp(prefix="segunc-ro-", dir="/tmp"))
    try:
        home.chmod(0o755)
        os.chown(home, 65534, 65534)
        root = home / "cache"
        store.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        sh.copytree(store.root, root)
        for p in [root, *root.rglob("*")]:
            os.chown(p, 65534, 65534)
        db = root / "store.sqlite"
        for side in ("-wal", "-shm"):
            (root / f"store.sqlite{side}").unlink(missing_ok=True)
        db.chmod(0o444)
        _refused_read_only(_cli_as(NOBODY, "gc", "--cache", root), db)
        r = _cli_as(NOBODY, "export", "--cache", root, "--out", home / "rows.csv")
        assert r.returncode == 0, r.stderr
        db.chmod(0o644)  # the user fixes the permission: everything works again
        r = _cli_as(NOBODY, "gc", "--cache", root)
        assert r.returncode == 0 and "invalid_rows=0" in r.stdout, r.stdout + r.stderr
        shm = root / "store.sqlite-shm"
        assert not shm.exists() or shm.stat().st_mode & 0o200
    finally:
        sh.rmtree(home, ignore_errors=True)
