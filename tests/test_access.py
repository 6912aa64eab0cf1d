"""Server and demo modes: segunc/access.py (passwords, roles, path confinement), the read-only store,
the offline switch of the downloader, and the app's gate with streamlit.testing.v1.AppTest over the
real fixture store (tests/conftest_app.py)."""
from __future__ import annotations

import hashlib
import hmac
import io
import os
import socket
import sqlite3
import stat
import tomllib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from segunc import access
from segunc.access import (RUNNER, VIEWER, AccessError, LoginThrottle, PathError, confine, hash_password, load_config,
                           safe_filename, snapshot_label, verify_password)
from tests.conftest_app import APP, N_SLICES, SAMPLES, app_env, app_store  # noqa: F401

pytestmark = pytest.mark.app

TIMEOUT = 300
FAST_N = 2**10  # a cheap scrypt cost for test hashes (the format carries N; production default is 2**15)
PW = "correct horse battery"
HASH = hash_password(PW, n=FAST_N)
USERS = {"segunc": {"users": {"ann": {"password_hash": HASH, "role": "viewer"},
                              "rob": {"password_hash": HASH, "role": "runner"}}}}
OIDC = {"auth": {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "c" * 32,
                 "client_id": "segunc", "client_secret": "s3cret",
                 "server_metadata_url": "https://idp.example/.well-known/openid-configuration"},
        "segunc": {"oidc": {"runners": ["rob@lab.example"], "viewers": ["@lab.example"]}}}


# ============================================================================== passwords
def test_password_hash_round_trip():
    h = hash_password(PW, n=FAST_N)
    assert h.startswith(f"scrypt${FAST_N}$8$1$") and PW not in h
    assert verify_password(PW, h)
    assert not verify_password(PW + " ", h) and not verify_password("", h)
    assert hash_password(PW, n=FAST_N) != h  # a fresh salt each time
    n, r, p, salt, key = access.parse_hash(h)
    assert (n, r, p, len(salt), len(key)) == (FAST_N, 8, 1, 16, 32)
    assert key == hashlib.scrypt(PW.encode(), salt=salt, n=n, r=r, p=p, dklen=32)  # plain RFC 7914 scrypt
    default = hash_password("x" * 12)  # the production cost, once
    assert default.startswith(f"scrypt${2**15}$8$1$") and verify_password("x" * 12, default)


def test_password_check_is_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(access.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert verify_password(PW, HASH) and not verify_password("wrong", HASH)
    assert len(calls) == 2


@pytest.mark.parametrize("bad", ["", "plain text", "scrypt$1024$8$1$c2FsdA==", "bcrypt$1024$8$1$AAAA$AAAA",
                                 "scrypt$1000$8$1$" + "A" * 24 + "$" + "A" * 44,      # N not a power of two
                                 "scrypt$1073741824$8$1$" + "A" * 24 + "$" + "A" * 44,  # would need 1 TiB
                                 "scrypt$1024$8$1$!!!!$" + "A" * 44, "scrypt$1024$8$1$QUFB$QUFB"])
def test_malformed_hashes_never_verify(bad):
    assert not verify_password(PW, bad)
    with pytest.raises(AccessError):
        access.parse_hash(bad)


def test_passwd_command_prints_a_usable_secrets_block(monkeypatch, capsys):
    from segunc.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-enough\n"))
    assert main(["passwd", "carol", "--role", "runner", "--stdin", "--n", str(FAST_N)]) == 0
    out = capsys.readouterr().out
    assert "s3cret-enough" not in out
    secrets = tomllib.loads(out)
    user = secrets["segunc"]["users"]["carol"]
    assert user["role"] == "runner" and verify_password("s3cret-enough", user["password_hash"])
    cfg = load_config(secrets, env={})
    assert not cfg.problems and cfg.check_password("carol", "s3cret-enough").role == RUNNER

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["passwd", "dave", "--stdin"]) == 2
    assert "at least" in capsys.readouterr().err


