"""The dashboard: one AppTest run per page (tiny ensemble from `tiny_weights`) and charts.py unit tests."""

from __future__ import annotations

import base64
import io
import json
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from mura_core import body_parts, charts, decision, imaging, installed, localization, reports, results, vocabulary
from mura_core.datasets import stats
from mura_core.heatmaps import heatmap_peak
from tests.conftest import TINY_MEMBERS, TINY_THRESHOLD

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 120


def _app(monkeypatch, weights: Path) -> AppTest:
    monkeypatch.setenv("MURA_WEIGHTS", str(weights))
    return AppTest.from_file(APP, default_timeout=TIMEOUT).run()


def _page(at: AppTest, page: str) -> AppTest:
    at.switch_page("app.py" if page == "diagnose" else f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for kind in ("info", "warning", "error", "success") for e in getattr(at, kind)]
    parts += [h.value for kind in ("title", "header", "subheader") for h in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def _n_images(at: AppTest) -> int:
    return sum(len(image.value) for image in at.image)


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


@pytest.fixture
def count_studies(monkeypatch):
    """Methods of the studies run through Ensemble.predict_study (warm-up left out)."""
    from mura_core.ensemble import Ensemble

    calls = []
    original = Ensemble.predict_study

    def counting(self, *args, **kwargs):
        if "names" in kwargs:  # the app's study runs, not the warm-up
            calls.append(kwargs.get("method"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Ensemble, "predict_study", counting)
    return calls


# ------------------------------------------------------------------------------------ pages


def test_diagnose_sample_study_with_heatmaps(monkeypatch, tiny_weights, count_studies):
    at = _app(monkeypatch, tiny_weights)
    assert not at.exception
    assert "Upload the radiographs of one study" in _texts(at)

    _button(at, "Try a sample study").click().run()
    assert not at.exception, [e.value for e in at.exception]
    text = _texts(at)
    assert "Abnormal (ensemble" in text or "Normal (ensemble" in text
    assert "threshold 0.45" in text
    assert "not a diagnosis" in text
    assert "Body part:** Hand" in text
    assert _n_images(at) == 2 * 4  # two images x (original, fused map, two members)
    captions = [c for image in at.image for c in image.captions]
    fused = [c for c in captions if c.startswith("Ensemble (fused map)")]
    assert len(fused) == 2 and any(c.endswith("· + marks the peak") for c in fused)  # (a flat map has none)
    assert len(at.get("plotly_chart")) == 1
    assert [e.label for e in at.expander][-2:] == [
        f"Look closely at image {n}: one map, large and zoomable" for n in (1, 2)]

    at.session_state["look_closely_1"] = True  # open the first image's large view
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    zoom = at.get("plotly_chart")[-1].proto
    assert len(at.get("plotly_chart")) == 2 and json.loads(zoom.config)["scrollZoom"] is True
    spec = json.loads(zoom.spec)
    assert spec["data"][0]["type"] == "image" and spec["layout"]["title"]["text"].startswith("Ensemble (fused map)")
    choice = at.radio(key="zoom_map_1")
    assert choice.options[0] == "Ensemble (fused map)" and set(choice.options[1:]) == set(TINY_MEMBERS)
    choice.set_value(choice.options[-1]).run()  # a member's map, its own peak
    assert not at.exception, [e.value for e in at.exception]
    assert json.loads(at.get("plotly_chart")[-1].proto.spec)["layout"]["title"]["text"].startswith(choice.options[-1])
    assert count_studies == ["gradcam"]
    downloads = {b.proto.label for b in at.get("download_button")}
    assert downloads == {"Study result (JSON)", "Per-image table (CSV)", "Suspected regions (CSV)", "PDF"}
    assert count_studies == ["gradcam"]

    # The suspected regions: counted per image, drawn on the large view with their scores, behind a toggle.
    assert "suspected region(s)" in _texts(at)
    shapes = spec["layout"].get("shapes", [])
    regions = [shape for shape in shapes if shape.get("name", "").startswith("region ")]
    assert regions, "no region drawn on the large view"
    scores = {a["text"] for a in spec["layout"]["annotations"]}
    assert {shape["name"].removeprefix("region ") for shape in regions} <= scores
    at.toggle(key="show_regions").set_value(False).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [s for s in json.loads(at.get("plotly_chart")[-1].proto.spec)["layout"].get("shapes", [])
                if s.get("name", "").startswith("region ")]
    at.toggle(key="show_regions").set_value(True).run()

    at.slider[0].set_value(0.7).run()  # opacity: redraw only
    assert count_studies == ["gradcam"]
    _page(at, "about")
    _page(at, "diagnose")  # the study survives a page switch, from the cache
    assert "ensemble" in _texts(at) and _n_images(at) == 8
    assert count_studies == ["gradcam"]

    method = next(s for s in at.selectbox if s.label == "Heatmap method")
    method.set_value("layercam").run()
    assert not at.exception
    assert count_studies == ["gradcam", "layercam"]
    assert "LayerCAM" in _texts(at)


def test_diagnose_bad_file_is_a_warning(monkeypatch, tiny_weights):
    at = _app(monkeypatch, tiny_weights)
    at.selectbox(key="sample_pick").set_value("demo-one-unreadable-file")
    _button(at, "Try a sample study").click().run()
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any("truncated.jpg" in w for w in warnings), warnings
    assert "ensemble" in _texts(at)
    assert _n_images(at) == 4  # the readable image is still shown


@pytest.fixture
def covered_weights(tiny_weights, tmp_path) -> Path:
    """`tiny_weights` whose manifest records a coverage (hand and shoulder fractures)."""
    import shutil

    folder = tmp_path / "covered"
    shutil.copytree(tiny_weights, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["info"]["coverage"] = {"dataset": "FracAtlas", "body_parts": ["XR_HAND", "XR_SHOULDER"],
                                    "positive_label": "fracture", "n_images": 100}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _upload(at: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    """What the file uploader's callback stores, then a rerun."""
    at.session_state["study_files"] = tuple(files)
    at.session_state["study_origin"] = "upload"
    return at.run()


def test_diagnose_warns_outside_the_coverage(monkeypatch, covered_weights):
    at = _app(monkeypatch, covered_weights)
    radiograph = (covered_weights / "samples" / "sample1.jpg").read_bytes()
    _upload(at, [("XR_HUMERUS.png", radiograph)])
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("Humerus is outside the installed model's training data") and
               "hand and shoulder radiographs of FracAtlas (100 images)" in w and "not meaningful" in w
               for w in warnings), warnings

    # No headline verdict: the scores, heatmaps and table stay behind an explicit control.
    text = _texts(at)
    assert "No verdict: humerus is outside the model's training data" in text
    assert "(ensemble " not in text and "ensemble probability" not in text
    assert not at.get("plotly_chart") and _n_images(at) == 0
    show = at.toggle(key="show_scores_anyway")
    assert show.proto.default is False and "not meaningful" in show.label
    downloads = {d.proto.label: d for d in at.get("download_button")}
    assert set(downloads) == {"Study result (JSON)", "Per-image table (CSV)", "Suspected regions (CSV)",
                              "PDF"}  # they carry the warning
    show.set_value(True).run()
    assert not at.exception
    assert at.get("plotly_chart") and _n_images(at) > 0
    assert "the scores below are not meaningful" in _texts(at)
    assert "(ensemble " not in _texts(at)  # still no headline verdict

    part = next(s for s in at.selectbox if s.label == "Body part")
    part.set_value("XR_HAND").run()  # the user says it is a hand: inside the coverage
    assert not any("outside the installed model" in w.value for w in at.warning)
    assert "(ensemble " in _texts(at) and "No verdict" not in _texts(at)
    next(s for s in at.selectbox if s.label == "Body part").set_value("OTHER").run()  # from the new page
    assert any(w.value.startswith("Body part unknown") for w in at.warning)
    assert "No verdict: the body part is unknown" in _texts(at)


def test_outside_the_coverage_exports_carry_the_warning():
    from mura_core.coverage import Coverage, verdict_withheld

    coverage = Coverage(dataset="FracAtlas", body_parts=("XR_HAND",), positive_label="fracture")
    result = _study()
    result.coverage = coverage
    assert verdict_withheld(coverage, "XR_HAND") == "" and verdict_withheld(None, "XR_HUMERUS") == ""
    assert verdict_withheld(coverage, "") == "No verdict: the body part is unknown"
    exported = json.loads(results.study_json(result, "XR_WRIST"))
    assert exported["verdict"] is None and exported["study_probability"] == pytest.approx(0.7)
    assert exported["verdict_text"] == exported["verdict_withheld"] == \
        "No verdict: wrist is outside the model's training data"
    assert exported["warning"].startswith("Wrist is outside the installed model's training data")
    table = results.study_table(result, "XR_WRIST")
    columns = list(table.columns)
    assert columns[columns.index("ensemble") + 1] == "study_warning"  # the warning beside the scores
    assert set(table["verdict"]) == {""} and table["ensemble"].iloc[0] == pytest.approx(0.7)
    assert results.study_table(result, "XR_HAND")["verdict"].iloc[0] == "abnormal"
    # the suspected regions: none is a finding where the verdict is withheld; the warning goes with them
    from mura_core.regions import Region

    result.images[0].regions = [Region(1, 2, 10, 12, 0.9), Region(20, 5, 30, 15, 0.1)]
    result.region_threshold = 0.5
    outside = pd.read_csv(io.StringIO(results.region_csv(result, "XR_WRIST")))
    assert list(outside.columns) == list(results.REGION_COLUMNS) and len(outside) == 2
    assert not outside["finding"].any() and outside["study_warning"].str.startswith("Wrist is outside").all()
    inside = results.region_table(result, "XR_HAND")
    assert inside["finding"].tolist() == [True, False] and inside["x1"].tolist() == [10, 30]
    assert results.study_table(result, "XR_HAND")[["regions", "findings"]].iloc[0].tolist() == [2, 1]
    assert [r["finding"] for r in json.loads(results.study_json(result, "XR_WRIST"))["images"][0]["regions"]] == \
        [False, False]


def test_diagnose_refuses_a_study_beyond_the_limits(monkeypatch, tiny_weights, count_studies):
    from mura_core.imaging import MAX_STUDY_FILES

    at = _upload(_app(monkeypatch, tiny_weights), [(f"{i}.png", b"x") for i in range(MAX_STUDY_FILES + 1)])
    assert not at.exception
    assert any(f"at most {MAX_STUDY_FILES} are read" in e.value for e in at.error)
    assert count_studies == []  # nothing was read


def test_diagnose_warns_on_a_colour_picture(monkeypatch, covered_weights):
    import io

    photo = np.zeros((96, 128, 3), np.uint8)
    photo[:, :64], photo[:, 64:] = (224, 172, 140), (60, 140, 60)
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "PNG")
    at = _upload(_app(monkeypatch, covered_weights), [("XR_HAND_photo.png", buffer.getvalue())])
    assert not at.exception
    assert any("XR_HAND_photo.png is in strong colour" in w.value for w in at.warning)


def test_no_weights(monkeypatch, tmp_path):
    at = _app(monkeypatch, tmp_path)
    assert not at.exception
    assert any("No ensemble is installed" in e.value for e in at.error)
    assert "MURA_WEIGHTS" in _texts(at)
    assert not at.button  # no sample study without models

    text = _texts(_page(at, "dataset"))
    assert not at.text_input  # no path is ever typed
    assert "No dataset folder is shared on this server" in text and "MURA_DATA_ROOTS" in text
    assert "No sample images are installed" in text
    assert "No evaluation report is installed" in _texts(_page(at, "evaluation"))
    assert "No ensemble is installed" in _texts(_page(at, "about"))


def test_broken_weights_are_explained(monkeypatch, tmp_path):
    member = {"name": "a", "architecture": "mobilenetv2", "file": "a.keras", "input_size": 64}
    manifest = {"format": "mura_core.ensemble/1", "threshold": 0.5, "members": [member]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    at = _app(monkeypatch, tmp_path)
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("a.keras" in e and "missing" in e for e in errors), errors
    assert "MURA_WEIGHTS" in _texts(at)


def test_streamlit_config(monkeypatch):
    """The security settings: XSRF protection, no tracebacks in the browser, the upload size limit."""
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == 50  # MB per file, as the README and the uploader say
    assert config["server"]["enableXsrfProtection"] is True
    assert config["server"].get("enableCORS", True) is True  # Streamlit's default; XSRF needs it on
    assert config["client"]["showErrorDetails"] in (False, "none")  # "none" is the current spelling
    assert config["browser"]["gatherUsageStats"] is False
    # What the server really runs with, read back through Streamlit's own option parser.
    from streamlit import config as st_config

    monkeypatch.chdir(ROOT)  # Streamlit reads .streamlit/config.toml from the working folder
    options = st_config.get_config_options(force_reparse=True, options_from_flags={})
    assert options["server.enableXsrfProtection"].value is True
    assert options["server.maxUploadSize"].value == 50
    assert options["client.showErrorDetails"].value in (False, "none")


def test_evaluation_page(monkeypatch, tiny_weights, fake_report):
    at = _page(_app(monkeypatch, tiny_weights), "evaluation")
    headers = [h.value for h in at.header]
    for header in ("Models compared", "Per body part", "ROC curves", "Confusion matrices", "Calibration",
                   "Threshold explorer", "Training history", "Localization", "Suspected regions as a detector"):
        assert header in headers
    assert "Not in this report." not in _texts(at)
    assert {"Is the lesion map a probability?", "Sanity check: model randomization"} <= {h.value for h in at.subheader}
    assert "the installed ensemble's report" in _texts(at)
    assert str(tiny_weights) not in _texts(at)  # no server path in the browser
    assert len(at.get("plotly_chart")) >= 10
    assert {m.label for m in at.metric} >= {"Sensitivity", "Specificity", "Precision (PPV)"}
    # The explorer opens at the installed threshold, where it agrees with the report's ensemble row.
    explorer = at.select_slider[0]
    assert explorer.value == pytest.approx(TINY_THRESHOLD)
    ensemble = fake_report["study_level"]["ensemble"]  # the page shows study level when the report has it
    before = next(m for m in at.metric if m.label == "Sensitivity").value
    assert float(before) == pytest.approx(ensemble["recall"], abs=5e-4)
    specificity = next(m for m in at.metric if m.label == "Specificity").value
    assert float(specificity) == pytest.approx(ensemble["specificity"], abs=5e-4)
    explorer.set_value(0.05).run()
    assert not at.exception
    assert float(next(m for m in at.metric if m.label == "Sensitivity").value) >= float(before)


def test_evaluation_minimal_report(monkeypatch, tmp_path, fake_report):
    minimal = {k: fake_report[k] for k in ("created", "data", "threshold", "members", "image_level")}
    (tmp_path / "report.json").write_text(json.dumps(minimal))
    at = _page(_app(monkeypatch, tmp_path), "evaluation")
    text = _texts(at)
    assert "Not in this report" in text
    assert "Models compared" in [h.value for h in at.header]
    assert len(at.get("plotly_chart")) == 3  # the confusion matrices of two members and the ensemble
    (tmp_path / "report.json").write_text("{not json")
    at = _page(_app(monkeypatch, tmp_path), "evaluation")
    assert any("cannot be shown" in e.value for e in at.error)


def test_model_card(monkeypatch, tiny_weights):
    at = _page(_app(monkeypatch, tiny_weights), "about")
    assert at.title[0].value == "Tiny test ensemble"
    text = _texts(at)
    for needle in ("Software tests only.", "FracAtlas", "Untrained", "never written", "MURA_WEIGHTS",
                   "not a diagnosis"):
        assert needle in text
    assert len(at.dataframe) >= 2  # members + metrics
    assert str(tiny_weights) not in text  # no server path in the browser
    assert "coverage is unknown" in text  # the tiny ensemble records none
    from mura_core.notices import LIMITATIONS, PRIVACY
    from train.model_card import model_card

    card = model_card(installed.read_manifest(tiny_weights), json.loads((tiny_weights / "report.json").read_text()))
    for shared in (LIMITATIONS, PRIVACY):  # the page and MODEL_CARD.md say the same
        assert shared.strip() in text and shared.strip() in card
    assert "`file, study, label, body_part, attribution, boxes`" in text


def _folder_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("normal", "abnormal"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 255, (40 + 8 * i, 48), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{cls}{i}.png")
    (root / "train" / "stray.png").write_bytes((root / "train" / "normal" / "normal0.png").read_bytes())
    return root


def test_dataset_explorer_without_a_folder(monkeypatch, covered_weights):
    bundled = json.loads((ROOT / "weights" / "manifest.json").read_text())["info"]["training_data"]
    manifest = json.loads((covered_weights / "manifest.json").read_text())
    manifest["info"]["training_data"] = bundled
    (covered_weights / "manifest.json").write_text(json.dumps(manifest))
    at = _page(_app(monkeypatch, covered_weights), "dataset")
    subheaders = [s.value for s in at.subheader]
    assert subheaders == ["MURA v1.1 at a glance", "The installed model's training data", "Bundled sample images"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Train images": "36,808", "Train studies": "13,457", "Valid images": "3,197",
                       "Valid studies": "1,199"}
    assert len(at.get("plotly_chart")) == 3  # MURA images, MURA studies, the training split
    text = _texts(at)
    assert "Trained on **hand and shoulder radiographs of FracAtlas (100 images), fracture vs no fracture**" in text
    assert "arXiv:1712.06957" in text
    balance = at.dataframe[1].value
    assert balance.loc["train", "images"] == 2429 and balance.loc["total", "images"] == 3471
    assert _n_images(at) >= 4  # the samples' thumbnails


def test_dataset_explorer_without_roots_reads_no_folder(monkeypatch, tiny_weights, tmp_path):
    root = _folder_dataset(tmp_path / "folders")
    monkeypatch.delenv("MURA_DATA_ROOTS", raising=False)
    at = _page(_app(monkeypatch, tiny_weights), "dataset")
    assert "Bundled sample images" in [s.value for s in at.subheader]
    assert _n_images(at) >= 4  # the samples' thumbnails
    assert not at.text_input and "MURA_DATA_ROOTS" in _texts(at)
    assert "Images" not in {m.label for m in at.metric} and str(root) not in _texts(at)


def test_dataset_explorer_roots(monkeypatch, tiny_weights, tmp_path):
    root = _folder_dataset(tmp_path / "folders")
    empty = tmp_path / "empty"
    (empty / "notes").mkdir(parents=True)
    (empty / "notes" / "a.txt").write_text("not a dataset")
    (empty / "elsewhere").symlink_to(root, target_is_directory=True)
    monkeypatch.setenv("MURA_DATA_ROOTS", f"{root}:{empty}")
    at = _page(_app(monkeypatch, tiny_weights), "dataset")
    assert not at.text_input and not at.exception
    chooser = next(s for s in at.selectbox if s.label == "Dataset root")
    assert chooser.options == ["folders", "empty"]
    assert str(tmp_path) not in _texts(at)  # roots are shown by name, never by server path
    chooser.select_index(1).run()
    folder = next(s for s in at.selectbox if s.label == "Folder")
    assert folder.options == ["empty", "empty/notes"]  # the link is not offered
    # ... and it leads outside this root, so the root as a whole is not read
    assert any("cannot be read" in e.value and "elsewhere: a symbolic link leading outside" in e.value
               for e in at.error)
    folder.set_value("notes").run()
    assert any("cannot be indexed" in e.value for e in at.error)
    assert str(tmp_path) not in _texts(at)

    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "train" / "link.png").symlink_to(outside / "x.png")
    monkeypatch.setenv("MURA_DATA_ROOTS", str(root))
    at = _page(_app(monkeypatch, tiny_weights), "dataset")
    assert any("cannot be read" in e.value and "symbolic link leading outside" in e.value for e in at.error)


def test_dataset_explorer_folder_layout(monkeypatch, tiny_weights, tmp_path):
    root = _folder_dataset(tmp_path / "folders")
    monkeypatch.setenv("MURA_DATA_ROOTS", str(root))  # one root: it opens directly
    at = _page(_app(monkeypatch, tiny_weights), "dataset")
    assert not at.exception, [e.value for e in at.exception]
    assert "Dataset root" not in [s.label for s in at.selectbox]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "12" and metrics["Abnormal images"] == "6"
    assert len(at.expander) == 1  # the stray image outside a class folder
    problems = at.dataframe[0].value
    assert len(problems) == 1 and not problems["path"].str.contains(str(tmp_path)).any()  # no server path
    assert problems["path"].iloc[0].startswith(f"{root.name}/")
    assert len(at.get("plotly_chart")) == 3
    assert _n_images(at) == 12

    at.multiselect[2].set_value(["abnormal"]).run()
    assert _n_images(at) == 6

    next(s for s in at.selectbox if s.label == "Folder").set_value("train/normal").run()
    assert any("cannot be indexed" in e.value for e in at.error)


def test_dataset_explorer_mura(monkeypatch, tmp_path):
    rng = np.random.default_rng(1)
    studies = [("train", "XR_WRIST", "patient00001", "study1_positive", 2),
               ("train", "XR_HAND", "patient00002", "study1_negative", 1),
               ("valid", "XR_WRIST", "patient00003", "study1_negative", 1)]
    for split, part, patient, study, n in studies:
        folder = tmp_path / "MURA-v1.1" / split / part / patient / study
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (64, 48), dtype=np.uint8)).save(folder / f"image{i + 1}.png")
    monkeypatch.setenv("MURA_DATA_ROOTS", str(tmp_path))
    at = _page(_app(monkeypatch, tmp_path / "no-weights"), "dataset")
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Images"], metrics["Studies"], metrics["Patients"]) == ("4", "3", "3")
    assert "MURA's distribution" in _texts(at)
    assert any(e.label.startswith("Compared with MURA v1.1's published counts: differences") for e in at.expander)


def test_dataset_explorer_fracatlas(monkeypatch, tmp_path, fracatlas):
    monkeypatch.setenv("MURA_DATA_ROOTS", str(fracatlas))
    at = _page(_app(monkeypatch, tmp_path), "dataset")
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Images"]) == len(pd.read_csv(fracatlas / "dataset.csv"))
    assert "FracAtlas" in _texts(at)
    assert _n_images(at) == 24


# ------------------------------------------------------------------------------- charts.py


def test_verdict_text():
    assert decision.verdict_text(0.73, 0.45) == "Abnormal (ensemble 0.73 ≥ threshold 0.45)"
    assert decision.verdict_text(0.2, 0.45) == "Normal (ensemble 0.20 < threshold 0.45)"
    assert decision.verdict_text(0.4999, 0.5) == "Normal (ensemble 0.4999 < threshold 0.5000)"
    assert decision.verdict_text(0.5, 0.5).startswith("Abnormal (ensemble 0.50 ≥")
    assert decision.verdict_text(None, 0.5).startswith("No verdict")


def test_body_part_detection():
    assert body_parts.detect_body_part(["a.png"], ["WRIST"]) == ("XR_WRIST", "DICOM BodyPartExamined")
    assert body_parts.detect_body_part(["XR_ELBOW_1.png", "xr_elbow_2.png"]) == ("XR_ELBOW", "file names")
    code, source = body_parts.detect_body_part(["XR_HAND_1.png", "XR_HAND_2.png", "XR_WRIST.png"])
    assert code == "XR_HAND" and "disagree" in source
    assert body_parts.detect_body_part(["scan.png"], [""]) == ("", "")
    assert body_parts.resolve_body_part("auto", "XR_HAND", "file names") == ("XR_HAND", "file names")
    assert body_parts.resolve_body_part("OTHER", "XR_HAND", "file names") == ("OTHER", "chosen by the user")
    assert body_parts.normalize_body_part("KNEE") == "KNEE"
    assert body_parts.normalize_body_part("upper arm") == "XR_HUMERUS"
    assert body_parts.body_part_label("XR_FOREARM") == "Forearm"
    assert body_parts.body_part_label(body_parts.OTHER_BODY_PART) == "Other/unknown"
    assert len(body_parts.BODY_PART_CHOICES) == 9


def test_member_probability_figure():
    fig = charts.member_probability_figure({"a": 0.2, "b": 0.8}, 0.5, 0.45)
    assert list(fig.data[0].y) == ["a", "b", "Ensemble (mean)"]
    assert fig.layout.shapes[0].x0 == 0.45
    assert "threshold 0.45" in fig.layout.annotations[0].text


def _study(ok=True):
    from mura_core.ensemble import ImageResult, StudyResult

    gray = np.tile(np.arange(64, dtype=np.uint8), (48, 1))
    heat = np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64)
    image = ImageResult("XR_WRIST_a.png", {"m1": 0.6, "m2": 0.8}, 0.7, gray,
                        {"m1": heat, "m2": heat, "ensemble": heat})
    bad = ImageResult("b.png", error="not an image: the content looks like text")
    return StudyResult([image, bad], ["m1", "m2"], 0.45, 0.7, {"m1": 0.6, "m2": 0.8}, "abnormal", "gradcam")


