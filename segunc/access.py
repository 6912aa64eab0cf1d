"""Who may use the app and what they may do: server mode (login, roles), demo mode (read-only), and
path confinement. Pure logic, no Streamlit: the gate itself is ``require_access`` in
``pages/_access.py``; ``docs/server.md`` says how to configure each mode.

Modes (``$SEGUNC_MODE``, else ``mode`` in the ``[segunc]`` section of ``.streamlit/secrets.toml``):

* ``local`` (default): one user on their own machine; no login unless one is configured.
* ``server``: every page requires a login; with no login method configured the app refuses to
  open (fails closed) rather than serving everyone.
* ``demo``: read-only and offline, from a store snapshot; nothing writes to the store, no job is
  queued, nothing is downloaded. A configured login still applies; every role acts as a viewer.

Logins: Streamlit's own ``st.login`` with an OIDC provider (``[auth]`` in ``secrets.toml``, as
Streamlit documents it), and/or a password gate for labs without OIDC::

    [segunc.users.alice]
    password_hash = "scrypt$32768$8$1$<salt>$<hash>"   # from `python -m segunc passwd alice`
    role = "runner"                                    # or "viewer" (the default)

    [segunc.oidc]               # which OIDC identities may enter, and as what
    runners = ["alice@lab.org"]
    viewers = ["@lab.org"]      # a whole domain; "*" = anyone the provider lets log in

Roles: *viewers* browse the stored results; *runners* may also queue jobs and upload images.
Passwords are never stored in the clear: ``scrypt`` (RFC 7914) with a random salt, compared with
:func:`hmac.compare_digest`.
"""
from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import json
import os
import re
import secrets as _secrets
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

__all__ = ["MODES", "VIEWER", "RUNNER", "ROLES", "AccessError", "PathError", "hash_password", "verify_password",
           "User", "Principal", "AccessConfig", "load_config", "resolve_mode", "LoginThrottle", "confine",
           "safe_filename", "snapshot_label"]

MODES = ("local", "server", "demo")
VIEWER, RUNNER = "viewer", "runner"
ROLES = (VIEWER, RUNNER)

# scrypt cost: N = 2**15, r = 8, p = 1 takes 32 MiB and about 0.1 s per check, a compromise for a small
# lab server (OWASP suggests N = 2**17); `passwd --n` raises it, and verification reads N from the hash.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
SALT_BYTES, KEY_BYTES = 16, 32
_MAX_SCRYPT_MEM = 1 << 30  # refuse hashes that would need more than 1 GiB to check (a typo, or a DoS)
MIN_PASSWORD = 8


class AccessError(ValueError):
    """A login configuration that cannot be used (the message says what to fix)."""


class PathError(ValueError):
    """A path (from user input) outside the folders the app may touch."""


# ------------------------------------------------------------------------------------ passwords
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    pw = unicodedata.normalize("NFC", password).encode("utf-8")
    return hashlib.scrypt(pw, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=2 * 128 * r * (n + p) + (1 << 20))


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P,
                  salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$<salt base64>$<key base64>`` for ``password`` (a fresh 16-byte salt unless given)."""
    if not isinstance(password, str) or not password:
        raise ValueError("empty password")
    salt = _secrets.token_bytes(SALT_BYTES) if salt is None else bytes(salt)
    _check_params(n, r, p)
    key = _scrypt(password, salt, n, r, p, KEY_BYTES)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(key)}"


def _check_params(n: int, r: int, p: int) -> None:
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or 128 * r * n * p > _MAX_SCRYPT_MEM:
        raise AccessError(f"unusable scrypt parameters N={n}, r={r}, p={p}")


def parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """(N, r, p, salt, key) of a stored hash; :class:`AccessError` if it is not one of ours."""
    parts = str(stored).strip().split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise AccessError("not a segunc password hash (expected scrypt$N$r$p$salt$key from `python -m segunc passwd`)")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except ValueError as exc:  # binascii.Error is a ValueError
        raise AccessError(f"malformed password hash ({exc})") from None
    _check_params(n, r, p)
    if len(salt) < 8 or len(key) < 16:
        raise AccessError("password hash with a too short salt or key")
    return n, r, p, salt, key


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time compare); False for a malformed hash."""
    try:
        n, r, p, salt, key = parse_hash(stored)
    except AccessError:
        return False
    if not isinstance(password, str):
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(key)), key)


