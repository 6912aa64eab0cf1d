"""segunc.settings: every location and switch read from the environment at call time, with the
documented defaults; library functions take ``offline=`` instead of reading a process-wide variable."""
from __future__ import annotations

from pathlib import Path

import pytest

from segunc import fetch, settings

pytestmark = pytest.mark.unit

VARS = ("SEGUNC_DATA", "SEGUNC_WEIGHTS", "SEGUNC_CACHE", "SEGUNC_OFFLINE", "SEGUNC_MODE")


@pytest.fixture
def clean_env(monkeypatch):
    for v in VARS:
        monkeypatch.delenv(v, raising=False)
    return monkeypatch


def test_defaults(clean_env):
    assert settings.data_dir() == Path("data/lgg/kaggle_3m")
    assert settings.weights_dir() == Path("data/weights")
    assert settings.store_dir() == Path("data/cache")
    assert settings.app_mode() == "local"
    assert settings.offline() is False


def test_environment_is_read_at_call_time_and_an_override_wins(clean_env, tmp_path):
    clean_env.setenv("SEGUNC_DATA", str(tmp_path / "d"))
    clean_env.setenv("SEGUNC_WEIGHTS", "~/w")
    clean_env.setenv("SEGUNC_CACHE", str(tmp_path / "s"))
    assert settings.data_dir() == tmp_path / "d"
    assert settings.weights_dir() == Path.home() / "w"
    assert settings.store_dir() == tmp_path / "s"
    assert settings.store_dir(tmp_path / "other") == tmp_path / "other"
    assert settings.data_dir("x") == Path("x")
    clean_env.setenv("SEGUNC_CACHE", "")  # empty = unset
    assert settings.store_dir() == Path("data/cache")


@pytest.mark.parametrize("offline, mode, expected", [
    ("1", None, True), ("yes", None, True), ("0", None, False), ("false", None, False), ("", None, False),
    (None, "demo", True), (None, "DEMO", True), ("0", "demo", True), (None, "server", False)])
def test_offline_switch(clean_env, offline, mode, expected):
    if offline is not None:
        clean_env.setenv("SEGUNC_OFFLINE", offline)
    if mode is not None:
        clean_env.setenv("SEGUNC_MODE", mode)
    assert settings.offline() is expected


def test_offline_argument_beats_the_environment(clean_env, tmp_path):
    """``offline=True`` downloads nothing with no variable set; ``offline=False`` is not overridden by it
    (the request then fails on the closed local port, not on the offline check)."""
    def no_net(*a, **k):
        raise AssertionError("a request was made in offline mode")

    clean_env.setattr("requests.get", no_net)
    with pytest.raises(fetch.OfflineError, match="offline mode"):
        fetch.download("http://127.0.0.1:9/x.bin", tmp_path / "x.bin", offline=True)
    with pytest.raises(fetch.OfflineError, match="offline mode"):
        fetch.fetch("lgg", data=tmp_path / "lgg", offline=True)
    clean_env.setenv("SEGUNC_OFFLINE", "1")
    with pytest.raises(AssertionError, match="a request was made"):
        fetch.download("http://127.0.0.1:9/x.bin", tmp_path / "y.bin", offline=False, retries=0)


def test_app_data_falls_back_to_the_shipped_sample_only_when_nothing_is_configured(clean_env, tmp_path):
    assert settings.SAMPLE_DATA.is_dir()  # shipped in the repository
    clean_env.setattr(settings, "DEFAULT_DATA", tmp_path / "missing")
    assert settings.using_sample() and settings.app_data_dir() == settings.SAMPLE_DATA
    assert settings.data_dir() == tmp_path / "missing"  # downloads still go to the data folder, never the sample
    (tmp_path / "missing").mkdir()
    assert not settings.using_sample() and settings.app_data_dir() == tmp_path / "missing"
    clean_env.setenv("SEGUNC_DATA", str(tmp_path / "configured_but_absent"))
    assert not settings.using_sample() and settings.app_data_dir() == tmp_path / "configured_but_absent"


def test_ray_address_for_the_run_page(monkeypatch):
    """The cluster the Run page offers: $SEGUNC_RAY_ADDRESS, else Ray's own $RAY_ADDRESS, else none."""
    monkeypatch.delenv("SEGUNC_RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert settings.ray_address() is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert settings.ray_address() == "10.0.0.5:6379"
    monkeypatch.setenv("SEGUNC_RAY_ADDRESS", " head.lab:6380 ")
    assert settings.ray_address() == "head.lab:6380"
    monkeypatch.setenv("SEGUNC_RAY_ADDRESS", "  ")  # blank = unset
    assert settings.ray_address() == "10.0.0.5:6379"
