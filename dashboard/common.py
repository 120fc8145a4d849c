"""What the pages share: the one cached ensemble, cached study runs and reads, help texts.

The ensemble is loaded once per server process by `load_models` (a `st.cache_resource`) and never
mutated; the first load shows its steps on the page (`get_ensemble`). Study results are cached per
upload and CAM method, so moving a slider or switching page does not recompute anything. No widget
is created inside a cached function.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

import pandas as pd
import streamlit as st

from mura_core import data_roots, imaging, installed, reports, results
from mura_core.datasets import stats

LOG = logging.getLogger("mura_app")

INSTALL_HELP = """\
**How to install an ensemble**

- Copy a folder written by `Ensemble.save` (for example a run folder from `train/`) into the
  repository's `weights/` folder, so that `weights/manifest.json` and the member `.keras` files
  sit side by side; or
- point the app at another folder: `MURA_WEIGHTS=/path/to/ensemble streamlit run app.py`.

Then reload this page. The **Dataset explorer** and **Evaluation** pages work without models.
"""



M_ARENA_MAX, M_MMAP_THRESHOLD = -8, -3  # glibc's mallopt parameters (malloc.h)
ARENA_MAX = 2
MMAP_THRESHOLD = 128 * 1024  # glibc's starting value, kept fixed
MEMORY_BOUNDS = (
    # Streamlit runs each session's script in its own thread, and glibc gives each new thread its own
    # heap (up to 8 per core) that it keeps after the thread is done: a server's memory then grows with
    # the number of sessions it has seen. Two heaps bound that.
    ("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENA_MAX),
    # glibc maps each block of 128 KiB or more (an image, a map, a model's activations) on its own and
    # returns it when freed, but raises that bound to the size of every such block freed, up to 32 MiB:
    # after a few studies their arrays come from the heaps instead, where freed space stays with the
    # process. A fixed bound keeps them mapped: a 40-session soak grew the ONNX server by 38 MiB with it,
    # 140 MiB without, and the warm study's time did not change.
    ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
)
"""(glibc's environment variable, mallopt parameter, value) of each bound the dashboard sets; an operator's
environment variable wins."""


def _glibc():
    """The C library when it is glibc (Linux), else None: `MEMORY_BOUNDS` are glibc's."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()
if _LIBC is not None:
    for _variable, _parameter, _value in MEMORY_BOUNDS:
        if _variable not in os.environ:
            _LIBC.mallopt(_parameter, _value)


def release_free_memory() -> None:
    """Hand the memory that freed objects leave in the C heap back to the system (glibc only)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


@st.cache_resource(show_spinner=False, max_entries=2)
def load_models(folder: str, stamp: str, runtime: str | None = None):
    """Load and warm up the ensemble in `folder` on `runtime` (`onnx_runtime.RUNTIMES`; None: `$MURA_RUNTIME`
    or auto); `stamp` changes when the weights are replaced."""
    from mura_core.ensemble import load_ensemble

    ensemble = load_ensemble(folder, runtime=runtime)
    ensemble.warm_up()
    return ensemble


def configured_runtime() -> str | None:
    """The runtime the operator asks for: `MURA_RUNTIME`, else `runtime` in secrets.toml, else None (auto)."""
    from mura_core.onnx_runtime import RUNTIME_ENV, RUNTIME_SECRET

    if os.environ.get(RUNTIME_ENV):
        return None  # load_ensemble reads the environment itself
    try:
        value = st.secrets.get(RUNTIME_SECRET)
    except Exception:  # no secrets.toml, or an unreadable one: auto
        value = None
    return str(value) if value else None


_LOADED: set[tuple] = set()  # (stamp, runtime) of the ensembles `load_models` holds in this server process


def get_ensemble():
    """The installed ensemble, or (None, message) saying why it cannot be used.

    The first call in a server process shows the loading steps on the page (on ONNX Runtime under a
    second; on Keras, importing TensorFlow alone takes seconds); later calls return the cached ensemble
    at once. The runtime is `configured_runtime()`'s.

    Returns:
        (ensemble or None, error message or "").
    """
    folder = installed.weights_folder()
    stamp, runtime = installed.folder_stamp(folder), configured_runtime()
    if (stamp, runtime) in _LOADED:
        return load_models(str(folder), stamp, runtime), ""
    with st.status("Loading the models (once per server process)...", expanded=True) as status:
        from mura_core.installed import EnsembleLoadError, read_manifest, weights_installed

        if not weights_installed(folder):
            status.update(label="No ensemble is installed", state="error", expanded=False)
            return None, "No ensemble is installed: the weights folder holds no manifest.json."
        try:
            members = read_manifest(folder)["members"]
            n_members = len(members)
            on_onnx = runtime != "keras" and os.environ.get("MURA_RUNTIME") != "keras" and \
                all(m.get("onnx") for m in members)
            status.write("Opening the models' ONNX graphs (ONNX Runtime)..." if on_onnx
                         else "Importing TensorFlow and Keras...")
            status.write(f"Loading {n_members} models, checking their checksums, and warming them up...")
            ensemble = load_models(str(folder), stamp, runtime)
        except Exception as exc:
            status.update(label="The models could not be loaded", state="error", expanded=False)
            if isinstance(exc, EnsembleLoadError):
                return None, f"The ensemble could not be loaded: {exc}"
            LOG.exception("loading the ensemble failed")  # never a traceback in the UI; the log keeps it
            return None, f"The ensemble could not be loaded ({type(exc).__name__}: {exc})."
        status.update(label=f"{n_members} models loaded", state="complete", expanded=False)
    _LOADED.add((stamp, runtime))
    return ensemble, ""


@st.cache_data(max_entries=8, ttl=3600, show_spinner=False)
def run_study(_ensemble, ensemble_key: str, files: tuple[tuple[str, bytes], ...], method: str):
    """Predict and explain one study; cached on the ensemble key, the files' bytes and the method."""
    result = _ensemble.predict_study([data for _, data in files], explain=True, method=method,
                                     names=[name for name, _ in files])
    release_free_memory()  # the decoded images and the models' activations of this study
    return result


def configured_roots() -> list[data_roots.DataRoot]:
    """The dataset roots the operator allows: `MURA_DATA_ROOTS`, then `data_roots` in secrets.toml.

    Entries that are left out (not absolute, not a folder) are logged on the server, never shown.
    """
    try:
        secrets = st.secrets.get(data_roots.ROOTS_SECRET)
    except Exception:  # no secrets.toml, or an unreadable one: the environment alone decides
        secrets = None
    roots, problems = data_roots.allowed_roots(None, secrets)
    for problem in problems:
        LOG.warning("%s: %s", data_roots.ROOTS_VARIABLE, problem)
    return roots


@st.cache_data(ttl=600, max_entries=4, show_spinner="Indexing the dataset...")
def index_root(root: str, format: str):
    """`index_dataset(root, format)`, cached for ten minutes."""
    from mura_core.datasets import index_dataset

    return index_dataset(root, format=format)


@st.cache_data(ttl=600, max_entries=4, show_spinner="Reading image sizes...")
def image_sizes(paths: tuple[str, ...]) -> pd.DataFrame:
    """Image sizes of `paths` (headers only), cached."""
    return stats.image_sizes(paths)


@st.cache_data(max_entries=1000, show_spinner=False)
def thumbnail(path: str, side: int):
    """A cached small grayscale copy of the image at `path`."""
    return imaging.thumbnail(path, side)


@st.cache_data(max_entries=4, ttl=600, show_spinner="Reading the installed ensemble's manifest...")
def _manifest_info(folder: str, stamp: str) -> dict:
    from mura_core.installed import EnsembleLoadError, read_manifest

    try:
        return dict(read_manifest(folder).get("info") or {})
    except EnsembleLoadError:
        return {}


def installed_info() -> dict:
    """The installed ensemble's manifest `info` (training data, coverage, ...); {} when none is installed."""
    folder = installed.weights_folder()
    return _manifest_info(str(folder), installed.folder_stamp(folder))


@st.cache_data(max_entries=4, show_spinner=False)
def read_report(path: str, stamp: float) -> dict:
    """`reports.load_report(path)`, cached on the file's modification time."""
    return reports.load_report(path)


@st.cache_data(ttl=600, max_entries=2, show_spinner="Reading and hashing every image...")
def leakage_report(table: pd.DataFrame):
    """`leakage.find_leakage(table)` (identical files, near-duplicates, patients across splits), cached."""
    from mura_core.datasets import leakage

    return leakage.find_leakage(table)


@st.cache_data(ttl=600, max_entries=2, show_spinner="Looking up each image's most alike training picture...")
def memory_summary(table: pd.DataFrame) -> pd.DataFrame:
    """`leakage.memory_summary` of the cached leakage report (the memory baseline per split), cached."""
    from mura_core.datasets import leakage

    return leakage.memory_summary(leakage_report(table), table["label"])


def download_section(result, body_part: str, body_part_source: str, alpha: float, study) -> None:
    """The Diagnose page's downloads of a study's result (JSON, formula-safe CSV, PDF); all carry its warning.

    `study()` gives the result again (`run_study`, cached): the PDF is made from it when its button is
    clicked, so the session holds no second reference to the result's images and maps.
    """
    from dashboard.pdf_download import pdf_report

    st.subheader("Download the result")
    json_col, csv_col, regions_col, pdf_col = st.columns([1, 1, 1, 1])
    json_col.download_button("Study result (JSON)", results.study_json(result, body_part, body_part_source),
                             file_name="study_result.json", mime="application/json", on_click="ignore",
                             icon=":material/download:")
    csv_col.download_button("Per-image table (CSV)", results.study_csv(result, body_part),
                            file_name="study_result.csv", mime="text/csv", on_click="ignore",
                            icon=":material/download:")
    regions_col.download_button("Suspected regions (CSV)", results.region_csv(result, body_part),
                                file_name="study_regions.csv", mime="text/csv", on_click="ignore",
                                icon=":material/download:",
                                help="One row per suspected region: image, box corners x0, y0, x1, y1 in the "
                                     "image's pixels, score, and whether it is shown as a finding.")
    pdf_col.download_button("PDF", pdf_report(study, body_part, body_part_source, alpha),
                            file_name="study_report.pdf", mime="application/pdf", on_click="ignore",
                            icon=":material/picture_as_pdf:",
                            help="A report to hand out: verdict, probabilities, heatmaps, the model and the "
                                 "statement; no patient identifier and no file name.")
    st.caption("The JSON and CSV downloads hold no pixels and no DICOM identifiers; file names are kept as given "
               "(CSV text cells that a spreadsheet would run as a formula start with a quote '). The PDF holds "
               "neither patient identifiers nor file names.")