def test_heatmap_panels_and_exports():
    result = _study()
    panels = charts.heatmap_panels(result.images[0], 0.5, result.members)
    assert [c.split(" ·")[0] for c, _ in panels] == ["Original", "Ensemble (fused map)", "m1", "m2"]
    assert panels[0][1].shape == (48, 64) and panels[1][1].shape == (48, 64, 3)

    exported = json.loads(results.study_json(result, "XR_WRIST", "file names"))
    assert exported["verdict"] == "abnormal" and exported["study_body_part"] == "Wrist"
    assert exported["verdict_text"] == "Abnormal (ensemble 0.70 ≥ threshold 0.45)"
    assert exported["images"][1]["error"].startswith("not an image")
    assert set(exported["images"][0]) == {"image", "body_part", "probabilities", "ensemble", "error", "warning",
                                          "regions"}
    assert exported["body_part"] == "XR_WRIST"
    assert "competence is unknown" in exported["warning"]  # this result records no coverage
    table = results.study_table(result, "")
    assert list(table["image"]) == ["XR_WRIST_a.png", "b.png"]
    assert set(table["study_body_part"]) == {"unknown"}
    assert set(table["study_warning"]) == {exported_unknown := result.with_body_part("").warning}
    assert exported_unknown.startswith("Body part unknown")


