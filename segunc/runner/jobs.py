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
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..config import PipelineConfig
from .. import settings
from ..store import ResultStore, canonical_json
from ..store import jobs as job_table
from ..store.db import transaction
from ..store.keys import sha256_hex
from ..store.locks import FileLock, holder, is_locked
from .selection import check_limit

__all__ = ["JobSpec", "submit_job", "job_status", "list_jobs", "cancel_job", "ensure_worker", "worker_alive", "worker_info",
           "estimate_cost", "job_lock", "worker_lock", "measured_timing", "record_timing", "record_mode_timing",
           "stored_results", "tta_distinct_views", "DEFAULT_SECONDS"]


# ------------------------------------------------------------------------------- spec
@lru_cache(maxsize=32)
def _file_sha(path: str, size: int, mtime: float) -> str:
    from ..fsutil import file_sha256

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

    def __post_init__(self):
        check_limit(self.limit)
        if self.modes is not None:
            from .sweep import parse_modes

            parse_modes(self.modes)  # "" or an unknown mode: an error here, not a default sweep

    def check_weights(self) -> str:
        """The weights file this sweep will load (a file; a folder or a missing path → WeightsError naming it)."""
        from ..backends.base import WeightsError, check_weights_file

        p = self.weights_path()
        if p is None:
            raise WeightsError(None, f"no weights found for backend '{self.backend}' (give --weights FILE, or put "
                                     "them in $SEGUNC_WEIGHTS / data/weights)")
        return str(check_weights_file(p))

    def pipeline_config(self) -> PipelineConfig:
        c = self.config or PipelineConfig()
        over = {k: v for k, v in (("samples", self.samples), ("seed", self.seed), ("keep_samples", self.keep_samples))
                if v is not None}
        return dataclasses.replace(c, **over) if over else c

    def mode_list(self) -> list[str]:
        from .sweep import parse_modes

        return parse_modes(self.modes)

    def data_root(self) -> Path:
        from ..data import resolve_root

        return resolve_root(settings.data_dir(self.data)).resolve()

    def weights_path(self) -> str | None:
        if self.weights is not None:
            return _abs(self.weights)
        from ..backends import BACKENDS

        found = BACKENDS.get(self.backend).find_weights(self.backend_options.get("weights_dir"))
        return _abs(found)

    def weights_sha256(self) -> str:
        p = self.weights_path()
        if p is None or not os.path.isfile(p):
            return f"missing:{p}"  # never the id of a sweep with other (missing) weights
        st = os.stat(p)
        return _file_sha(p, st.st_size, st.st_mtime)

    def to_dict(self) -> dict:
        """Resolved, JSON-able spec (absolute paths, explicit modes and config): what a worker runs."""
        c = self.pipeline_config()
        d = {"data": str(self.data_root()), "backend": self.backend, "weights": self.weights_path(),
             "modes": self.mode_list(), "split": self.split, "all_slices": bool(self.all_slices),
             "limit": self.limit, "patients": list(self.patients) if self.patients else None,
             "config": c.to_dict(), "backend_options": dict(self.backend_options), "device": self.device,
             "support_data": _abs(self.support_data)}
        if self.spread:  # only when set, so job ids of first-N sweeps stay as they were
            d["spread"] = True
        if self.profile:  # likewise
            d["profile"] = self.profile
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "JobSpec":
        d = dict(d)
        d["config"] = PipelineConfig.from_dict(d["config"])
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


def worker_alive(store_dir: Path | str | None = None, device: str = "cpu") -> bool:
    root = settings.store_dir(store_dir).resolve()
    return is_locked(worker_lock(root, device).path)


# ------------------------------------------------------------------------------- API
def _select(spec: JobSpec) -> list:
    from .sweep import select_slices

    return select_slices(spec.data_root(), spec.split, spec.all_slices, spec.limit, spec.patients, spec.spread)


def submit(store: ResultStore, spec: JobSpec, refs: list | None = None, requeue: bool = False) -> str:
    """:func:`submit_job`, optionally with the already selected slices (saves a second scan)."""
    spec.check_weights()  # a folder / missing file fails here, before any job or run row is written
    jid = spec.job_id()
    row = job_table.job_state(store.con, jid)
    now = time.time()
    if row is None:
        if refs is None:
            refs = _select(spec)
        spec_json = canonical_json(spec.to_dict())
        job_table.add_job(store.con, jid, spec_json, spec.device, len(refs), now)
        store.add_run(jid, spec.backend, spec.mode_list(), spec_json, spec.weights_sha256(), len(refs))
    elif requeue or row["state"] in ("failed", "cancelled"):
        job_table.requeue_job(store.con, jid, now)
    return jid


