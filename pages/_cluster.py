"""Run page, cluster part: the Ray cluster's address, its nodes / CPUs / GPUs and dashboard link,
and a button that sends the page's sweeps to it (runner role only).

Self-contained: call :func:`cluster_section` from the Run page with the sweeps the form describes.
The address is the configured one (:func:`segunc.settings.ray_address`); only a local app without
a login lets its user type another (with a login, a runner must not point the server's driver at
an arbitrary host: results come back from the cluster unpickled). The cluster is reached from a
subprocess (``python -m segunc.runner.ray_executor``), so the app's server never joins a Ray
cluster itself; the sent jobs are watched in the page's job list (``run_last``) like queued ones."""
from __future__ import annotations

import json
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
    """Start one background process that runs ``specs`` on the cluster; returns its log file. Its
    jobs appear in the store once it has joined the cluster (seconds); the job list watches them."""
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
    ids = [s.job_id() for s in specs]
    st.session_state["run_last"] = ids  # the job list shows their progress as for queued jobs
    st.session_state["cluster_sent"] = {"ids": ids, "at": time.time(), "log": str(log)}
    return str(log)


def sent_pending(job_ids) -> bool:
    """Sweeps sent to the cluster in the last :data:`SENT_WAIT_S` s whose jobs the store does not
    hold yet (their driver is still joining the cluster): the job list keeps polling for them."""
    sent = st.session_state.get("cluster_sent")
    return bool(sent) and time.time() - sent["at"] < SENT_WAIT_S and not set(sent["ids"]) <= set(job_ids)


#: how long the job list waits for a sent sweep's job rows to appear before giving up on them
SENT_WAIT_S = 180.0


def cluster_section(specs: list, active: bool = False) -> None:
    """Address (the configured one; editable only without a login), cluster summary, send button
    (disabled while ``active``: these sweeps are already queued, running or just sent)."""
    who = principal()
    if who.read_only or not who.can_run:
        return
    with st.expander("Run on a Ray cluster", icon=":material/hub:"):
        configured = settings.ray_address() or ""
        editable = who.method == "none"  # local use without a login: the user's own machine
        address = st.text_input("Cluster address (host:port of the Ray head)", value=configured, key="cluster_address",
                                disabled=not editable,
                                help="A Ray cluster that this machine has joined (`ray start --address=…`); "
                                     "see docs/cluster.md" + ("" if editable else ". Set by the app's admin "
                                                              "(SEGUNC_RAY_ADDRESS)."))
        address = (address if editable else configured).strip()
        if not address:
            st.caption("No cluster configured (`SEGUNC_RAY_ADDRESS`): sweeps run on this machine's worker.")
            return
        with st.spinner(f"Asking the cluster at {address}…"):
            info = _info(address)
        if info.get("error"):
            st.error(f"Cluster {address}: {info['error']}", icon=":material/error:")
            return
        c1, c2, c3 = st.columns(3)
        c1.metric("Nodes", info["nodes"])
        c2.metric("CPUs", f"{info['cpus']:g}")
        c3.metric("GPUs", f"{info['gpus']:g}")
        if info.get("node_list"):
            st.caption(" · ".join(f"{n.get('host') or n.get('ip')}: {n.get('cpus', 0):g} CPU, {n.get('gpus', 0):g} GPU"
                                  for n in info["node_list"]))
        if info.get("dashboard_url"):
            st.markdown(f"[Ray dashboard]({info['dashboard_url']})")
        gpu = any(str(s.device).startswith("cuda") for s in specs)
        if gpu and not info["gpus"]:
            st.warning("The sweep asks for CUDA but this cluster has no GPU.", icon=":material/warning:")
            return
        st.button(f"Send {len(specs)} sweep(s) to the cluster", key="cluster_send", disabled=not specs or active,
                  on_click=_send_clicked, args=(specs, address),
                  help="Already queued or sent: see its progress below" if active else None)
        if st.session_state.get("cluster_error"):
            st.error(f"Could not send: {st.session_state['cluster_error']}", icon=":material/error:")


def _send_clicked(specs: list, address: str) -> None:
    """Send button callback: runs before the page, so the page it draws already shows the sent jobs."""
    st.session_state.pop("cluster_error", None)
    if not principal().can_run:  # defence in depth: viewers never get the button
        st.session_state["cluster_error"] = "this account may not run jobs"
        return
    try:
        _send(specs, address)
    except Exception as exc:  # noqa: BLE001 - a callback runs outside the page's guard
        st.session_state["cluster_error"] = explain(exc)
        return
    st.toast("Sent to the cluster; its progress appears in the job list.", icon=":material/check:")
