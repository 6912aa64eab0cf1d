"""Background sweeps ("jobs") on top of the results store: submit, attach, status, cost.

A job is one sweep spec; its id is (24 hex digits of) the sha256 of the spec's identity
(resolved data folder, backend + options, weights sha256, modes, selection, pipeline config
without batch size, ``keep_samples``, ``PIPELINE_VERSION``), so the same request from two users
is one job. State
lives in the store's SQLite (``jobs``, ``job_slices``); execution is in :mod:`.worker`.

States: ``queued`` → ``running`` → ``done`` | ``failed`` (the sweep could not start: data,
weights) | ``cancelled``. A ``running`` job whose executor died (its job lock is free) is
reported as ``queued`` with ``interrupted=True`` and resumed by the next worker or ``run``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..config import FusionConfig, PipelineConfig
from ..store import ResultStore, canonical_json, default_cache_dir
from ..store.db import transaction
from ..store.keys import sha256_hex
from ..store.locks import FileLock, holder, is_locked

__all__ = ["JobSpec", "submit_job", "job_status", "list_jobs", "cancel_job", "ensure_worker", "worker_alive", "worker_info",
           "estimate_cost", "job_lock", "worker_lock", "measured_timing", "record_timing", "DEFAULT_SECONDS"]

STATES = ("queued", "running", "done", "failed", "cancelled")


# ------------------------------------------------------------------------------- spec
def config_to_dict(c: PipelineConfig) -> dict:
    return dataclasses.asdict(c)


def config_from_dict(d: dict) -> PipelineConfig:
    from ..refine.crf import CRFParams

    d = dict(d)
    fusion = dict(d.pop("fusion", {}))
    if "sources" in fusion:
        fusion["sources"] = tuple(fusion["sources"])
    crf = CRFParams(**d.pop("crf", {}))
    for k in ("tta_flips", "tta_scales", "tta_intensities"):
        if k in d:
            d[k] = tuple(d[k])
    return PipelineConfig(**d, fusion=FusionConfig(**fusion), crf=crf)


@lru_cache(maxsize=32)
def _file_sha(path: str, size: int, mtime: float) -> str:
    from ..backends.base import file_sha256

    return file_sha256(path)


def _abs(p: Path | str | None) -> str | None:
    return None if p is None else str(Path(p).expanduser().resolve())


@dataclass
class JobSpec:
    """One sweep: the options of ``python -m segunc run`` as data.

    ``samples``/``seed``/``keep_samples`` left as None take ``config``'s values (default
    ``PipelineConfig()``); given, they override it. ``data`` None → ``$SEGUNC_DATA``."""

    data: Path | str | None = None
    backend: str = "unet"
    weights: Path | str | None = None
    modes: Sequence[str] | str | None = None
    split: str = "val"
    all_slices: bool = False
    limit: int | None = None
    samples: int | None = None
    seed: int | None = None
    config: PipelineConfig | None = None
    backend_options: dict = field(default_factory=dict)
    device: str = "cpu"
    support_data: Path | str | None = None
    patients: Sequence[str] | None = None
    keep_samples: bool | None = None
    spread: bool = False
    profile: str | None = None  # e.g. "tuned on val (tuned.json)", "preset:paper": a label; the config holds the settings

    def pipeline_config(self) -> PipelineConfig:
        c = self.config or PipelineConfig()
        over = {k: v for k, v in (("samples", self.samples), ("seed", self.seed), ("keep_samples", self.keep_samples))
                if v is not None}
        return dataclasses.replace(c, **over) if over else c

    def mode_list(self) -> list[str]:
        from .sweep import parse_modes

        return parse_modes(self.modes)

    def data_root(self) -> Path:
        from ..cli import default_data
        from ..data import resolve_root

        return resolve_root(self.data if self.data is not None else default_data()).resolve()

    def weights_path(self) -> str | None:
        if self.weights is not None:
            return _abs(self.weights)
        from ..backends import BACKENDS

        found = BACKENDS.get(self.backend).find_weights(self.backend_options.get("weights_dir"))
        return _abs(found)

    def weights_sha256(self) -> str:
        p = self.weights_path()
        if p is None or not os.path.isfile(p):
            return "missing"
        st = os.stat(p)
        return _file_sha(p, st.st_size, st.st_mtime)

    def to_dict(self) -> dict:
        """Resolved, JSON-able spec (absolute paths, explicit modes and config): what a worker runs."""
        c = self.pipeline_config()
        d = {"data": str(self.data_root()), "backend": self.backend, "weights": self.weights_path(),
             "modes": self.mode_list(), "split": self.split, "all_slices": bool(self.all_slices),
             "limit": self.limit, "patients": list(self.patients) if self.patients else None,
             "config": config_to_dict(c), "backend_options": dict(self.backend_options), "device": self.device,
             "support_data": _abs(self.support_data)}
        if self.spread:  # only when set, so job ids of first-N sweeps stay as they were
            d["spread"] = True
        if self.profile:  # likewise
            d["profile"] = self.profile
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "JobSpec":
        d = dict(d)
        d["config"] = config_from_dict(d["config"])
        return cls(**d)

    def identity(self) -> dict:
        """What the job id hashes: the resolved spec minus device, batch size and the weights' path,
        plus the weights' sha256 (the same file under two paths is one job)."""
        from .. import PIPELINE_VERSION

        d = self.to_dict()
        d.pop("device")
        d.pop("weights")
        d["config"].pop("batch_size", None)
        d["weights_sha256"] = self.weights_sha256()
        d["pipeline_version"] = PIPELINE_VERSION
        return d

    def job_id(self) -> str:
        return sha256_hex(canonical_json(self.identity()))[:24]


