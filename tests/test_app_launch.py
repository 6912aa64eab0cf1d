"""``make app`` runs ``python app.py``, which imports the pages' libraries before the server starts (the
first visitor's landing page does not wait for them) and then serves the app as ``streamlit run`` does."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.app

ROOT = Path(__file__).resolve().parents[1]


def test_python_app_py_starts_the_server_with_the_libraries_loaded(tmp_path):
    """``make app`` runs ``python app.py``: it imports the pages' libraries, then serves the app (health
    endpoint up, the page's HTML served) without Streamlit's "no runtime" warnings, and stops on SIGTERM."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SEGUNC_CACHE": str(tmp_path / "store"), "SEGUNC_DATA": str(tmp_path / "no-data"),
           "SEGUNC_WEIGHTS": str(tmp_path / "no-weights")}
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--server.port", str(port), "--server.address",
                                 "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, health = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read()
                break
            except OSError:
                time.sleep(0.3)
        assert health == b"ok", log.read_text()[-2000:]
        assert b"<html" in urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().lower()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    text = log.read_text()
    assert "No runtime found" not in text and "Traceback" not in text, text[-2000:]