_DUMMY: list[str] = []


def _dummy_hash() -> str:
    """A hash to check unknown user names against, so they take as long as known ones."""
    if not _DUMMY:
        _DUMMY.append(hash_password(_secrets.token_urlsafe(12)))
    return _DUMMY[0]


# ---------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class User:
    name: str
    password_hash: str = field(repr=False)
    role: str = VIEWER


@dataclass(frozen=True)
class Principal:
    """Who is using this session, and how they got in (``method``: none, password or oidc)."""
    user: str | None
    role: str
    method: str = "none"
    mode: str = "local"

    @property
    def read_only(self) -> bool:
        return self.mode == "demo"

    @property
    def can_run(self) -> bool:
        """May queue jobs and upload images (a runner, and not in demo mode)."""
        return self.role == RUNNER and not self.read_only


def resolve_mode(secrets: Mapping | None = None, env: Mapping[str, str] | None = None) -> str:
    """The app mode: ``$SEGUNC_MODE``, else ``[segunc] mode``, else ``local``; :class:`AccessError` if unknown."""
    env = os.environ if env is None else env
    seg = (secrets or {}).get("segunc") or {}
    raw = env.get("SEGUNC_MODE") or (seg.get("mode") if isinstance(seg, Mapping) else None) or "local"
    mode = str(raw).strip().lower()
    if mode not in MODES:
        raise AccessError(f"unknown mode {raw!r} (SEGUNC_MODE or [segunc] mode): use one of {', '.join(MODES)}")
    return mode