# ========================================================================= configuration
def test_modes_from_environment_and_secrets():
    local = load_config({}, env={})
    assert (local.mode, local.login_required, local.problems) == ("local", False, ())
    assert local.anonymous().role == RUNNER and local.anonymous().can_run

    demo = load_config({}, env={"SEGUNC_MODE": "demo"})
    assert demo.read_only and not demo.login_required and not demo.problems
    assert demo.anonymous().role == VIEWER and not demo.anonymous().can_run
    assert load_config({"segunc": {"mode": "demo"}}, env={}).read_only
    assert load_config({"segunc": {"mode": "demo"}}, env={"SEGUNC_MODE": "local"}).mode == "local"  # env wins

    server = load_config({}, env={"SEGUNC_MODE": "server"})  # server mode with no login: fails closed
    assert server.login_required and any("server mode needs a login" in p for p in server.problems)
    odd = load_config({}, env={"SEGUNC_MODE": "public"})
    assert odd.login_required and any("unknown mode" in p for p in odd.problems)
    with pytest.raises(AccessError):
        access.resolve_mode({}, env={"SEGUNC_MODE": "public"})


def test_password_users_and_roles():
    cfg = load_config(USERS, env={})
    assert cfg.login_required and not cfg.problems and cfg.mode == "local"  # a configured login always applies
    assert cfg.check_password("ann", PW).role == VIEWER and cfg.check_password("rob", PW).role == RUNNER
    assert cfg.check_password("ann", "nope") is None and cfg.check_password("nobody", PW) is None
    assert cfg.check_password(" rob ", PW).name == "rob"
    assert not cfg.principal(cfg.users["ann"]).can_run and cfg.principal(cfg.users["rob"]).can_run
    demo = load_config(USERS, env={"SEGUNC_MODE": "demo"})  # demo: a runner acts as a viewer
    assert demo.principal(demo.users["rob"]).role == VIEWER and not demo.principal(demo.users["rob"]).can_run


@pytest.mark.parametrize("spec, problem", [
    ({"password": "hunter2"}, "plain-text password"),
    ({"password_hash": HASH, "role": "admin"}, "unknown role"),
    ({"password_hash": "md5$abc"}, "not a segunc password hash"),
    ("hunter2", "must be a table"),
])
def test_bad_user_entries_are_reported_not_used(spec, problem):
    cfg = load_config({"segunc": {"users": {"eve": spec}}}, env={})
    assert "eve" not in cfg.users and any(problem in p for p in cfg.problems), cfg.problems


def test_oidc_roles_by_email():
    cfg = load_config(OIDC, env={})
    assert cfg.oidc and cfg.login_required and not cfg.problems and cfg.providers == ()
    assert cfg.role_for_email("rob@lab.example") == RUNNER
    assert cfg.role_for_email("ROB@Lab.Example") == RUNNER  # addresses compare case-insensitively
    assert cfg.role_for_email("ann@lab.example") == VIEWER  # by domain
    assert cfg.role_for_email("eve@evil.example") is None
    assert cfg.role_for_email("rob@lab.example", verified=False) is None  # the provider did not verify it
    assert cfg.role_for_email(None) is None and cfg.role_for_email("") is None
    anyone = load_config({**OIDC, "segunc": {"oidc": {"viewers": ["*"], "runners": ["@lab.example"]}}}, env={})
    assert anyone.role_for_email("eve@evil.example") == VIEWER and anyone.role_for_email("x@lab.example") == RUNNER
    demo = load_config(OIDC, env={"SEGUNC_MODE": "demo"})
    assert demo.role_for_email("rob@lab.example") == VIEWER

    named = {"auth": {"redirect_uri": "u", "cookie_secret": "c", "google": {"client_id": "i", "client_secret": "s",
                                                                           "server_metadata_url": "m"}},
             "segunc": {"oidc": {"viewers": ["*"]}}}
    assert load_config(named, env={}).providers == ("google",) and not load_config(named, env={}).problems


@pytest.mark.parametrize("secrets, problem", [
    ({"auth": {"client_id": "i"}, "segunc": {"oidc": {"viewers": ["*"]}}}, "lacks redirect_uri, cookie_secret"),
    ({"auth": {"redirect_uri": "u", "cookie_secret": "c"}, "segunc": {"oidc": {"viewers": ["*"]}}}, "needs client_id"),
    ({"auth": OIDC["auth"]}, "lists nobody"),
    ({"auth": OIDC["auth"], "segunc": {"oidc": {"runners": ["not-an-address"]}}}, "neither an e-mail"),
])
def test_incomplete_oidc_settings_are_problems(secrets, problem):
    cfg = load_config(secrets, env={})
    assert cfg.login_required and any(problem in p for p in cfg.problems), cfg.problems


