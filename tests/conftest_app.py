"""A real results store for the app tests: the real pipeline on a few real val tumour slices.

``app_store`` runs :func:`segunc.runner.worker.run_sweep` once per test session for U-Net and
LiteMedSAM × the paper's six modes (T = 2 to keep it short; TTA always uses its 30 transforms)
into a temporary store. Set ``SEGUNC_TEST_STORE`` to a folder to keep that store between sessions:
the sweeps still run, but the store skips every result it already holds intact (same content key),
so a second session only verifies them. Import the fixtures into a test module with
``from tests.conftest_app import app_env, app_store  # noqa: F401``.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
MODES = ["normal", "mc_dropout", "tta", "noisy", "fusion", "crf"]
N_SLICES = 3
SAMPLES = 2


_BUILT: dict[str, Path] = {}  # each test module that imports the fixture gets its own copy: build once


@pytest.fixture(scope="session")
def app_store(tmp_path_factory, lgg_root, unet_weights) -> Path:
    """Path of a store holding N_SLICES val tumour slices × {unet, litemedsam} × MODES."""
    if "root" in _BUILT:
        return _BUILT["root"]
    import os
    import shutil

    from segunc.config import PipelineConfig
    from segunc.runner.jobs import JobSpec
    from segunc.runner.worker import run_sweep
    from segunc.store import ResultStore

    specs = [JobSpec(data=lgg_root, backend=backend, weights=weights, modes=MODES, split="val", limit=N_SLICES,
                     config=PipelineConfig(samples=SAMPLES)) for backend, weights in (("unet", unet_weights),
                                                                                      ("litemedsam", None))]
    keep = os.environ.get("SEGUNC_TEST_STORE")
    root = Path(keep) if keep else tmp_path_factory.mktemp("app_store")
    if keep and (root / "store.sqlite").exists():
        ids = {r[0] for r in ResultStore(root).con.execute("SELECT job_id FROM jobs")}
        if not ids <= {spec.job_id() for spec in specs}:  # anything else (e.g. an older pipeline version): start afresh
            shutil.rmtree(root)
    store = ResultStore(root)
    t0 = time.perf_counter()
    for spec in specs:
        _, counts = run_sweep(store, spec, progress=False)
        assert counts.failed == 0, counts.errors
    df = store.metrics_frame()
    assert len(df) == 2 * N_SLICES * len(MODES), f"store has {len(df)} rows"
    print(f"\n[app_store] {len(df)} results in {time.perf_counter() - t0:.0f} s at {root}")
    _BUILT["root"] = root
    return root


@pytest.fixture
def app_env(app_store, lgg_root, unet_weights, monkeypatch) -> dict[str, str]:
    """Environment for the app (this test only): the fixture store, the shared data and weights."""
    env = {"SEGUNC_CACHE": str(app_store), "SEGUNC_DATA": str(lgg_root), "SEGUNC_WEIGHTS": str(unet_weights.parent)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env