def test_fused_panel_marks_the_peak():
    result = _study().images[0]
    centred = np.zeros((6, 8), np.float32)
    centred[3, 4] = 1.0
    result.heatmaps["ensemble"] = centred
    panels = charts.heatmap_panels(result, 0.5, ["m1"])
    assert panels[1][0].endswith("· + marks the peak") and "peak" not in panels[2][0]
    row, col = heatmap_peak(centred, result.image.shape)
    assert (panels[1][1][row, col] == 255).all()  # the white cross sits on the peak

    result.heatmaps["ensemble"] = np.zeros((6, 8), np.float32)  # no peak, no mark
    assert "peak" not in charts.heatmap_panels(result, 0.5, [])[1][0]


def test_regions_drawn_solid_when_a_finding_and_dashed_below_the_threshold():
    from mura_core.regions import Region

    gray = np.zeros((200, 300), np.uint8)
    region = Region(50, 60, 150, 160, 0.81)
    solid = charts.draw_regions(gray, [(region, True)])
    dashed = charts.draw_regions(gray, [(region, False)])
    orange = np.array(charts.REGION_COLOR)

    def edge(picture):  # the box's left edge, a column of pixels away from the score's text
        return (picture[80:150, 50] == orange).all(axis=-1)

    assert edge(solid).all() and 0.3 < edge(dashed).mean() < 0.8  # dashes along the edge, gaps between
    assert (solid[20:58, 50:100] != 0).any()  # the score is written above the box
    fig = charts.heatmap_zoom_figure(gray, np.zeros((4, 4), np.float32), 0.4,
                                     regions=[(region, True), (Region(0, 0, 10, 10, 0.2), False)])
    assert [s.line.dash for s in fig.layout.shapes] == ["solid", "dash"]
    assert [a.text for a in fig.layout.annotations] == ["0.81", "0.20"]
    panels = charts.heatmap_panels(_study().images[0], 0.5, ["m1"], regions=[(Region(2, 2, 30, 30, 0.5), True)])
    plain = charts.heatmap_panels(_study().images[0], 0.5, ["m1"])
    assert not np.array_equal(panels[0][1], np.repeat(plain[0][1][..., None], 3, axis=-1))  # on the original
    assert np.array_equal(panels[2][1], plain[2][1])  # not on a member's map