def forget_empty_job(store: ResultStore, job_id: str) -> bool:
    """Delete a failed / cancelled job that stored nothing (its job, slice-progress and run rows);
    returns whether it did. (``ResultStore.gc`` does the same for every such job.)"""
    try:
        with transaction(store.con) as con:
            return bool(job_table.delete_empty_jobs(con, job_id))
    except sqlite3.OperationalError:  # e.g. a full disk: gc cleans it later
        return False


def submit_job(store: ResultStore, spec: JobSpec, requeue: bool = False) -> str:
    """Queue a sweep; idempotent: the same spec gives the same id and attaches to the existing
    job (queued, running or done). A failed or cancelled job (or any, with ``requeue``) is queued
    again. Nothing runs until a worker (:func:`ensure_worker`) or ``python -m segunc run`` executes it."""
    return submit(store, spec, requeue=requeue)


def cancel_job(store: ResultStore, job_id: str) -> None:
    """Ask a job to stop after its current slice (a queued one is cancelled at once)."""
    job_table.request_cancel(store.con, job_id)


def _eta(store: ResultStore, row, state: str) -> float | None:
    """Seconds left: per remaining slice, the (measured) cost of the modes it still lacks; results
    the job already holds are free. While running, the model is rescaled by this execution's own
    pace (actual / estimated seconds of the slices computed so far)."""
    if state in ("done", "failed", "cancelled"):
        return 0.0
    total = row["total"] or 0
    running = state == "running"
    remaining = max(0, total - (row["done"] or 0)) if running else total
    if remaining == 0:
        return 0.0
    try:
        spec = JobSpec.from_dict(json.loads(row["spec_json"]))
        est = estimate_cost(spec, store=store, slices=1)
    except Exception:
        return None
    from ..pipeline import required_modes

    config = spec.pipeline_config()
    per_mode, modes = est["per_slice_mode"], spec.mode_list()
    overhead = est["seconds_per_forward"].get("slice_overhead", 0.0)
    held = job_table.held_per_mode(store.con, row["job_id"], not_yet_processed=running)
    # slices that lack mode m pay for it (its dependencies counted once, with the mode that needs them most)
    lacking = {m: max(0, remaining - held.get(m, 0)) for m in modes}
    cost: dict[str, float] = {}
    for m in modes:
        for d in required_modes([m], config):
            cost[d] = max(cost.get(d, 0.0), lacking[m] * per_mode.get(d, 0.0))
    eta = sum(cost.values()) + overhead * max(lacking.values(), default=0)
    if running:
        total_s, n = job_table.done_slice_seconds(store.con, row["job_id"])
        if n:
            model = est["seconds"]  # one slice, all modes: what those slices were expected to cost
            if model > 0:
                eta *= min(4.0, max(0.25, float(total_s) / n / model))
    return eta


def job_status(store: ResultStore, job_id: str) -> dict[str, Any]:
    """``{state, done, total, failed, current, errors: [(slice_id, error)], started_at, finished_at,
    eta_s}`` plus ``computed``/``skipped``/``failed_results`` (slice × mode results of the latest
    execution), ``error`` (why a failed job could not start), ``interrupted``, ``owner``, ``device``."""
    row = job_table.job_row(store.con, job_id)
    if row is None:
        raise KeyError(f"no job {job_id}")
    state = row["state"]
    interrupted = state == "running" and not is_locked(job_lock(store, job_id).path)
    if interrupted:
        state = "queued"
    errors = job_table.job_errors(store.con, job_id)
    return {"job_id": job_id, "state": state, "done": row["done"], "total": row["total"], "failed": row["failed"],
            "current": row["current"], "errors": errors, "started_at": row["started_at"], "finished_at": row["finished_at"],
            "eta_s": _eta(store, row, state), "computed": row["computed"], "skipped": row["skipped"],
            "failed_results": row["failed_results"], "error": row["error"], "interrupted": interrupted,
            "owner": row["owner"], "device": row["device"], "cancel_requested": bool(row["cancel"])}