# ------------------------------------------------------------------------------ locks
def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in name)


def job_lock(store: ResultStore, job_id: str) -> FileLock:
    """Held by whoever executes the job (a worker or a foreground ``run``)."""
    return FileLock(store.root / "locks" / f"job-{_safe(job_id)}.lock")


def worker_lock(root: Path | str, device: str = "cpu") -> FileLock:
    """Held by the one worker of a device for its lifetime."""
    return FileLock(Path(root) / "locks" / f"worker-{_safe(device)}.lock")


def worker_alive(cache_dir: Path | str | None = None, device: str = "cpu") -> bool:
    root = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser().resolve()
    return is_locked(worker_lock(root, device).path)


# ------------------------------------------------------------------------------- API
def _select(spec: JobSpec) -> list:
    from .sweep import select_slices

    return select_slices(spec.data_root(), spec.split, spec.all_slices, spec.limit, spec.patients, spec.spread)


def submit(store: ResultStore, spec: JobSpec, refs: list | None = None, requeue: bool = False) -> str:
    """:func:`submit_job`, optionally with the already selected slices (saves a second scan)."""
    jid = spec.job_id()
    row = store.con.execute("SELECT state FROM jobs WHERE job_id = ?", (jid,)).fetchone()
    now = time.time()
    if row is None:
        if refs is None:
            refs = _select(spec)
        spec_json = canonical_json(spec.to_dict())
        with transaction(store.con) as con:
            con.execute("INSERT OR IGNORE INTO jobs (job_id, spec_json, device, state, total, created_at, updated_at) "
                        "VALUES (?, ?, ?, 'queued', ?, ?, ?)", (jid, spec_json, spec.device, len(refs), now, now))
        store.add_run(jid, spec.backend, spec.mode_list(), spec_json, spec.weights_sha256(), len(refs))
    elif requeue or row["state"] in ("failed", "cancelled"):
        with transaction(store.con) as con:
            con.execute("UPDATE jobs SET state = 'queued', cancel = 0, error = NULL, updated_at = ? "
                        "WHERE job_id = ? AND state NOT IN ('queued', 'running')", (now, jid))
    return jid


def submit_job(store: ResultStore, spec: JobSpec, requeue: bool = False) -> str:
    """Queue a sweep; idempotent: the same spec gives the same id and attaches to the existing
    job (queued, running or done). A failed or cancelled job (or any, with ``requeue``) is queued
    again. Nothing runs until a worker (:func:`ensure_worker`) or ``python -m segunc run`` executes it."""
    return submit(store, spec, requeue=requeue)


