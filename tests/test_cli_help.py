"""``python -m segunc --help`` stays light: no torch, scipy or matplotlib is imported to print it.

Each subcommand imports its heavy libraries only when it runs; the help of every subcommand is
printed in a fresh interpreter and ``sys.modules`` is read afterwards.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "scipy", "matplotlib")
COMMANDS = ("evaluate", "run", "worker", "export", "gc", "fetch", "snapshot", "passwd", "report")

PROBE = """
import json, runpy, sys
sys.argv = ["segunc", *json.loads(sys.argv[1])]
code = None
try:
    runpy.run_module("segunc", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy})
print("\\n" + json.dumps({{"code": code, "heavy": heavy}}))
""".format(heavy=set(HEAVY))


def _help(*argv: str) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(argv))], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    *text, last = proc.stdout.rstrip("\n").split("\n")
    return json.loads(last), "\n".join(text)


def test_top_level_help_imports_no_heavy_library():
    got, text = _help("--help")
    assert got == {"code": 0, "heavy": []}
    for command in COMMANDS:
        assert command in text


@pytest.mark.parametrize("command", ["run", "evaluate", "report", "fetch"])
def test_subcommand_help_imports_no_heavy_library(command):
    got, text = _help(command, "--help")
    assert got == {"code": 0, "heavy": []}
    assert f"usage: python -m segunc {command}" in text


def test_the_probe_sees_a_heavy_import():
    """The same probe on a command that does load torch reports it (the check can fail)."""
    proc = subprocess.run([sys.executable, "-c", PROBE.replace('runpy.run_module("segunc", run_name="__main__", '
                                                              'alter_sys=True)', "import segunc.backends.unet_net"), "[]"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "torch" in json.loads(proc.stdout.rstrip("\n").split("\n")[-1])["heavy"]


def test_flag_defaults_come_from_the_pipeline_config():
    from segunc.cli import build_parser
    from segunc.config import PipelineConfig

    d = PipelineConfig()
    args = build_parser().parse_args(["run"])
    assert (args.samples, args.seed, args.batch_size, args.p, args.placement, args.sigma, args.jitter_px) == (
        d.samples, d.seed, d.batch_size, d.p, d.placement, d.sigma, d.jitter_px)
    assert (args.fusion_weighting, args.fusion_threshold, args.fusion_source, args.crf_iterations) == (
        d.fusion.weighting, d.fusion.threshold, d.fusion.source, d.crf.iterations)
    assert float(args.temperature) == d.temperature
    assert build_parser().parse_args(["gc", "--cache", "/x"]).store == build_parser().parse_args(["gc", "--store", "/x"]).store