def list_jobs(store: ResultStore) -> pd.DataFrame:
    """One row per job, newest first: job_id, state, backend, modes, split, limit, done, total,
    failed, computed, skipped, current, created_at, started_at, finished_at, error."""
    rows = []
    for job_id in job_table.job_ids(store.con):
        st = job_status(store, job_id)
        spec = json.loads(job_table.job_spec_json(store.con, job_id))
        rows.append({"job_id": job_id, "state": st["state"], "backend": spec["backend"], "modes": ",".join(spec["modes"]),
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
def ensure_worker(store_dir: Path | str | None = None, device: str = "cpu", idle_exit: float | None = 600.0,
                  wait_s: float = 30.0) -> bool:
    """Start a detached ``python -m segunc worker`` for ``device`` unless a live one holds the
    worker lock; returns whether a worker is running. The worker outlives the caller (own
    session) and exits after ``idle_exit`` seconds without jobs; its log is ``logs/worker-<device>.log``."""
    root = ResultStore(store_dir).root
    lock_path = worker_lock(root, device).path
    if is_locked(lock_path):
        return True
    pkg_parent = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "segunc", "worker", "--store", str(root), "--device", device]
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


def worker_info(store_dir: Path | str | None = None, device: str = "cpu") -> dict | None:
    """``{"host", "pid", "since"}`` of the live worker of ``device``, else None."""
    root = settings.store_dir(store_dir).resolve()
    path = worker_lock(root, device).path
    return holder(path) if is_locked(path) else None


# ------------------------------------------------------------------------------- cost
#: seconds per model pass (at a batch of samples) when nothing was measured yet: measured on a 2-core
#: CPU (U-Net 0.117 s per forward, LiteMedSAM 1.02 s encoder / 0.053 s decoder; MedSAM ViT-B and
#: UniverSeg scaled from their sizes), plus ``slice_overhead`` (reading, metrics, store: 0.54 s)
DEFAULT_SECONDS = {
    "unet": {"forward": 0.12, "slice_overhead": 0.5},
    "litemedsam": {"encoder": 1.0, "decoder": 0.05, "slice_overhead": 0.5},
    "medsam": {"encoder": 12.0, "decoder": 0.1, "slice_overhead": 0.5},
    "universeg": {"forward": 0.3, "slice_overhead": 0.5},
}
POST_SECONDS = {"fusion": 0.02, "crf": 0.3}  # per slice, no model pass


def record_timing(store: ResultStore, backend: str, device: str, stages: dict[str, float], n: int = 1) -> None:
    job_table.put_timing(store.con, backend, device, socket.gethostname(), stages, n)


def measured_timing(store: ResultStore | None, backend: str, device: str = "cpu") -> dict[str, float] | None:
    """Seconds per stage measured on this host (else any host) for backend × device, or None."""
    if store is None:
        return None
    rows = job_table.timing_rows(store.con, backend, device)
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


def tta_distinct_views(config: PipelineConfig) -> int:
    """Model passes of TTA on one slice: its views with distinct model inputs, each computed once
    (:func:`segunc.modes.tta.distinct_views`). Every backend normalises each image (z-score or
    min-max), so in the ``paper`` set the gains ≤ 1 give one input per flip × scale × rotation; a
    gain > 1 clips the brightest pixels (LGG slices reach 255), so each is its own input (30 → 18;
    measured 16 on a real val slice with the U-Net); the default set's gammas are all distinct."""
    from ..config import tta_intensity_op

    gains = [float(g) for g in config.tta_intensities]
    if tta_intensity_op(config.tta_set) == "gain" and gains:
        intensities = int(any(g <= 1.0 for g in gains)) + sum(g > 1.0 for g in gains)
    else:
        intensities = len(gains)
    return len(config.tta_flips) * len(config.tta_scales) * len(config.tta_rotations) * intensities


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
        n = tta_distinct_views(config) // max(1, len(config.tta_scales))
        cost = sum(n * (1.0 if fixed_input else s * s) for s in config.tta_scales)
        return n * len(config.tta_scales), cost, 0, 0
    if mode == "box_jitter":
        return 0, 0.0, 1, T
    return 0, 0.0, 0, 0


def _material_rest(backend: str, config: PipelineConfig, mode: str, weights_sha256: str) -> str:
    """:func:`segunc.pipeline.result_key_material` without the backend settings, as canonical JSON."""
    from .. import PIPELINE_VERSION
    from ..backends import BACKENDS
    from ..pipeline import modes_key_material

    return canonical_json({"pipeline_version": PIPELINE_VERSION, "weights_sha256": weights_sha256, "mode": mode,
                           "modes": modes_key_material(BACKENDS.get(backend), config, mode),
                           "temperature": config.temperature})


#: backend settings derived at run time (not given by the user), ignored when matching stored results
_DERIVED_OPTIONS = ("support_ids",)


def _expected_backend_settings(spec: JobSpec) -> dict:
    """The backend's :meth:`~segunc.backends.base.Backend.settings` the spec will produce, without
    building the model: constructor defaults overridden by ``backend_options``."""
    import inspect

    from ..backends import BACKENDS

    cls = BACKENDS.get(spec.backend)
    defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
                if k not in ("self", "weights", "device") and p.default is not inspect.Parameter.empty}
    opts = {**defaults, **{k: v for k, v in spec.backend_options.items() if k != "weights_dir"}}
    return json.loads(canonical_json({"backend": spec.backend, **dict(sorted(opts.items()))}))


