"""segunc: pixel-wise uncertainty for pretrained medical segmentation models — the app.

    python app.py [streamlit options]       (what `make app` runs; `streamlit run app.py` works too)

Data from ``$SEGUNC_DATA`` (default data/lgg/kaggle_3m), weights from ``$SEGUNC_WEIGHTS``
(default data/weights), results store at ``$SEGUNC_CACHE`` (default data/cache).
The pages are thin: they read the store and call :mod:`segunc.analysis.stats` and :mod:`segunc.viz`.
"""
from __future__ import annotations

import importlib
import sys
import threading
import time
from pathlib import Path

import streamlit as st
from streamlit import runtime

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # `segunc` and `pages._*` import from the repository root
    sys.path.insert(0, str(ROOT))

#: what the first view of any page needs, imported by ``python app.py`` before the server starts
PRELOAD = ("pandas", "numpy", "plotly.graph_objects", "PIL.Image", "segunc.viz", "segunc.report.overview",
           "segunc.store", "segunc.analysis.stats")


def _serve() -> int:
    """``python app.py [options]``: import :data:`PRELOAD` (0.4–0.5 s on a 2-core CPU) before the server
    starts, so that the first visitor's landing page does not wait for it, then run ``streamlit run
    app.py [options]`` in this process (the script then finds those modules loaded)."""
    for name in PRELOAD:  # libraries only: a page module's st.cache_* needs the running server
        importlib.import_module(name)
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(Path(__file__).resolve()), *sys.argv[1:]]
    return cli.main()


if __name__ == "__main__" and not runtime.exists():  # run by Python, not by Streamlit's script runner
    sys.exit(_serve())


from pages._access import account_menu, hidden_pages, require_access  # noqa: E402
from pages._filters import keep_state  # noqa: E402
from pages._settings import PAGE_FILES  # noqa: E402
from segunc import settings  # noqa: E402


def _favicon():
    """A blurred blue disc, drawn here: a ``:material/…:`` page icon is fetched from fonts.gstatic.com,
    and the app makes no request outside its own server (offline demo)."""
    import numpy as np
    from PIL import Image

    r = np.hypot(*(np.mgrid[:64, :64] - 31.5))
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = (0, 114, 178)
    rgba[..., 3] = np.clip((30 - r) / 14, 0, 1) ** 0.8 * 255
    return Image.fromarray(rgba, "RGBA")


#: what the other pages' first view loads: scipy's statistics and image filters (Review, Compare's contours),
#: then PyTorch and the pipeline's code (the forms of Run and Your image, which a demo does not show; Set-up
#: lists the backends without PyTorch)
WARM_UP = ("scipy.stats", "scipy.ndimage", "segunc.analysis.errors", "segunc.analysis.review", "torch",
           "segunc.pipeline")
MODEL_CODE = ("torch", "segunc.pipeline")
#: seconds without a page run before the warm-up imports the next module: a page's images and charts
#: are fetched after its script ends, and an import holds the interpreter while they are served
IDLE_S = 1.5


class _Activity:
    """Page runs in progress and when the last one ended (one per server, shared by the sessions)."""

    def __init__(self):
        self.running = 0
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def __enter__(self):
        with self.lock:
            self.running += 1
        return self

    def __exit__(self, *exc):
        with self.lock:
            self.running -= 1
            self.last = time.monotonic()

    def idle_for(self) -> float:
        with self.lock:
            return 0.0 if self.running else time.monotonic() - self.last


@st.cache_resource(show_spinner=False)
def _activity() -> _Activity:
    return _Activity()


def _import_all(activity: _Activity, names=WARM_UP) -> None:
    for name in names:
        while activity.idle_for() < IDLE_S:  # never compete with a page being shown
            time.sleep(0.2)
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a page that needs it says what is wrong
            pass


@st.cache_resource(show_spinner=False)
def _warm_up() -> threading.Thread:
    """Once per server: load in the background what the other pages import, one module at a time
    whenever no page has run for :data:`IDLE_S` seconds, so that a later first visit does not wait for it
    (a page that needs a module still loading waits for that import only; Python's import locks make
    the two one import)."""
    names = [n for n in WARM_UP if not (settings.app_mode() == "demo" and n in MODEL_CODE)]  # a demo runs nothing
    thread = threading.Thread(target=_import_all, args=(_activity(), names), name="segunc-warm-up", daemon=True)
    thread.start()
    return thread


st.set_page_config(page_title="segunc · segmentation uncertainty", page_icon=_favicon(), layout="wide",
                   initial_sidebar_state="expanded")
st.markdown(
    """<style>
    .block-container, [data-testid="stMainBlockContainer"] {padding-top: 1.6rem; padding-bottom: 2rem; padding-left: 2rem; padding-right: 2rem;}
    h1 {font-size: 2.2rem !important; padding-top: 0.2rem !important;}
    [data-testid="stImageCaption"] {font-size: 0.78rem; line-height: 1.25;}
    [data-testid="stMetricValue"] {font-size: 1.6rem;}
    </style>""",
    unsafe_allow_html=True,
)
who = require_access()  # server mode: the sign-in page until logged in (stops here); demo mode: its banner
keep_state()

demo = settings.app_mode() == "demo"  # a defence demo opens on what the snapshot holds, not on the set-up
overview = st.Page("pages/presentation.py", title="Overview", icon=":material/slideshow:", url_path="overview",
                   default=demo)
pages = {
    "": ([overview] if demo else []) + [st.Page(PAGE_FILES["home"], title="Set-up", icon=":material/home:",
                                                default=not demo)],
    "Data and runs": [
        st.Page(PAGE_FILES["dataset"], title="Dataset", icon=":material/photo_library:", url_path="dataset"),
        st.Page(PAGE_FILES["run"], title="Run", icon=":material/play_circle:", url_path="run"),
        st.Page(PAGE_FILES["upload"], title="Your image", icon=":material/upload_file:", url_path="upload"),
    ],
    "Results": ([] if demo else [overview]) + [
        st.Page(PAGE_FILES["compare"], title="Compare a slice", icon=":material/view_column:", url_path="compare"),
        st.Page(PAGE_FILES["metrics"], title="Metrics", icon=":material/bar_chart:", url_path="metrics"),
        st.Page(PAGE_FILES["calibration"], title="Calibration", icon=":material/tune:", url_path="calibration"),
        st.Page(PAGE_FILES["review"], title="Review & errors", icon=":material/fact_check:", url_path="review"),
    ],
}
hide = hidden_pages(who)  # a viewer gets no Run / upload page (and those pages refuse viewers themselves)
pages = {section: [p for p in group if p.url_path not in hide] for section, group in pages.items()}
page = st.navigation(pages)
account_menu(who)  # signed-in user and Log out, in the sidebar
with _activity():
    page.run()
_warm_up()
