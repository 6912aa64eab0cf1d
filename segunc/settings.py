"""Where things live and which switches are on: the one place that reads the environment.

Bottom layer (standard library only). Every function reads ``os.environ`` when called, so a
test or a process that changes a variable sees the change at once.

============  ==================  ==========================================================
function      variable            default
============  ==================  ==========================================================
data_dir      ``SEGUNC_DATA``     ``data/lgg/kaggle_3m`` (the LGG ``kaggle_3m`` folder)
app_data_dir  ``SEGUNC_DATA``     as data_dir, but the shipped sample when neither exists
weights_dir   ``SEGUNC_WEIGHTS``  ``data/weights`` (the folder every backend searches)
store_dir     ``SEGUNC_CACHE``    ``data/cache`` (the results store)
offline       ``SEGUNC_OFFLINE``  off (also on when ``SEGUNC_MODE=demo``): download nothing
app_mode      ``SEGUNC_MODE``     ``local`` (``server`` | ``demo``; the app may also read secrets)
ray_address   ``RAY_ADDRESS``     none: the Ray cluster the Run page offers (``SEGUNC_RAY_ADDRESS`` first)
============  ==================  ==========================================================

Relative defaults are relative to the current directory. The shipped LGG sample
(``data/sample/kaggle_3m`` in the repository, :mod:`segunc.data.sample`) is found by path here, so this
module stays below every other; :func:`app_data_dir` falls back to it only when no data folder is
configured and the default one is missing (never for downloads, which go to :func:`data_dir`).
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA = Path("data/lgg/kaggle_3m")
DEFAULT_WEIGHTS = Path("data/weights")
DEFAULT_STORE = Path("data/cache")
APP_MODES = ("local", "server", "demo")
#: The shipped sample's ``kaggle_3m`` folder (see :mod:`segunc.data.sample`).
SAMPLE_DATA = Path(__file__).resolve().parents[1] / "data" / "sample" / "kaggle_3m"

__all__ = ["APP_MODES", "DEFAULT_DATA", "DEFAULT_STORE", "DEFAULT_WEIGHTS", "SAMPLE_DATA", "app_data_dir", "app_mode",
           "data_dir", "offline", "ray_address", "store_dir", "using_sample", "weights_dir"]


def _folder(override, var: str, default: Path) -> Path:
    value = override if override is not None else (os.environ.get(var) or default)
    return Path(value).expanduser()


def data_dir(override: Path | str | None = None) -> Path:
    """The LGG ``kaggle_3m`` folder: ``override``, else ``$SEGUNC_DATA``, else ``data/lgg/kaggle_3m``."""
    return _folder(override, "SEGUNC_DATA", DEFAULT_DATA)


def _sample_present() -> bool:
    try:
        return SAMPLE_DATA.is_dir() and any(SAMPLE_DATA.iterdir())
    except OSError:
        return False


def using_sample() -> bool:
    """True when the app reads the shipped sample: ``$SEGUNC_DATA`` unset, the default data folder
    missing, and the sample present."""
    return not os.environ.get("SEGUNC_DATA") and not DEFAULT_DATA.exists() and _sample_present()


def app_data_dir() -> Path:
    """The data folder the app and its jobs read: :func:`data_dir`, or the shipped sample when
    :func:`using_sample` (a fresh clone shows results offline). Downloads use :func:`data_dir`."""
    return SAMPLE_DATA if using_sample() else data_dir()


def weights_dir(override: Path | str | None = None) -> Path:
    """The weights folder: ``override``, else ``$SEGUNC_WEIGHTS``, else ``data/weights``."""
    return _folder(override, "SEGUNC_WEIGHTS", DEFAULT_WEIGHTS)


def store_dir(override: Path | str | None = None) -> Path:
    """The results store folder: ``override``, else ``$SEGUNC_CACHE``, else ``data/cache``."""
    return _folder(override, "SEGUNC_CACHE", DEFAULT_STORE)


def ray_address() -> str | None:
    """The Ray cluster (``host:port`` of its head) the app's Run page sends sweeps to:
    ``$SEGUNC_RAY_ADDRESS``, else ``$RAY_ADDRESS`` (Ray's own variable), else None (no cluster)."""
    for var in ("SEGUNC_RAY_ADDRESS", "RAY_ADDRESS"):
        value = (os.environ.get(var) or "").strip()
        if value:
            return value
    return None


def app_mode() -> str:
    """``$SEGUNC_MODE`` lower-cased, or ``local`` (not validated here; see :mod:`segunc.access`)."""
    return (os.environ.get("SEGUNC_MODE") or "local").strip().lower()


def offline() -> bool:
    """True when ``$SEGUNC_OFFLINE`` is set (not ``0`` / ``false`` / ``no``) or the app mode is ``demo``:
    no download is tried."""
    flag = os.environ.get("SEGUNC_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")
    return flag or app_mode() == "demo"