def stored_results(store: ResultStore, spec: JobSpec, slice_ids: Sequence[str]) -> dict[str, set[str]]:
    """mode → slice ids of ``slice_ids`` whose result for this spec the store already holds (so a
    sweep would skip them). Matched on the result-key material (backend settings, weights sha256,
    mode parameters, temperature, pipeline version) without loading the model."""
    from ..postprocess import POST_STEPS

    config = spec.pipeline_config()
    modes = spec.mode_list()
    wanted = set(slice_ids)
    if not wanted or not modes:
        return {m: set() for m in modes}
    sha = spec.weights_sha256()
    rest = {m: _material_rest(spec.backend, config, m, sha) for m in modes}
    backend_settings = _expected_backend_settings(spec)
    ok: dict[str, bool] = {}
    out: dict[str, set[str]] = {m: set() for m in modes}
    for row in store.result_settings(spec.backend, modes):
        if row["slice_id"] not in wanted or (config.keep_samples and not row["has_samples"]
                                             and row["mode"] not in POST_STEPS):  # post-processing has no samples
            continue
        sid = row["settings_id"]
        if sid not in ok:
            material = json.loads(row["material"])
            b = {k: v for k, v in (material.pop("backend", {}) or {}).items() if k not in _DERIVED_OPTIONS}
            ok[sid] = b == backend_settings and canonical_json(material) == rest[row["mode"]]
        if ok[sid]:
            out[row["mode"]].add(row["slice_id"])
    return out


def _per_mode_seconds(spec: JobSpec, t: dict[str, float], config: PipelineConfig, modes: Sequence[str]) -> dict[str, float]:
    """Seconds per slice of each mode in ``modes`` (dependencies not included): the pass model,
    times the measured ratio actual/model of backend × mode × device where one is stored (else the
    median ratio of the backend's measured modes)."""
    from ..backends import BACKENDS

    cls = BACKENDS.get(spec.backend)
    two_stage, fixed = bool(cls.two_stage), getattr(cls, "input_size", None) is not None
    ratios = [v for k, v in t.items() if k.startswith("ratio:")]
    default = float(np.median(ratios)) if ratios else 1.0  # a mode not measured yet: the backend's typical ratio
    out = {}
    for m in modes:
        full, cost, enc, dec = mode_passes(m, config, two_stage, fixed)
        model = cost * t["forward"] + enc * t["encoder"] + dec * t["decoder"] + POST_SECONDS.get(m, 0.0)
        out[m] = model * t.get(f"ratio:{m}", default)
    return out


