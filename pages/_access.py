"""The app's gate for server and demo modes: sign-in page (password or st.login / OIDC), roles,
log-out, the demo banner. Configuration and rules live in :mod:`segunc.access` (no Streamlit there);
set-up in docs/server.md. app.py calls :func:`require_access` before ``st.navigation`` on every run.
"""
from __future__ import annotations

import logging
import math

import streamlit as st

from pages._settings import access_config
from segunc import settings
from segunc.access import VIEWER, AccessError, LoginThrottle, Principal, snapshot_label

log = logging.getLogger("segunc.app")

#: pages only runners get (each also refuses anyone else itself): queueing jobs, uploading images
RUNNER_PAGES = ("run", "upload")
_AUTH_KEY = "_segunc_user"  # session state (held by the server, never sent to the browser): password user's name


def _principal(cfg):
    """The session's Principal under ``cfg``, or None when nobody (allowed) is logged in."""
    if not cfg.login_required:
        return cfg.anonymous()
    user = st.user
    if cfg.oidc and user.get("is_logged_in"):
        role = cfg.role_for_email(user.get("email"), user.get("email_verified"))
        return Principal(user=str(user.get("email")), role=role, method="oidc", mode=cfg.mode) if role else None
    name = st.session_state.get(_AUTH_KEY)
    known = cfg.users.get(name) if name else None  # a user removed from secrets.toml is out on the next rerun
    return cfg.principal(known) if known is not None else None


def principal():
    """Who uses this session (:class:`segunc.access.Principal`); a viewer with no name when nobody is
    logged in (pages check ``principal().can_run`` before any job or upload: defence in depth)."""
    try:
        cfg = access_config()
        p = None if cfg.problems else _principal(cfg)
    except AccessError:
        p = None
    return p if p is not None else Principal(user=None, role=VIEWER, method="none", mode="server")


def hidden_pages(who=None) -> set[str]:
    """Keys of :data:`PAGE_FILES` that ``who`` (default: this session) does not get in the navigation:
    the runner pages for a viewer; in demo mode Run stays, to say why nothing can be queued."""
    who = principal() if who is None else who
    if who.can_run:
        return set()
    return set(RUNNER_PAGES) - ({"run"} if who.read_only else set())


@st.cache_resource(show_spinner=False)
def _throttle():
    return LoginThrottle()  # one per server process: failed attempts from every session count


def _shut(message: str, detail: str | None = None) -> None:
    if detail:
        log.error("access: %s", detail)
    st.navigation([st.Page(lambda: st.error(message, icon=":material/lock:"), title="segunc", url_path="closed")],
                  position="hidden").run()
    st.stop()


def _password_login(cfg, name: str, password: str) -> None:
    throttle = _throttle()
    wait = throttle.wait_s(name)
    if wait > 0:
        st.error(f"Too many failed attempts for this user name; try again in {math.ceil(wait / 60)} min.",
                 icon=":material/timer:")
        return
    user = cfg.check_password(name, password)
    if user is None:
        throttle.failed(name)
        log.warning("access: failed password login for %r", str(name)[:64])
        st.error("Wrong user name or password.", icon=":material/error:")
        return
    throttle.succeeded(name)
    st.session_state[_AUTH_KEY] = user.name
    log.info("access: %s logged in (%s)", user.name, user.role)
    st.rerun()


def _login_page(cfg) -> None:
    """The only page a visitor sees before logging in (the real pages are not even registered)."""
    def sign_in():
        st.title("Sign in")
        st.caption("segunc · segmentation uncertainty. This server asks you to log in.")
        user = st.user
        if cfg.oidc and user.get("is_logged_in"):  # logged in with the provider, but not listed in secrets
            st.error(f"`{user.get('email') or 'this account'}` may not use this app; ask its admin to add it.",
                     icon=":material/block:")
            st.button("Log out", icon=":material/logout:", key="segunc_logout_denied", on_click=_logout, args=("oidc",))
            return
        if cfg.oidc:
            for provider in cfg.providers or (None,):
                label = f"Log in with {provider.replace('_', ' ').title()}" if provider else "Log in"
                if st.button(label, type="primary", icon=":material/login:", key=f"segunc_login_{provider or 'oidc'}"):
                    try:
                        st.login(provider) if provider else st.login()
                    except Exception as exc:  # noqa: BLE001 - e.g. Authlib missing: say so, stay shut
                        log.exception("access: st.login failed")
                        st.error(f"Login is not available: {exc}", icon=":material/error:")
        if cfg.users:
            if cfg.oidc:
                st.caption("or with a user name and password")
            with st.form("segunc_login", clear_on_submit=True):
                name = st.text_input("User name", autocomplete="username", max_chars=64, key="segunc_login_user")
                password = st.text_input("Password", type="password", autocomplete="current-password", max_chars=256,
                                         key="segunc_login_password")
                submitted = st.form_submit_button("Sign in", type="primary", icon=":material/login:")
            if submitted:
                _password_login(cfg, name, password)

    st.navigation([st.Page(sign_in, title="Sign in", icon=":material/lock:", url_path="login")],
                  position="hidden").run()
    st.stop()


def _logout(method: str) -> None:
    """Log-out button callback (a callback, so no rerun of the page can swallow the click)."""
    for k in list(st.session_state.keys()):  # nothing of this user's session stays for the next one
        del st.session_state[k]
    if method == "oidc":
        st.logout()


def account_menu(who) -> None:
    """"Signed in as …" and the Log out button in the sidebar (call after ``st.navigation``: a widget
    made before it takes its id from the page asked for, so its first click could be lost)."""
    if who is None or who.method == "none":
        return
    with st.sidebar:
        st.caption(f"Signed in as **{who.user}** · {who.role}")
        st.button("Log out", icon=":material/logout:", key="segunc_logout", on_click=_logout, args=(who.method,))


def require_access():
    """The gate (call in app.py before st.navigation): returns the session's Principal, or shows the
    sign-in page and stops. With no login configured (local use) it lets everyone in, as a runner.
    In demo mode nothing is downloaded: pages pass ``offline=`` (see :func:`pages._settings.offline`)."""
    try:
        cfg = access_config()
    except AccessError as exc:
        _shut("This app's access settings cannot be read; its admin has been told (server log).", str(exc))
        return None
    if cfg.problems:
        _shut("This app's access settings are incomplete; its admin has been told (server log).", "; ".join(cfg.problems))
        return None
    who = _principal(cfg)
    if who is None:
        _login_page(cfg)
        return None
    if cfg.read_only:
        root = settings.store_dir()
        label = snapshot_label(root)  # text from the snapshot's manifest: shown literally, never as Markdown
        label = "".join("\\" + c if c in "\\`*_{}[]()#+-.!|<>$~:" else c for c in label) if label else None
        st.info(f"**Demo (read-only)** — results from snapshot {label or f'in `{root}`'}. Nothing is "
                "computed, queued, uploaded or downloaded here.", icon=":material/lock:")
    return who