def _email_entries(value, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise AccessError(f"{where} must be a list of e-mail addresses, @domains or \"*\"")
    out = []
    for v in value:
        v = str(v).strip().lower()
        if v != "*" and "@" not in v:
            raise AccessError(f"{where}: {v!r} is neither an e-mail address, an @domain nor \"*\"")
        out.append(v)
    return tuple(out)


@dataclass(frozen=True)
class AccessConfig:
    """The login and mode settings, from ``secrets.toml`` and the environment (:func:`load_config`)."""
    mode: str = "local"
    users: Mapping[str, User] = field(default_factory=dict)
    oidc: bool = False                  # an [auth] section: st.login is available
    providers: tuple[str, ...] = ()     # named providers ([auth.google] ...); () = the [auth] section itself
    runners: tuple[str, ...] = ()       # OIDC identities allowed as runners (addresses, @domains, "*")
    viewers: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()      # configuration errors: the app refuses to open while any is left

    @property
    def read_only(self) -> bool:
        return self.mode == "demo"

    @property
    def login_required(self) -> bool:
        """Server mode, or any login configured (a configured login is never silently skipped)."""
        return self.mode == "server" or bool(self.users) or self.oidc

    def cap(self, role: str) -> str:
        """The role as granted in this mode (demo: everyone is a viewer)."""
        return VIEWER if self.read_only else role

    def anonymous(self) -> Principal:
        """The principal of a session where no login is required: local use runs, demo views."""
        return Principal(user=None, role=self.cap(RUNNER), method="none", mode=self.mode)

    def role_for_email(self, email: str | None, verified: bool | None = None) -> str | None:
        """The role of an OIDC identity, or None (not allowed). The most specific entry wins: the
        exact address, then its @domain, then ``*``; listed both as runner and viewer = runner.
        An address the provider marks unverified (``email_verified = false``) gets nothing."""
        if not email or verified is False:
            return None
        email = str(email).strip().lower()
        domain = "@" + email.rsplit("@", 1)[-1] if "@" in email else None
        for entry in (email, domain, "*"):
            if entry is None:
                continue
            if entry in self.runners:
                return self.cap(RUNNER)
            if entry in self.viewers:
                return self.cap(VIEWER)
        return None

    def check_password(self, name: str, password: str) -> User | None:
        """The user if ``name`` and ``password`` match (an unknown name costs the same time), else None."""
        user = self.users.get(str(name or "").strip())
        if user is None:
            verify_password(password or "", _dummy_hash())
            return None
        return user if verify_password(password or "", user.password_hash) else None

    def principal(self, user: User) -> Principal:
        return Principal(user=user.name, role=self.cap(user.role), method="password", mode=self.mode)


def load_config(secrets: Mapping | None = None, env: Mapping[str, str] | None = None) -> AccessConfig:
    """Read the ``[segunc]`` and ``[auth]`` sections of the secrets (a plain mapping) and ``$SEGUNC_MODE``.

    Mistakes an admin can fix (an unknown role, a plain-text password, an incomplete ``[auth]``)
    are collected in ``problems`` rather than raised, so the app can say what to fix and stay shut.
    """
    secrets = secrets or {}
    problems: list[str] = []
    try:
        mode = resolve_mode(secrets, env)
    except AccessError as exc:
        mode, problems = "server", [str(exc)]  # an unknown mode fails closed
    seg = secrets.get("segunc") or {}
    if not isinstance(seg, Mapping):
        seg, problems = {}, problems + ["[segunc] must be a table"]

    users: dict[str, User] = {}
    raw_users = seg.get("users") or {}
    if not isinstance(raw_users, Mapping):
        problems.append("[segunc.users] must be a table of [segunc.users.<name>] tables")
        raw_users = {}
    for name, spec in raw_users.items():
        where = f"[segunc.users.{name}]"
        if not isinstance(spec, Mapping):
            problems.append(f"{where} must be a table with password_hash and role")
            continue
        if "password" in spec:
            problems.append(f"{where} holds a plain-text password: replace it with password_hash from "
                            f"`python -m segunc passwd {name}`")
            continue
        role = str(spec.get("role", VIEWER)).strip().lower()
        if role not in ROLES:
            problems.append(f"{where}: unknown role {spec.get('role')!r} (use viewer or runner)")
            continue
        try:
            parse_hash(spec.get("password_hash", ""))
        except AccessError as exc:
            problems.append(f"{where}: {exc}")
            continue
        users[str(name)] = User(str(name), str(spec["password_hash"]).strip(), role)

    auth = secrets.get("auth") or {}
    oidc, providers = False, ()
    if isinstance(auth, Mapping) and auth:
        oidc = True
        providers = tuple(k for k, v in auth.items() if isinstance(v, Mapping))
        missing = [k for k in ("redirect_uri", "cookie_secret") if not auth.get(k)]
        direct = [k for k in ("client_id", "client_secret", "server_metadata_url") if auth.get(k)]
        if missing:
            problems.append(f"[auth] lacks {', '.join(missing)} (see Streamlit's st.login documentation)")
        if not providers and len(direct) < 3:
            problems.append("[auth] needs client_id, client_secret and server_metadata_url, or [auth.<provider>] tables")

    oidc_roles = seg.get("oidc") or {}
    runners = viewers = ()
    if isinstance(oidc_roles, Mapping):
        try:
            runners = _email_entries(oidc_roles.get("runners"), "[segunc.oidc] runners")
            viewers = _email_entries(oidc_roles.get("viewers"), "[segunc.oidc] viewers")
        except AccessError as exc:
            problems.append(str(exc))
    else:
        problems.append("[segunc.oidc] must be a table with runners and viewers lists")
    if oidc and not (runners or viewers):
        problems.append("[auth] is set but [segunc.oidc] lists nobody: add runners/viewers (addresses, @domains or \"*\")")

    if mode == "server" and not (users or oidc):
        problems.append("server mode needs a login: add [segunc.users.<name>] (python -m segunc passwd) or an [auth] "
                        "section for st.login")
    return AccessConfig(mode=mode, users=users, oidc=oidc, providers=providers, runners=runners, viewers=viewers,
                        problems=tuple(problems))


class LoginThrottle:
    """Failed password attempts per user name: after ``max_failures`` within ``window_s`` seconds,
    that name is locked for the rest of the window (slows password guessing from many sessions)."""

    def __init__(self, max_failures: int = 5, window_s: float = 300.0, clock=time.monotonic):
        self.max_failures, self.window_s, self.clock = int(max_failures), float(window_s), clock
        self._fails: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, name: str) -> list[float]:
        now = self.clock()
        fails = [t for t in self._fails.get(name, []) if now - t < self.window_s]
        if fails:
            self._fails[name] = fails
        else:
            self._fails.pop(name, None)
        return fails

    def wait_s(self, name: str) -> float:
        """Seconds until ``name`` may try again (0 = now)."""
        key = str(name or "").strip().lower()
        with self._lock:
            fails = self._recent(key)
            if len(fails) < self.max_failures:
                return 0.0
            return max(0.0, fails[0] + self.window_s - self.clock())

    def failed(self, name: str) -> None:
        key = str(name or "").strip().lower()
        with self._lock:
            if len(self._fails) > 10_000:  # bound the memory a flood of invented names can take
                self._fails.clear()
            self._fails.setdefault(key, []).append(self.clock())

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._fails.pop(str(name or "").strip().lower(), None)