def test_heatmap_zoom_figure():
    gray = np.full((300, 200), 90, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[2, 6] = 1.0
    peak = heatmap_peak(heat, gray.shape)
    fig = charts.heatmap_zoom_figure(gray, heat, 0.4, [(10, 20, 30, 40)], peak, "a title")
    image = fig.data[0]
    assert image.type == "image"
    png = Image.open(io.BytesIO(base64.b64decode(image.source.split(",", 1)[1])))
    assert png.size == (200, 300)  # the image's own resolution
    (box,) = fig.layout.shapes
    assert (box.type, box.x0, box.y0, box.x1, box.y1) == ("rect", 9.5, 19.5, 39.5, 59.5)
    marker = fig.data[-1]
    assert marker.name == "peak" and (marker.y[0], marker.x[0]) == peak and "peak of the map" in marker.hovertemplate
    assert fig.layout.yaxis.autorange == "reversed" and fig.layout.xaxis.showticklabels is False

    plain = charts.heatmap_zoom_figure(gray, heat, 0.4)
    assert [t.type for t in plain.data] == ["image"] and not plain.layout.shapes

    result = _study().images[0]
    member = charts.image_zoom_figure(result, "m1", 0.5, [(1, 1, 4, 4)])
    assert member.layout.title.text.startswith("m1 · XR_WRIST_a.png · 64 × 48 px")
    assert charts.heatmap_names(result, ["m2", "m1"]) == ["ensemble", "m2", "m1"]


def _index_table() -> pd.DataFrame:
    return pd.DataFrame({
        "path": [f"/x/{i}.png" for i in range(6)],
        "split": ["train", "train", "train", "valid", "valid", ""],
        "body_part": ["XR_HAND", "XR_HAND", "XR_WRIST", "XR_HAND", "XR_WRIST", ""],
        "patient": ["p1", "p1", "p2", "p3", "p3", ""],
        "study": ["s1", "s1", "s2", "s3", "s4", "s5"],
        "label": [1, 1, 0, 0, 1, 0],
        "dataset": "test",
    })


def test_dataset_helpers():
    table = _index_table()
    summary = stats.dataset_summary(table)
    assert summary == {"images": 6, "studies": 5, "patients": 3, "abnormal_images": 3, "abnormal_studies": 2,
                       "splits": ["train", "valid"], "body_parts": ["XR_HAND", "XR_WRIST"]}
    images = stats.count_frame(table, "images")
    hand = images[(images.split == "train") & (images.body_part == "XR_HAND")]
    assert hand["count"].tolist() == [2] and hand["label_name"].tolist() == ["abnormal"]
    studies = stats.count_frame(table, "studies")
    assert studies.loc[(studies.split == "train") & (studies.body_part == "XR_HAND"), "count"].item() == 1
    assert "(no split)" in set(images["split"])
    wide = stats.count_table(table, "images")
    assert wide.loc[("train", "Hand")].to_dict() == {"normal": 0, "abnormal": 2, "total": 2}
    with pytest.raises(ValueError):
        stats.count_frame(table, "patients")

    fig = charts.counts_figure(table, "studies")
    assert {t.name for t in fig.data} == {"normal", "abnormal"}
    balance = charts.class_balance_figure(table)
    assert sum(len(t.y) for t in balance.data) >= 4
    assert len(stats.filter_table(table, ["train"], ["XR_HAND"], ["abnormal"])) == 2
    assert len(stats.filter_table(table, [], None, [])) == 6
    assert len(stats.sample_paths(table, 3)) == 3
    assert stats.sample_paths(table, 3) == stats.sample_paths(table, 3)  # reproducible
    problems = [SimpleNamespace(path="/x", reason="bad")]
    assert stats.problems_frame(problems).to_dict("records") == [{"path": "/x", "reason": "bad"}]


def test_image_files_helpers(tmp_path):
    Image.fromarray(np.full((80, 120), 90, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_text("not an image")
    sizes = stats.image_sizes([str(tmp_path / "a.png"), str(tmp_path / "b.png")])
    assert sizes[["width", "height"]].values.tolist() == [[120, 80]]
    assert charts.image_size_figure(sizes).data
    assert stats.common_sizes(sizes).to_dict("records") == [{"size (W x H)": "120 x 80", "images": 1}]
    thumb = imaging.thumbnail(str(tmp_path / "a.png"), 60)
    assert thumb.shape == (40, 60) and thumb.dtype == np.uint8
    assert imaging.thumbnail(str(tmp_path / "b.png")) is None


def test_samples(tiny_weights, tmp_path):
    samples, problems = installed.read_samples(tiny_weights)
    assert problems == [] and samples["path"].map(lambda p: Path(p).is_file()).all()
    studies = installed.sample_studies(samples)
    assert list(studies["study"]) == ["demo-fractured-hand", "demo-normal-hand", "demo-one-unreadable-file"]
    assert studies["description"][0] == "demo-fractured-hand (Hand, 2 images)"

    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "samples.csv").write_text("file,study\ngone.png,s1\n../up.png,s1\n")
    samples, problems = installed.read_samples(tmp_path)
    assert samples.empty and len(problems) == 2
    assert installed.read_samples(tmp_path / "nowhere")[0].empty
    assert vocabulary.label_text("1") == "abnormal" and vocabulary.label_text("normal") == "normal"
    assert vocabulary.label_text("?") == ""


def test_report_helpers(fake_report, tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(fake_report))
    report = reports.load_report(path)
    assert reports.load_report(path.read_bytes()) == report
    for bad in (b"[1, 2]", b"{", b'{"created": "x"}'):
        with pytest.raises(reports.ReportError):
            reports.load_report(bad)

    assert reports.report_levels(report) == ["image", "study"]
    models = reports.report_models(report, "study")
    assert models == [*report["members"], "ensemble"]
    table = reports.metrics_table(report, "study")
    assert list(table.columns) == models
    assert list(table.index[:3]) == ["studies", "abnormal", "AUC"]
    assert table.loc["AUC", "ensemble"].count("(") == 1 and "–" in table.loc["AUC", "ensemble"]
    card = reports.model_card_metrics(report)
    assert list(card.columns) == ["Image level", "Study level"] and card.loc["n", "Study level"] == "48"
    assert reports.format_ci(None) == "—" and reports.format_ci(0.5, [0.4, 0.6]) == "0.500 (0.400–0.600)"
    assert reports.format_ci(float("nan"), [None, None]) == "—"

    assert len(charts.ci_figure(report, "study").data) == 2
    part = reports.per_body_part_frame(report, "image", "ensemble")
    assert "All" in part.index and "Wrist" in part.index and "AUC" in part.columns
    assert reports.per_body_part_frame(report, "nowhere", "ensemble").empty
    assert len(charts.per_body_part_figure(report, "image", "f1").data) == len(models)
    assert len(charts.roc_figure(report, "image").data) == len(models) + 1
    entry = report["image_level"]["ensemble"]
    cm = charts.confusion_figure(entry, "ensemble")
    assert np.array(cm.data[0].z).sum() == entry["n"]
    assert cm.data[0].z[1][1] == entry["tp"] and cm.data[0].z[0][1] == entry["fp"]
    assert len(charts.calibration_figure(report, "study").data) == len(models) + 1

    frame = reports.threshold_frame(report, "image")
    row = reports.threshold_at(frame, 0.333)
    assert row["threshold"] == pytest.approx(0.33)
    assert reports.threshold_frame({}, "image").empty
    fig = charts.threshold_figure(frame, 0.3, 0.45)
    assert {t.name for t in fig.data} == {"sensitivity", "specificity", "precision"}
    precision = next(t for t in fig.data if t.name == "precision").y
    nobody_called = (frame["tp"] + frame["fp"] == 0).to_numpy()
    assert nobody_called.any() and np.isnan(np.asarray(precision, float)[nobody_called]).all()
    assert len(fig.layout.shapes) == 2
    assert len(charts.threshold_figure(frame, 0.45, 0.45).layout.shapes) == 1

    assert len(charts.history_figure(report).data) == 4 * len(report["members"])
    loc = reports.localization_frame(report)
    assert list(loc.index) == models and "(" in loc.iloc[0]["pointing game (hit rate)"]
    assert len(charts.localization_figure(report).data) == 3
    detection = reports.detection_frame(report)
    assert detection["figure"].tolist()[:4] == ["AP@50", "AP@[.50:.95]", "Recall at 0.5 false positive per image",
                                                "Recall at 1 false positive per image"]
    froc = charts.froc_figure(report)
    assert froc.data[0].x[-1] == report["detection"]["froc"]["fp_per_image"][-1] and len(froc.data) == 3
    assert reports.detection_frame({}).empty
    reliability = reports.map_reliability_frame(report)
    edges = localization.RELIABILITY_EDGES
    assert reliability["pixels"].sum() == 32 * 32 and reliability["pixels"].min() > 0  # empty bins left out
    assert set(reliability["map value"]) <= {f"{low:.2f}–{high:.2f}" for low, high in zip(edges, edges[1:])}
    assert reliability["share inside a box"].between(0, 1).all() and reports.map_reliability_frame({}).empty


def test_members_frame_and_stamp(tiny_weights, tmp_path):
    from mura_core.ensemble import read_manifest

    frame = reports.members_frame(read_manifest(tiny_weights))
    assert list(frame["member"]) == ["mobilenetv2_a", "densenet121_b"]
    assert frame["input size (px)"].tolist() == [64, 32]
    assert frame["lesion map's weight in its probability"].tolist() == [0.0, 0.0]
    assert installed.folder_stamp(tiny_weights) != installed.folder_stamp(tmp_path)
    assert installed.folder_stamp(tmp_path).endswith(":missing")


def test_the_about_page_says_how_the_ensemble_reads_an_image():
    members = [{"name": "a", "map_evidence": 0.5}, {"name": "b", "map_evidence": 0.5}]
    plain = reports.reading_text({"members": members[:1], "threshold": 0.25})
    assert plain.startswith("An ensemble of 1 convolutional network. A member's probability combines")
    assert "the map weighted 0.5." in plain and "threshold **0.25**" in plain and "mirrored" not in plain
    both = reports.reading_text({"members": members, "threshold": 0.1, "test_time_flip": True})
    assert "2 convolutional networks. Each member reads every image twice" in both
    bare = reports.reading_text({"members": [{"name": "a"}]})
    assert "lesion map" not in bare and "threshold **0.50**" in bare


def test_report_path_finds_both_layouts(tmp_path):
    assert installed.report_path(tmp_path) == tmp_path / "report" / "report.json"
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.json").write_text("{}")
    assert installed.report_path(tmp_path) == tmp_path / "report" / "report.json"
    (tmp_path / "report.json").write_text("{}")
    assert installed.report_path(tmp_path) == tmp_path / "report.json"


def test_dataset_explorer_leakage(monkeypatch, tmp_path):
    from tests.test_leakage import _leaky_folders

    root = _leaky_folders(tmp_path / "leaky")
    monkeypatch.setenv("MURA_DATA_ROOTS", str(root))  # one root: it opens directly
    at = _page(_app(monkeypatch, tmp_path / "no-weights"), "dataset")
    assert not at.exception, [e.value for e in at.exception]
    assert "Leakage between splits" in [s.value for s in at.subheader]
    images_before = _n_images(at)
    at.toggle[0].set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    tables = [frame.value for frame in at.dataframe]
    summary = next(t for t in tables if "near-duplicates" in t.columns)
    assert summary[["split", "against", "identical files", "near-duplicates"]].values.tolist() == [
        ["test", "train", 2, 6]]
    assert "patients on both sides" not in summary.columns  # folder layouts record no patients
    memory = next(t for t in tables if "memory baseline accuracy" in t.columns)
    assert memory[["split", "against", "images scored"]].values.tolist() == [["test", "train", 10]]
    assert memory["memory baseline accuracy"].iloc[0] >= 0.8  # the 8 copied or altered files pass by memory
    assert _n_images(at) == images_before + 8  # four pairs side by side
