"""Shared fixtures. Real data comes from ../shared (or $SEGUNC_SHARED); in CI a missing
../shared fails the tests that need it (never skips)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGUNC_SHARED", ROOT.parent / "shared"))

# A few real val slices used across tests: two tumour slices and one without tumour.
VAL_TUMOUR = ["TCGA_CS_4941_19960909_12", "TCGA_CS_4941_19960909_14"]


LAYERS = ("unit", "integration", "app")
_UNIT_MODULE = re.compile(r"^pytestmark = (pytest\.mark\.unit|\[pytest\.mark\.unit\b)", re.M)


def pytest_ignore_collect(collection_path, config):
    """With ``-m unit`` alone (``make test-fast``) a module whose ``pytestmark`` is another layer is not even
    imported: its imports (torch, the backends, the app) would cost more than the unit tests themselves."""
    if config.getoption("markexpr") != "unit" or not collection_path.name.startswith("test_") \
            or collection_path.suffix != ".py":
        return None
    return None if _UNIT_MODULE.search(collection_path.read_text()) else True


def pytest_collection_modifyitems(config, items):
    """Every test belongs to exactly one layer (module-level ``pytestmark``), so ``-m unit`` is the whole inner loop."""
    bad = [item.nodeid for item in items if sum(item.get_closest_marker(m) is not None for m in LAYERS) != 1]
    if bad:
        raise pytest.UsageError(f"tests need exactly one of the markers {LAYERS} (set pytestmark in the module): "
                                + ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else ""))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"required shared test data missing: {path} (set SEGUNC_SHARED or place ../shared beside the repo)")
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    return _need(SHARED)


@pytest.fixture(scope="session")
def lgg_root(shared) -> Path:
    return _need(shared / "lgg" / "kaggle_3m")


@pytest.fixture(scope="session")
def unet_weights(shared) -> Path:
    return _need(shared / "weights" / "unet_lgg_f32.pt")


@pytest.fixture(scope="module")
def unet(unet_weights):
    """The real U-Net backend on the shared weights (one per test module, so no module sees another's changes)."""
    from segunc.backends import BACKENDS

    return BACKENDS.get("unet")(weights=unet_weights)


@pytest.fixture(scope="session")
def lgg_refs(lgg_root):
    from segunc.data import discover

    return discover(lgg_root)


@pytest.fixture(scope="session")
def val_slices(lgg_refs):
    """Three real val slices: the first tumour slices of the first val patient and one empty slice."""
    from segunc.data import load_slice, select

    val = select(lgg_refs, "val")
    loaded = [load_slice(r) for r in val[:60]]
    tumour = [s for s in loaded if s.has_tumour][:2]
    empty = [s for s in loaded if not s.has_tumour][:1]
    assert len(tumour) == 2 and len(empty) == 1
    return tumour + empty


def run_cli(*args, env: dict | None = None):
    """``python -m segunc ARGS`` in a real subprocess from the repository root; ``env`` is added
    to this process's environment."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "segunc", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