def cancel_job(store: ResultStore, job_id: str) -> None:
    """Ask a job to stop after its current slice (a queued one is cancelled at once)."""
    with transaction(store.con) as con:
        con.execute("UPDATE jobs SET cancel = 1, updated_at = ? WHERE job_id = ?", (time.time(), job_id))
        con.execute("UPDATE jobs SET state = 'cancelled', finished_at = ? WHERE job_id = ? AND state = 'queued'",
                    (time.time(), job_id))


def _eta(store: ResultStore, row, state: str) -> float | None:
    if state in ("done", "failed", "cancelled"):
        return 0.0
    total, done = row["total"] or 0, row["done"] or 0
    remaining = max(0, total - done)
    if state == "running":
        r = store.con.execute("SELECT AVG(seconds), COUNT(*) FROM job_slices WHERE job_id = ? AND computed > 0",
                              (row["job_id"],)).fetchone()
        if r[1]:
            return float(r[0]) * remaining
    try:
        spec = JobSpec.from_dict(json.loads(row["spec_json"]))
        per = estimate_cost(spec, store=store, slices=1)["seconds"]
    except Exception:
        return None
    return per * remaining


def job_status(store: ResultStore, job_id: str) -> dict[str, Any]:
    """``{state, done, total, failed, current, errors: [(slice_id, error)], started_at, finished_at,
    eta_s}`` plus ``computed``/``skipped``/``failed_results`` (slice × mode results of the latest
    execution), ``error`` (why a failed job could not start), ``interrupted``, ``owner``, ``device``."""
    row = store.con.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        raise KeyError(f"no job {job_id}")
    state = row["state"]
    interrupted = state == "running" and not is_locked(job_lock(store, job_id).path)
    if interrupted:
        state = "queued"
    errors = [(r[0], r[1]) for r in store.con.execute(
        "SELECT slice_id, error FROM job_slices WHERE job_id = ? AND state = 'failed' ORDER BY updated_at", (job_id,))]
    return {"job_id": job_id, "state": state, "done": row["done"], "total": row["total"], "failed": row["failed"],
            "current": row["current"], "errors": errors, "started_at": row["started_at"], "finished_at": row["finished_at"],
            "eta_s": _eta(store, row, state), "computed": row["computed"], "skipped": row["skipped"],
            "failed_results": row["failed_results"], "error": row["error"], "interrupted": interrupted,
            "owner": row["owner"], "device": row["device"], "cancel_requested": bool(row["cancel"])}


def list_jobs(store: ResultStore) -> pd.DataFrame:
    """One row per job, newest first: job_id, state, backend, modes, split, limit, done, total,
    failed, computed, skipped, current, created_at, started_at, finished_at, error."""
    rows = []
    for r in store.con.execute("SELECT job_id FROM jobs ORDER BY created_at DESC").fetchall():
        st = job_status(store, r[0])
        spec = json.loads(store.con.execute("SELECT spec_json FROM jobs WHERE job_id = ?", (r[0],)).fetchone()[0])
        rows.append({"job_id": r[0], "state": st["state"], "backend": spec["backend"], "modes": ",".join(spec["modes"]),
                     "split": spec["split"], "limit": spec["limit"], "samples": spec["config"]["samples"],
                     **{k: st[k] for k in ("done", "total", "failed", "computed", "skipped", "current", "started_at",
                                           "finished_at", "error")}})
    cols = ["job_id", "state", "backend", "modes", "split", "limit", "samples", "done", "total", "failed", "computed",
            "skipped", "current", "started_at", "finished_at", "error"]
    df = pd.DataFrame(rows, columns=cols)
    for c in ("started_at", "finished_at"):
        df[c] = pd.to_datetime(df[c], unit="s", utc=True)
    return df


