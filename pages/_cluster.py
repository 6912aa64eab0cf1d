"""Run page, cluster part: the Ray cluster's address, its nodes / CPUs / GPUs and dashboard link,
and a button that sends the page's sweeps to it (runner role only).

Self-contained: call :func:`cluster_section` from the Run page with the sweeps the form describes.
The cluster is reached from a subprocess (``python -m segunc.runner.ray_executor``), so the app's
server never joins a Ray cluster itself; progress appears in the page's job table as usual."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import streamlit as st

from pages._access import principal
from pages._errors import explain
from pages._settings import user_path
from segunc import settings

_ROOT = str(Path(__file__).resolve().parents[1])


def _info(address: str) -> dict:
    """Cluster info as a dict (``error`` set if it cannot be reached); cached a minute per address."""
    key = f"cluster_info::{address}"
    hit = st.session_state.get(key)
    if hit and time.time() - hit[0] < 60:
        return hit[1]
    try:
        r = subprocess.run([sys.executable, "-m", "segunc.runner.ray_executor", "info", "--address", address],
                           capture_output=True, text=True, timeout=90, cwd=_ROOT, stdin=subprocess.DEVNULL)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        info = json.loads(lines[-1]) if lines else {"error": (r.stderr.strip() or "no answer")[-500:]}
    except subprocess.TimeoutExpired:
        info = {"error": f"no answer from {address} within 90 s"}
    st.session_state[key] = (time.time(), info)
    return info


def _send(specs: list, address: str) -> str:
    """Start one background process that runs ``specs`` on the cluster; returns its log file."""
    for spec in specs:  # the data folder a job reads must be one this app may use
        user_path(spec.data)
    root = Path(settings.store_dir())
    (root / "cluster").mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    spec_file = root / "cluster" / f"sweeps-{stamp}.json"
    spec_file.write_text(json.dumps([s.to_dict() for s in specs]))
    log = root / "cluster" / f"sweeps-{stamp}.log"
    with open(log, "w") as out:
        subprocess.Popen([sys.executable, "-m", "segunc.runner.ray_executor", "run", "--address", address,
                          "--cache", str(root), str(spec_file)], cwd=_ROOT, stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    return str(log)


def cluster_section(specs: list) -> None:
    """Address field (default ``$SEGUNC_RAY_ADDRESS`` / ``$RAY_ADDRESS``), cluster summary, send button."""
    who = principal()
    if who.read_only or not who.can_run:
        return
    with st.expander("Run on a Ray cluster", icon=":material/hub:"):
        default = os.environ.get("SEGUNC_RAY_ADDRESS") or os.environ.get("RAY_ADDRESS") or ""
        address = st.text_input("Cluster address (host:port of the Ray head)", value=default, key="cluster_address",
                                help="A Ray cluster that this machine has joined (`ray start --address=…`); "
                                     "see docs/cluster.md")
        if not address:
            st.caption("No cluster configured: sweeps run on this machine's worker.")
            return
        info = _info(address)
        if info.get("error"):
            st.error(f"Cluster {address}: {info['error']}", icon=":material/error:")
            return
        c1, c2, c3 = st.columns(3)
        c1.metric("Nodes", info["nodes"])
        c2.metric("CPUs", f"{info['cpus']:g}")
        c3.metric("GPUs", f"{info['gpus']:g}")
        if info.get("dashboard_url"):
            st.markdown(f"[Ray dashboard]({info['dashboard_url']})")
        gpu = any(str(s.device).startswith("cuda") for s in specs)
        if gpu and not info["gpus"]:
            st.warning("The sweep asks for CUDA but this cluster has no GPU.", icon=":material/warning:")
            return
        if st.button(f"Send {len(specs)} sweep(s) to the cluster", key="cluster_send", disabled=not specs):
            try:
                log = _send(specs, address)
            except Exception as exc:  # noqa: BLE001
                st.error(explain(exc))
                return
            st.toast("Sent to the cluster; progress appears in the job list.", icon=":material/check:")
            st.caption(f"Log: {log}")