def test_login_throttle_locks_a_name_for_the_window():
    now = [1000.0]
    t = LoginThrottle(max_failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert t.wait_s("ann") == 0
        t.failed("ANN ")  # names compare as the form would: trimmed, case-insensitive
    assert t.wait_s("ann") == pytest.approx(60) and t.wait_s("rob") == 0
    now[0] += 30
    assert t.wait_s("ann") == pytest.approx(30)
    now[0] += 31
    assert t.wait_s("ann") == 0
    t.failed("rob")
    t.succeeded("rob")  # a success clears the name's failures
    assert t.wait_s("rob") == 0 and "rob" not in t._fails


# =========================================================================== paths
def test_confine_keeps_paths_inside_the_roots(tmp_path):
    data, cache, outside = tmp_path / "data", tmp_path / "cache", tmp_path / "outside"
    for d in (data, cache, outside):
        d.mkdir()
    (outside / "secret.txt").write_text("x")
    (data / "ok.tif").write_text("x")
    roots = [data, cache]
    assert confine("ok.tif", roots) == (data / "ok.tif").resolve()
    assert confine(str(cache / "maps" / "new.npz"), roots) == (cache / "maps" / "new.npz").resolve()  # need not exist
    assert confine("sub/../ok.tif", roots) == (data / "ok.tif").resolve()
    assert confine("maps/x.npz", roots, base=cache) == (cache / "maps" / "x.npz").resolve()
    for bad in ("../outside/secret.txt", "../../../../etc/passwd", str(outside / "secret.txt"), "/etc/passwd",
                "a/../../outside", str(data) + "2/x", "~/../../etc"):
        with pytest.raises(PathError):
            confine(bad, roots)
    assert confine("~/x", roots) == (data / "~" / "x").resolve()  # user input: "~" is a name, not home
    for bad in ("", "   ", "ok\x00.tif"):
        with pytest.raises(PathError):
            confine(bad, roots)
    with pytest.raises(PathError):
        confine("x", [])


def test_confine_resolves_symlinks(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("x")
    (data / "inside.tif").write_text("x")
    (data / "escape").symlink_to(outside, target_is_directory=True)
    (data / "leak.txt").symlink_to(outside / "secret.txt")
    (data / "alias.tif").symlink_to(data / "inside.tif")
    with pytest.raises(PathError):
        confine("escape/secret.txt", [data])
    with pytest.raises(PathError):
        confine(data / "leak.txt", [data])
    assert confine("alias.tif", [data]) == (data / "inside.tif").resolve()
    # a root that is itself a symbolic link is compared by its real path
    link_root = tmp_path / "data_link"
    link_root.symlink_to(data, target_is_directory=True)
    assert confine(link_root / "inside.tif", [link_root]) == (data / "inside.tif").resolve()


def test_safe_filename():
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\Users\\x\\slice 01.tif") == "slice_01.tif"
    assert safe_filename(".hidden") == "hidden" and safe_filename("..") == "file" and safe_filename("") == "file"
    assert "/" not in safe_filename("a/b\x00c") and len(safe_filename("x" * 500)) == 120


def test_pages_user_path_confines_to_data_cache_and_weights(app_env):
    from pages._settings import user_path

    data = Path(app_env["SEGUNC_DATA"]).resolve()
    assert user_path("TCGA_CS_4941_19960909") == data / "TCGA_CS_4941_19960909"
    assert user_path(app_env["SEGUNC_CACHE"]) == Path(app_env["SEGUNC_CACHE"]).resolve()
    for bad in ("../../../etc/passwd", "/etc/passwd", str(data.parent)):
        with pytest.raises(PathError):
            user_path(bad)


def test_snapshot_label(tmp_path):
    assert snapshot_label(tmp_path) is None
    (tmp_path / "manifest.json").write_text('{"created_at": "2026-01-02T03:04:05Z", "host": "gpu1", "results": 36}')
    assert snapshot_label(tmp_path) == "2026-01-02T03:04:05Z, made on gpu1, 36 results"
    (tmp_path / "manifest.json").write_text("not json")
    assert snapshot_label(tmp_path) is None


def test_server_defaults_stay_safe():
    """XSRF protection on, uploads small, and the documented nginx limit matches the app's."""
    import re

    root = Path(__file__).resolve().parents[1]
    server = tomllib.loads((root / ".streamlit" / "config.toml").read_text())["server"]
    assert server["enableXsrfProtection"] is True and server.get("enableStaticServing", False) is False
    assert 1 <= server["maxUploadSize"] <= 10
    doc = (root / "docs" / "server.md").read_text()
    assert re.search(rf"client_max_body_size {server['maxUploadSize']}m;", doc)
    assert "location /_stcore/stream" in doc and "proxy_set_header Upgrade $http_upgrade;" in doc
    assert "docs/server.md" in (root / "README.md").read_text()
    assert ".streamlit/secrets.toml" in (root / ".gitignore").read_text().splitlines()


# ===================================================================== read-only store
def _small_store(root: Path):
    from segunc.store import ResultStore

    s = ResultStore(root)
    s.add_run("run1", "unet", ["normal"], "{}", None, 1)
    s.put_settings({"a": 1})
    return s


def _counts(db: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("results", "runs", "run_results", "settings", "jobs", "job_slices", "calibration_timing")}
    finally:
        con.close()


def test_read_only_store_reads_and_refuses_writes(tmp_path):
    from segunc.runner.jobs import list_jobs
    from segunc.store.readonly import ReadOnlyStore, ReadOnlyStoreError

    root = tmp_path / "store"
    _small_store(root)
    db = root / "store.sqlite"
    before, mtime = _counts(db), db.stat().st_mtime_ns
    ro = ReadOnlyStore(root)
    assert list(ro.runs()["run_id"]) == ["run1"] and len(ro.metrics_frame()) == 0 and list_jobs(ro).empty
    for write in (lambda: ro.add_run("run2", "unet", ["normal"], "{}", None, 1), lambda: ro.put_settings({"b": 2}),
                  lambda: ro.link("run1", ["k"]), lambda: ro.gc()):
        with pytest.raises(ReadOnlyStoreError):
            write()
    with pytest.raises(sqlite3.OperationalError):  # even SQL behind the API's back
        ro.con.execute("DELETE FROM runs")
    assert ro.invalidate("k") is False
    with pytest.raises(KeyError):
        ro.load_maps("no-such-key")
    assert _counts(db) == before and db.stat().st_mtime_ns == mtime

    missing = tmp_path / "nothing_here"
    with pytest.raises(FileNotFoundError, match="snapshot import"):
        ReadOnlyStore(missing)
    assert not missing.exists()  # not created


def test_read_only_store_falls_back_to_immutable(tmp_path, monkeypatch):
    """In a folder the process may not write, SQLite cannot open a WAL database mode=ro (no -shm file);
    the store then opens it immutable. (Simulated: the tests may run as root, which writes anywhere.)"""
    from segunc.store import readonly

    root = tmp_path / "store"
    _small_store(root).con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # immutable reads the main file only
    real = sqlite3.connect
    tried = []

    def connect(database, *a, **k):
        tried.append(database)
        if "immutable=1" not in database:  # what SQLite says without a writable folder for the -shm file
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real(database, *a, **k)

    monkeypatch.setattr(readonly.sqlite3, "connect", connect)
    ro = readonly.ReadOnlyStore(root)
    assert list(ro.runs()["run_id"]) == ["run1"]
    assert [("immutable=1" in u) for u in tried] == [False, True]


def test_offline_mode_downloads_nothing(tmp_path, monkeypatch):
    from segunc import fetch, settings

    def no_net(*a, **k):
        raise AssertionError("a request was made in offline mode")

    monkeypatch.setattr("requests.get", no_net)
    monkeypatch.setenv("SEGUNC_OFFLINE", "1")
    with pytest.raises(fetch.OfflineError, match="offline mode"):
        fetch.download("http://127.0.0.1:9/x.bin", tmp_path / "x.bin")
    with pytest.raises(fetch.OfflineError, match="offline mode"):
        fetch.fetch_lgg(tmp_path / "lgg")
    monkeypatch.delenv("SEGUNC_OFFLINE")
    monkeypatch.setenv("SEGUNC_MODE", "demo")
    assert settings.offline()
    monkeypatch.setenv("SEGUNC_MODE", "local")
    monkeypatch.setenv("SEGUNC_OFFLINE", "0")
    assert not settings.offline()


# ============================================================================= the app
def new_app(secrets: dict | None = None, user: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    for k, v in (secrets or {}).items():
        at.secrets[k] = v
    if user is not None:
        at.user = user
    return at.run()


def sign_in(name: str, password: str = PW, secrets: dict = USERS) -> AppTest:
    at = new_app(secrets)
    at.text_input(key="segunc_login_user").input(name)
    at.text_input(key="segunc_login_password").input(password)
    next(b for b in at.button if b.label == "Sign in").click()
    return at.run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def shows_no_data(at: AppTest) -> None:
    """Nothing from the store or the data folder on the page: no tables, figures, images or numbers."""
    assert not at.dataframe and not at.metric and not at.get("plotly_chart") and not at.get("image")
    text = " ".join(m.value for m in at.markdown)
    assert "TCGA" not in text and "Results store" not in [s.value for s in at.subheader]


def registered(at: AppTest, page: str) -> bool:
    try:
        at.switch_page(f"pages/{page}.py")
    except ValueError:  # AppTest: not a page of this session's navigation
        return False
    return True


def test_local_use_needs_no_login(app_env):
    at = new_app()
    assert_clean(at)
    assert at.title[0].value != "Sign in" and at.metric  # the store's numbers, as before
    assert not any(b.key == "segunc_logout" for b in at.button)
    assert not any("Demo" in i.value for i in at.info)
    assert registered(at, "run")


def test_without_login_only_the_sign_in_form(app_env):
    at = new_app(USERS)
    assert_clean(at)
    assert [t.value for t in at.title] == ["Sign in"]
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    from streamlit.proto.TextInput_pb2 import TextInput as TextInputProto

    assert at.text_input(key="segunc_login_password").proto.type == TextInputProto.PASSWORD  # masked
    shows_no_data(at)
    assert not registered(at, "run") and not registered(at, "compare")  # only the sign-in page exists


def test_wrong_password_is_refused(app_env):
    for name, password in (("ann", "not the password"), ("nobody", PW), ("", "")):
        at = sign_in(name, password)
        assert not at.exception
        assert [e.value for e in at.error] == ["Wrong user name or password."]
        assert [t.value for t in at.title] == ["Sign in"]
        shows_no_data(at)


def test_repeated_failures_lock_the_name(app_env):
    for _ in range(5):
        at = sign_in("mallory", "guess")
    at = sign_in("mallory", "guess")
    assert "Too many failed attempts" in at.error[0].value
    shows_no_data(at)


def test_viewer_browses_but_gets_no_run_page(app_env, app_store, monkeypatch):
    import pages._access as access_gate
    import segunc.runner.jobs as jobs
    from segunc.store import ResultStore

    at = sign_in("ann")
    assert_clean(at)
    assert at.title[0].value != "Sign in"
    assert {m.label: m.value for m in at.metric}["Results"] == str(2 * N_SLICES * 6)
    assert any("Signed in as **ann** · viewer" in c.value for c in at.caption)
    assert not registered(at, "run") and not registered(at, "upload")
    assert registered(at, "compare")

    # defence in depth: even with the Run page registered (a bug elsewhere), it refuses a viewer
    before = jobs.list_jobs(ResultStore(app_store))
    monkeypatch.setattr(access_gate, "hidden_pages", lambda who=None: set())
    at = sign_in("ann")
    at.switch_page("pages/run.py").run()
    assert not at.exception
    assert any("may browse results but not queue jobs" in w.value for w in at.warning)
    with pytest.raises(KeyError):
        at.button(key="run_queue")
    assert jobs.list_jobs(ResultStore(app_store)).equals(before)


def test_runner_queues_a_job(app_env, app_store, monkeypatch):
    import segunc.runner.jobs as jobs
    from segunc.store import ResultStore

    started = []
    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: started.append(a) or True)
    before = set(jobs.list_jobs(ResultStore(app_store))["job_id"])
    at = sign_in("rob")
    assert any("Signed in as **rob** · runner" in c.value for c in at.caption)
    at.switch_page("pages/run.py").run()
    assert_clean(at)
    at.number_input(key="run_T").set_value(SAMPLES)
    at.number_input(key="run_limit").set_value(N_SLICES)
    at.multiselect(key="run_backends").set_value(["unet"])
    at.toggle(key="run_spread").set_value(False)  # the fixture's sweep takes the first N
    at.run()
    at.button(key="run_queue").click().run()
    assert_clean(at)
    assert started, "the page did not ask for a worker"
    job = at.session_state["run_last"][0]
    after = jobs.list_jobs(ResultStore(app_store)).set_index("job_id")
    assert set(after.index) == before and after.loc[job, "state"] == "done"  # the fixture's own sweep


def test_log_out_returns_to_the_sign_in_page(app_env):
    at = sign_in("rob")
    at.button(key="segunc_logout").click().run()
    assert [t.value for t in at.title] == ["Sign in"]
    assert "_segunc_user" not in at.session_state
    shows_no_data(at)


def test_oidc_login_and_roles(app_env):
    at = new_app(OIDC, user={"is_logged_in": False})
    assert_clean(at)
    assert [t.value for t in at.title] == ["Sign in"]
    assert [b.label for b in at.button] == ["Log in"] and not at.text_input
    shows_no_data(at)

    at = new_app(OIDC, user={"is_logged_in": True, "email": "rob@lab.example", "email_verified": True})
    assert_clean(at)
    assert at.metric and any("rob@lab.example** · runner" in c.value for c in at.caption)
    assert registered(at, "run")

    at = new_app(OIDC, user={"is_logged_in": True, "email": "ann@lab.example"})
    assert_clean(at)
    assert at.metric and not registered(at, "run")

    at = new_app(OIDC, user={"is_logged_in": True, "email": "eve@evil.example"})
    assert not at.exception
    assert "may not use this app" in at.error[0].value
    assert [b.key for b in at.button] == ["segunc_logout_denied"]
    shows_no_data(at)
    at.button(key="segunc_logout_denied").click().run()
    assert [b.label for b in at.button] == ["Log in"]  # st.logout: logged out


@pytest.mark.parametrize("secrets, env", [
    ({"segunc": {"users": {"ann": {"password": "hunter2"}}}}, {}),  # plain text: refused, app stays shut
    ({}, {"SEGUNC_MODE": "server"}),  # server mode with no login configured
    ({}, {"SEGUNC_MODE": "public"}),  # an unknown mode
])
def test_unusable_settings_keep_the_app_shut(app_env, monkeypatch, secrets, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    at = new_app(secrets)
    assert not at.exception
    assert len(at.error) == 1 and "access settings" in at.error[0].value
    assert "hunter2" not in at.error[0].value and not at.text_input
    shows_no_data(at)


def _fingerprint(root: Path) -> dict:
    """Every file of the store folder (size, mtime) and the row counts; SQLite's own -wal / -shm files
    aside (a read-only connection may create them where the folder lets it)."""
    files = {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
             for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(("-wal", "-shm"))}
    return {"files": files, "rows": _counts(root / "store.sqlite")}


def test_demo_mode_is_read_only_and_offline(app_env, app_store, tmp_path, monkeypatch):
    """A snapshot of the fixture store imported into a read-only folder; every page in demo mode: the
    banner names the snapshot, Run only explains, nothing is written and no connection is attempted."""
    import pages._settings as app_settings
    from segunc import settings
    from segunc.store.snapshot import export_snapshot, import_snapshot

    archive = tmp_path / "results.tar.gz"
    manifest = export_snapshot(archive, app_store)
    demo = tmp_path / "demo_store"
    import_snapshot(archive, demo)
    for suffix in ("-wal", "-shm"):  # a clean copy, as on a laptop after `snapshot import`
        (demo / f"store.sqlite{suffix}").unlink(missing_ok=True)
    monkeypatch.setenv("SEGUNC_CACHE", str(demo))
    monkeypatch.setenv("SEGUNC_MODE", "demo")
    monkeypatch.setenv("SEGUNC_OFFLINE", "0")  # demo mode alone must make the app offline
    before = _fingerprint(demo)
    assert before["rows"]["results"] == manifest["results"] == 2 * N_SLICES * 6

    attempts = []

    def no_network(self, address, *a):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    dirs = [demo, *[p for p in demo.rglob("*") if p.is_dir()]]
    ro = stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    for d in dirs:
        d.chmod(ro)
    (demo / "store.sqlite").chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    try:
        at = new_app()
        assert_clean(at)
        banner = [i.value for i in at.info if "Demo (read-only)" in i.value]
        assert len(banner) == 1 and "results from a store snapshot" in banner[0]
        label = [t.value for t in at.text if t.value.startswith("Snapshot: ")]  # snapshot text: plain, never Markdown
        assert len(label) == 1 and manifest["created_at"] in label[0]
        assert {m.label: m.value for m in at.metric}["Results"] == str(manifest["results"])
        assert not registered(at, "upload")
        for page in ("dataset", "compare", "metrics", "calibration", "review", "run"):
            at.switch_page(f"pages/{page}.py").run()
            assert_clean(at)
            assert any("Demo (read-only)" in i.value for i in at.info), page
        assert any("nothing can be computed or queued" in i.value for i in at.info)  # the Run page
        with pytest.raises(KeyError):
            at.button(key="run_queue")
        # offline without touching the process environment: the pages pass offline= to segunc.fetch
        assert os.environ.get("SEGUNC_OFFLINE") == "0"
        assert app_settings.offline() and settings.offline()
    finally:
        for d in dirs:
            d.chmod(0o755)
        (demo / "store.sqlite").chmod(0o644)
    assert attempts == []
    assert _fingerprint(demo) == before