# -------------------------------------------------------------------------------------- paths
def confine(path: str | os.PathLike, roots: Iterable[str | os.PathLike], base: str | os.PathLike | None = None) -> Path:
    """The real path of ``path`` if it lies inside one of ``roots``; else :class:`PathError`.

    A relative ``path`` is taken relative to ``base`` (default: the first root). ``..`` and symbolic
    links are resolved first (``Path.resolve``), so neither can lead outside; ``~`` in user input is
    not expanded. The path itself need not exist.
    """
    text = os.fspath(path)
    if not str(text).strip() or "\x00" in str(text):
        raise PathError(f"not a usable path: {text!r}")
    real_roots = [Path(r).expanduser().resolve() for r in roots]
    if not real_roots:
        raise PathError("no allowed folders configured")
    p = Path(text)
    if not p.is_absolute():
        p = (Path(base).expanduser().resolve() if base is not None else real_roots[0]) / p
    real = p.resolve()
    for root in real_roots:
        if real.is_relative_to(root):
            return real
    raise PathError(f"{text} is outside the folders this app may use ({', '.join(str(r) for r in real_roots)})")


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str, default: str = "file") -> str:
    """A file name for user-supplied ``name``: its last component, only ``A-Za-z0-9._-``, no leading dot."""
    base = re.split(r"[\\/]", str(name or ""))[-1]
    base = _UNSAFE.sub("_", unicodedata.normalize("NFKC", base)).lstrip(".")[:120]
    return base if base.strip("_") else default


#: largest manifest.json read for the demo banner (= segunc.store.snapshot.MAX_MANIFEST_BYTES)
MAX_MANIFEST_BYTES = 4 << 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def plain_field(value, limit: int = 80) -> str:
    """A snapshot's text field for display: one line, no control / bidi characters, at most ``limit``
    characters. Still untrusted: show it as plain text (``st.text``), never as Markdown or HTML."""
    text = " ".join(_CONTROL.sub(" ", str(value)).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def snapshot_label(store_root: str | os.PathLike) -> str | None:
    """A one-line description of the snapshot a store was imported from (its ``manifest.json``), or None.

    The manifest comes from whoever sent the snapshot: it is read only up to
    :data:`MAX_MANIFEST_BYTES`, each field is cleaned by :func:`plain_field`, and the result is
    plain text (the app shows it with ``st.text``)."""
    try:
        with open(Path(store_root) / "manifest.json", "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
        if len(raw) > MAX_MANIFEST_BYTES:
            return None
        m = json.loads(raw)
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict):
        return None
    bits = [plain_field(m[k]) for k in ("created_at",) if m.get(k)]
    if m.get("host"):
        bits.append(f"made on {plain_field(m['host'])}")
    if isinstance(m.get("results"), int) and not isinstance(m.get("results"), bool):
        bits.append(f"{m['results']} results")
    if m.get("segunc_version"):
        bits.append(f"segunc {plain_field(m['segunc_version'], 24)}")
    return ", ".join(bits) or None