# ----------------------------------------------------------------------------- worker
def ensure_worker(cache_dir: Path | str | None = None, device: str = "cpu", idle_exit: float | None = 600.0,
                  wait_s: float = 30.0) -> bool:
    """Start a detached ``python -m segunc worker`` for ``device`` unless a live one holds the
    worker lock; returns whether a worker is running. The worker outlives the caller (own
    session) and exits after ``idle_exit`` seconds without jobs; its log is ``logs/worker-<device>.log``."""
    root = ResultStore(cache_dir).root
    lock_path = worker_lock(root, device).path
    if is_locked(lock_path):
        return True
    pkg_parent = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "segunc", "worker", "--cache", str(root), "--device", device]
    if idle_exit is not None:
        cmd += ["--idle-exit", str(idle_exit)]
    log = open(root / "logs" / f"worker-{_safe(device)}.log", "ab")
    kw: dict[str, Any] = {"start_new_session": True} if os.name == "posix" else {
        "creationflags": getattr(subprocess, "DETACHED_PROCESS", 0) | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
    proc = subprocess.Popen(cmd, cwd=pkg_parent, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            close_fds=True, **kw)
    log.close()
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it if it exits while we live
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if is_locked(lock_path):
            return True
        if proc.poll() is not None:  # lost the race to another worker, or crashed (see the log)
            return is_locked(lock_path)
        time.sleep(0.2)
    return is_locked(lock_path)


def worker_info(cache_dir: Path | str | None = None, device: str = "cpu") -> dict | None:
    """``{"host", "pid", "since"}`` of the live worker of ``device``, else None."""
    root = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser().resolve()
    path = worker_lock(root, device).path
    return holder(path) if is_locked(path) else None


# ------------------------------------------------------------------------------- cost
#: seconds per model pass on a CPU when nothing was measured yet ("forward" = whole model)
DEFAULT_SECONDS = {
    "unet": {"forward": 0.5},
    "litemedsam": {"encoder": 1.6, "decoder": 0.05},
    "medsam": {"encoder": 15.0, "decoder": 0.1},
    "universeg": {"forward": 0.5},
}
POST_SECONDS = {"fusion": 0.02, "crf": 0.3}  # per slice, no model pass


def record_timing(store: ResultStore, backend: str, device: str, stages: dict[str, float], n: int = 1) -> None:
    host = socket.gethostname()
    with transaction(store.con) as con:
        for stage, sec in stages.items():
            con.execute("INSERT OR REPLACE INTO calibration_timing (backend, device, host, stage, seconds, n, measured_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", (backend, device, host, stage, float(sec), n, time.time()))


def measured_timing(store: ResultStore | None, backend: str, device: str = "cpu") -> dict[str, float] | None:
    """Seconds per stage measured on this host (else any host) for backend × device, or None."""
    if store is None:
        return None
    rows = store.con.execute("SELECT host, stage, seconds FROM calibration_timing WHERE backend = ? AND device = ? "
                             "ORDER BY measured_at", (backend, device)).fetchall()
    if not rows:
        return None
    here = [r for r in rows if r["host"] == socket.gethostname()] or rows
    return {r["stage"]: r["seconds"] for r in here}


def measure_timing(store: ResultStore, backend, slice_, repeats: int = 2, batch: int = 4) -> dict[str, float]:
    """Time ``backend`` on one real slice and cache it in ``calibration_timing``: seconds per
    sample of a batch of ``batch`` copies (the modes run batched), best of ``repeats``, for the
    whole model (``forward``) and, if two-stage, ``encoder`` / ``decoder``."""
    import torch

    from ..modes import SliceInput

    x = SliceInput.from_slice(slice_, backend)
    if backend.two_stage:  # encoder: the batch it really runs (1 on CPU); decoder: many prompts per embedding
        batch = min(batch, backend.encoder_batch())
    images = x.image.expand(batch, -1, -1, -1).contiguous()
    boxes = None if x.box is None else x.box.expand(batch, -1)

    def best(fn) -> float:  # the model has just run on this slice: no warm-up needed
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    with torch.inference_mode():
        if backend.two_stage:  # forward = encoder + decoder: time the stages only (the encoder is the slow part)
            emb = backend.encode(x.image)
            stages = {"encoder": best(lambda: backend.encode(images)) / batch,
                      "decoder": best(lambda: backend.decode(emb, boxes, x.hw)) / batch}
            stages["forward"] = stages["encoder"] + stages["decoder"]
        else:
            stages = {"forward": best(lambda: backend.logits(images, boxes)) / batch}
    record_timing(store, backend.name, str(backend.device), stages, repeats)
    return stages


def _timing(spec: JobSpec, given: dict | None, store: ResultStore | None) -> tuple[dict[str, float], str]:
    if given:
        t = given.get(spec.backend, given)
        t = {"forward": float(t)} if isinstance(t, (int, float)) else dict(t)
        source = "given"
    else:
        t = measured_timing(store, spec.backend, spec.device)
        source = "measured"
        if not t:
            t, source = dict(DEFAULT_SECONDS.get(spec.backend, {"forward": 1.0})), "default"
    if "forward" not in t:
        t["forward"] = t.get("encoder", 1.0) + t.get("decoder", 0.0)
    t.setdefault("encoder", t["forward"])
    t.setdefault("decoder", t["forward"] * 0.05)
    return t, source


def _human(seconds: float, device: str) -> str:
    if seconds < 90:
        amount = f"{max(1, round(seconds))} s"
    elif seconds < 90 * 60:
        amount = f"{round(seconds / 60)} min"
    else:
        amount = f"{seconds / 3600:.1f} h".replace(".0 h", " h")
    where = "this CPU" if device == "cpu" else device
    return f"about {amount} on {where}"


def mode_passes(mode: str, config: PipelineConfig, two_stage: bool, fixed_input: bool) -> tuple[int, float, int, int]:
    """(whole-model passes, their cost in native-size passes, encoder-only, decoder-only) for one slice."""
    T = config.samples
    if mode == "normal":
        return 1, 1.0, 0, 0
    if mode == "mc_dropout":
        return (0, 0.0, 1, T) if two_stage and config.placement == "decoder" else (T, float(T), 0, 0)
    if mode == "noisy":
        return T, float(T), 0, 0
    if mode == "tta":  # a fully convolutional model pays for the scaled size: cost ∝ scale²
        n = len(config.tta_flips) * len(config.tta_intensities)
        cost = sum(n * (1.0 if fixed_input else s * s) for s in config.tta_scales)
        return n * len(config.tta_scales), cost, 0, 0
    if mode == "box_jitter":
        return 0, 0.0, 1, T
    return 0, 0.0, 0, 0


def estimate_cost(spec: JobSpec, seconds_per_forward: dict | None = None, store: ResultStore | None = None,
                  slices: int | None = None) -> dict[str, Any]:
    """Expected cost of a sweep: ``{slices, forwards, seconds, human, seconds_per_forward, source}``.

    Per slice, the modes and the modes they depend on (each once) cost: normal 1 pass,
    mc_dropout / noisy T, tta 30 (U-Net: weighted by scale², the 2x views cost 4), box_jitter
    1 encoder + T decoder passes (MedSAM family; also mc_dropout with placement 'decoder'),
    fusion / crf no model pass. Seconds per pass: ``seconds_per_forward`` (``{"forward": s,
    "encoder": s, "decoder": s}`` or ``{backend: s}``), else the ``calibration_timing`` of the store
    (``store`` or the default cache), else :data:`DEFAULT_SECONDS`."""
    from ..backends import BACKENDS
    from ..pipeline import required_modes

    config = spec.pipeline_config()
    if store is None and (default_cache_dir() / "store.sqlite").exists():
        store = ResultStore()
    if slices is None:
        slices = len(_select(spec))
    cls = BACKENDS.get(spec.backend)
    two_stage, fixed = bool(cls.two_stage), getattr(cls, "input_size", None) is not None
    t, source = _timing(spec, seconds_per_forward, store)
    forwards, seconds = 0, 0.0
    for m in required_modes(spec.mode_list(), config):
        full, cost, enc, dec = mode_passes(m, config, two_stage, fixed)
        forwards += full + enc + dec
        seconds += cost * t["forward"] + enc * t["encoder"] + dec * t["decoder"] + POST_SECONDS.get(m, 0.0)
    total = seconds * slices
    return {"slices": slices, "forwards": forwards * slices, "seconds": total, "human": _human(total, spec.device),
            "seconds_per_forward": t, "source": source}