def estimate_cost(spec: JobSpec, seconds_per_forward: dict | None = None, store: ResultStore | None = None,
                  slices: int | None = None, refs: list | None = None) -> dict[str, Any]:
    """Expected cost of a sweep: ``{slices, forwards, seconds, human, seconds_per_forward, source,
    held, todo, per_slice_mode, calibrated}``.

    Per slice, the modes and the modes they depend on (each once) cost: normal 1 pass,
    mc_dropout / noisy T, tta its distinct views (:func:`tta_distinct_views`: 30, the paper set 18; U-Net:
    weighted by scale², the 2x views cost 4), box_jitter
    1 encoder + T decoder passes (MedSAM family; also mc_dropout with placement 'decoder'),
    fusion / crf no model pass. Seconds per pass: ``seconds_per_forward`` (``{"forward": s,
    "encoder": s, "decoder": s}`` or ``{backend: s}``), else the ``calibration_timing`` of the store
    (``store`` or the default cache), else :data:`DEFAULT_SECONDS`. Once sweeps have run, each
    mode's model cost is scaled by its measured ratio actual/model for backend × mode × device
    (``calibrated``) and the measured per-slice overhead (load, metrics, store) is added.

    Results the store already holds are not counted (``held`` slice × mode results; a finished
    sweep queued again costs ~0), unless only a slice count ``slices`` is given."""
    from ..backends import BACKENDS
    from ..pipeline import required_modes

    config = spec.pipeline_config()
    if store is None and (settings.store_dir() / "store.sqlite").exists():
        store = ResultStore()
    if slices is None:
        if refs is None:
            refs = _select(spec)
        slices = len(refs)
    t, source = _timing(spec, seconds_per_forward, store)
    modes = spec.mode_list()
    needed = required_modes(modes, config)
    per_mode = _per_mode_seconds(spec, t, config, needed)
    cls = BACKENDS.get(spec.backend)
    two, fixed = bool(cls.two_stage), getattr(cls, "input_size", None) is not None
    held: dict[str, set[str]] = {m: set() for m in modes}
    if refs is not None and store is not None:
        try:
            held = stored_results(store, spec, [r.slice_id for r in refs])
        except Exception:  # noqa: BLE001 - an estimate must never fail on a store it cannot match
            held = {m: set() for m in modes}
    groups: dict[tuple[str, ...], int] = {}  # the modes still to compute → how many slices need exactly those
    if refs is not None:
        for r in refs:
            todo = tuple(m for m in modes if r.slice_id not in held.get(m, ()))
            groups[todo] = groups.get(todo, 0) + 1
    else:
        groups[tuple(modes)] = slices
    overhead = t.get("slice_overhead", 0.0)
    forwards, seconds = 0, 0.0
    for todo, n in groups.items():
        if not todo:
            continue
        for m in required_modes(todo, config):
            full, _, enc, dec = mode_passes(m, config, two, fixed)
            forwards += (full + enc + dec) * n
            seconds += per_mode[m] * n
        seconds += overhead * n
    n_held = sum(len(v) for v in held.values())
    return {"slices": slices, "forwards": forwards, "seconds": seconds, "human": _human(seconds, spec.device),
            "seconds_per_forward": t, "source": source, "held": n_held, "todo": slices * len(modes) - n_held,
            "per_slice_mode": per_mode, "calibrated": any(k.startswith("ratio:") for k in t)}


def record_mode_timing(store: ResultStore, spec_or_backend, device: str, config: PipelineConfig,
                       actual: dict[str, float], overhead: float | None = None, cap: int = 50) -> None:
    """Fold one slice's measured seconds per mode (own time, dependencies excluded) into the running
    ratio actual/model of backend × mode × device (stage ``ratio:<mode>``), and the per-slice
    overhead outside the modes (stage ``slice_overhead``), in ``calibration_timing``. Needs measured
    stage timings (:func:`measure_timing`); a running mean over at most ``cap`` slices."""
    backend = getattr(spec_or_backend, "name", spec_or_backend)
    t = measured_timing(store, backend, device)
    if not t or "forward" not in t:
        return
    spec = JobSpec(backend=backend, device=device, config=config)
    tt, _ = _timing(spec, None, store)
    model = _per_mode_seconds(spec, {k: v for k, v in tt.items() if not k.startswith("ratio:")}, config, list(actual))
    obs = {f"ratio:{m}": sec / model[m] for m, sec in actual.items() if model.get(m, 0) > 0 and sec >= 0}
    if overhead is not None and overhead >= 0:
        obs["slice_overhead"] = overhead
    if not obs:
        return
    job_table.fold_timing(store.con, backend, device, socket.gethostname(), obs, cap)
