"""Members as ONNX graphs: the export at install, its parity check, and serving them with ONNX Runtime.

A tiny MobileNetV2 (the spec's `Normalization` scaling, a stride-4 lesion map) and a tiny EfficientNet-B0
(its own adapted `Normalization`, a stride-16 lesion map), both with the registry's GAP -> Dense(ReLU) ->
BatchNormalization -> Dropout -> Dense head, their BatchNormalization statistics set from real radiographs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from mura_core import cli, onnx_export
from mura_core.ensemble import Ensemble, EnsembleLoadError, load_ensemble
from mura_core.gradcam import CamExplainer
from mura_core.imaging import load_image, resize_square
from mura_core.installed import MANIFEST
from mura_core.onnx_export import ExportError, check_parity, export_checked, parity_images
from mura_core.onnx_runtime import FEATURES, GRADCAM_WEIGHTS, OnnxGraph, OnnxMember
from mura_core.registry import create_model
from tests.conftest import _with_sample_statistics
from tests.data import FRACATLAS
from train.build_ensemble import add_onnx

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "weights" / "samples"
TINY = {"mnv2": ("mobilenetv2", 64, 4), "effb0": ("efficientnetb0", 64, 16)}
BOXED = {"mnv2"}  # members with a box head beside the lesion map


def _files() -> list[Path]:
    """14 real radiographs: the 8 bundled samples and 6 of the FracAtlas fixture."""
    fixture = sorted((FRACATLAS / "images").iterdir())[:6]
    return sorted(SAMPLES.glob("*.jpg")) + fixture


def _conditioned(model: keras.Model) -> keras.Model:
    """`model` with its BatchNormalization variances at least 0.01: statistics from 8 images leave some at 0,
    and through an untrained network that amplifies float rounding (1e-3 in a probability, in Keras as in
    ONNX Runtime), which a trained model's statistics do not (2e-6 for the bundled members)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_variance.assign(np.maximum(layer.moving_variance.numpy(), 0.01))
    return model


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, keras.Model]:
    keras.utils.set_random_seed(1)
    return {name: _conditioned(_with_sample_statistics(create_model(
        arch, input_size=size, dense_units=16, bn_momentum=0.0, lesion_map=True, map_stride=stride,
        lesion_boxes=name in BOXED), size))
        for name, (arch, size, stride) in TINY.items()}


@pytest.fixture(scope="module")
def onnx_weights(tiny_models, tmp_path_factory) -> Path:
    """A tiny ensemble written without ONNX graphs, then given them by `add_onnx` (as the bundled one was)."""
    folder = tmp_path_factory.mktemp("onnx") / "weights"
    architectures = {name: arch for name, (arch, _, _) in TINY.items()}
    Ensemble(tiny_models, 0.5, {"title": "tiny", "version": "7"}, architectures).save(folder)
    add_onnx(folder)
    return folder


def _batch(size: int, n: int = 4) -> np.ndarray:
    return np.stack([resize_square(load_image(p), size) for p in _files()[:n]]).astype(np.float32)


def test_each_member_has_a_checked_graph_with_one_input_and_named_outputs(onnx_weights):
    manifest = json.loads((onnx_weights / MANIFEST).read_text())
    assert manifest["info"] == {"title": "tiny", "version": "7"}  # the rest of the manifest is kept
    for entry in manifest["members"]:
        graph = entry["onnx"]
        assert graph["file"] == f"{entry['name']}.onnx" and graph["opset"] == 17
        onnx = OnnxGraph(onnx_weights / graph["file"])
        # the scaling layers' constants are constants of the graph, not extra inputs
        assert onnx.inputs == ["image"]
        boxes = {"lesion_box"} if entry["name"] in BOXED else set()
        assert set(onnx.outputs) == {"probability", "lesion_map", "features", "gradcam_weights"} | boxes
        assert graph["outputs"] == sorted(onnx.outputs)


def test_onnx_outputs_match_keras_and_the_gradcam_weights_are_the_gradient(tiny_models, onnx_weights):
    layers = {e["name"]: e["gradcam_layer"] for e in json.loads((onnx_weights / MANIFEST).read_text())["members"]}
    for name, model in tiny_models.items():
        size, layer = TINY[name][1], layers[name]
        images = _batch(size)
        member = OnnxMember(onnx_weights / f"{name}.onnx", TINY[name][0], layer, lambda model=model: model)
        keras_explainer = CamExplainer(model, layer)
        for method in ("lesion_map", "gradcam"):
            p_onnx, maps_onnx = member.explain(images, method)
            p_keras, maps_keras = keras_explainer.explain(images, method)
            np.testing.assert_allclose(p_onnx, p_keras, atol=1e-4)
            np.testing.assert_allclose(maps_onnx, maps_keras, atol=1e-3)
            assert maps_onnx.shape == (len(images), size, size) and 0 <= maps_onnx.min() and maps_onnx.max() <= 1
        codes_onnx, codes_keras = member.explain_lesions(images)[2], keras_explainer.explain_lesions(images)[2]
        if name in BOXED:  # the box head's codes from the same pass
            assert codes_onnx.shape == (len(images), size // TINY[name][2], size // TINY[name][2], 4)
            np.testing.assert_allclose(codes_onnx, codes_keras, atol=1e-3)
        else:
            assert codes_onnx is None and codes_keras is None
        # the graph's Grad-CAM weights against TensorFlow's gradient of the probability (what cam_backends
        # averages over the cells)
        features_model = keras.Model(model.inputs, model.get_layer(layer).output)
        head = keras.Model(model.get_layer(layer).output, model.get_layer("probability").output)
        features = tf.constant(features_model(tf.constant(images), training=False))
        with tf.GradientTape() as tape:
            tape.watch(features)
            score = head(features, training=False)[:, 0]
        expected = tf.reduce_mean(tape.gradient(score, features), axis=(1, 2)).numpy()
        got = member.graph.run(images, [FEATURES, GRADCAM_WEIGHTS])[GRADCAM_WEIGHTS]
        assert np.abs(expected).max() > 0
        np.testing.assert_allclose(got, expected, atol=1e-6 * np.abs(expected).max() + 1e-9, rtol=1e-3)
        assert not member.keras_loaded  # the graph alone gave the lesion map and Grad-CAM


def test_parity_check_refuses_a_graph_that_differs_and_writes_nothing(tiny_models, onnx_weights, tmp_path,
                                                                       monkeypatch):
    model, graph = tiny_models["mnv2"], onnx_weights / "mnv2.onnx"
    images = parity_images(64)
    assert len(images) >= 8  # the bundled sample radiographs
    assert check_parity(model, graph, "out_relu", images)["probability"] <= 1e-4
    logit = model.get_layer("head_logit")
    kernel, bias = logit.get_weights()
    # an export whose graph is not the model's: the one written before the model's last layer moved
    monkeypatch.setattr(onnx_export, "export_member", lambda *args: shutil.copy(graph, args[1]) and {})
    try:
        logit.set_weights([kernel, bias + 0.5])
        with pytest.raises(ExportError, match="probability"):
            check_parity(model, graph, "out_relu", images)
        with pytest.raises(ExportError, match="differ from Keras"):
            export_checked(model, tmp_path / "refused.onnx", "out_relu", images)
    finally:
        logit.set_weights([kernel, bias])
    assert list(tmp_path.iterdir()) == []


def test_the_runtime_setting_chooses_and_bad_graphs_are_refused(onnx_weights, tmp_path, monkeypatch):
    assert set(load_ensemble(onnx_weights).runtimes.values()) == {"onnx"}
    monkeypatch.setenv("MURA_RUNTIME", "keras")
    assert set(load_ensemble(onnx_weights).runtimes.values()) == {"keras"}
    monkeypatch.setenv("MURA_RUNTIME", "tflite")
    with pytest.raises(EnsembleLoadError, match="MURA_RUNTIME='tflite'"):
        load_ensemble(onnx_weights)
    monkeypatch.delenv("MURA_RUNTIME")
    copy = tmp_path / "copy"
    shutil.copytree(onnx_weights, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    graph = copy / manifest["members"][0]["onnx"]["file"]
    graph.write_bytes(graph.read_bytes()[:-10])
    with pytest.raises(EnsembleLoadError, match=f"{graph.name}: checksum mismatch"):
        load_ensemble(copy)
    for entry in manifest["members"]:  # an older manifest: no graphs
        del entry["onnx"]
    (copy / MANIFEST).write_text(json.dumps(manifest))
    assert set(load_ensemble(copy).runtimes.values()) == {"keras"}
    with pytest.raises(EnsembleLoadError, match="--add-onnx"):
        load_ensemble(copy, runtime="onnx")


def test_gradient_methods_load_keras_once_and_the_save_path_writes_graphs(onnx_weights, tmp_path):
    ensemble = load_ensemble(onnx_weights)
    assert not ensemble.needs_loading("lesion_map") and not ensemble.needs_loading("gradcam")
    assert ensemble.needs_loading("gradcam++")
    result = ensemble.predict_study([str(p) for p in _files()[:2]], explain=True, method="gradcam++")
    assert not ensemble.needs_loading("gradcam++")
    for image in result.images:
        assert 0 <= image.heatmaps["ensemble"].min() and image.heatmaps["ensemble"].max() <= 1
    # the install path: Ensemble.save writes the graphs (here of a member without a lesion map)
    keras.utils.set_random_seed(2)
    plain = _conditioned(_with_sample_statistics(create_model("mobilenetv2", input_size=32, dense_units=8,
                                                              bn_momentum=0.0), 32))
    Ensemble({"plain": plain}, 0.5, architectures={"plain": "mobilenetv2"}).save(
        tmp_path / "plain", onnx=True, keras_float16=True)
    entry = json.loads((tmp_path / "plain" / MANIFEST).read_text())["members"][0]
    assert entry["keras_float16"] and entry["onnx"]["outputs"] == ["features", "gradcam_weights", "probability"]
    served = load_ensemble(tmp_path / "plain")
    assert served.runtimes == {"plain": "onnx"} and "lesion_map" not in served.cam_methods
    images = _batch(32)
    result = served.predict_study([str(p) for p in _files()[:4]], explain=True)
    assert result.cam_method == "gradcam" and not served.needs_loading("gradcam")
    np.testing.assert_allclose([r.ensemble for r in result.images], plain.predict(images, verbose=0)[:, 0],
                               atol=1e-4)


def test_predict_gives_the_same_csv_under_both_runtimes(onnx_weights, tmp_path):
    files = [str(p) for p in _files()]
    assert len(files) == 14
    tables = {}
    for runtime in ("onnx", "keras"):
        out = tmp_path / f"{runtime}.csv"
        assert cli.main(["predict", "--weights", str(onnx_weights), "--runtime", runtime, "--out", str(out),
                         *files]) == 0
        tables[runtime] = pd.read_csv(out)
    onnx, keras_table = tables["onnx"], tables["keras"]
    assert list(onnx.columns) == list(keras_table.columns) and len(onnx) == 14
    numbers = [c for c in onnx.columns if onnx[c].dtype.kind == "f" and onnx[c].notna().all()]
    assert {"ensemble", "mnv2", "effb0"} <= set(numbers)
    assert np.abs(onnx[numbers].to_numpy() - keras_table[numbers].to_numpy()).max() <= 1e-4
    others = [c for c in onnx.columns if c not in numbers]
    pd.testing.assert_frame_equal(onnx[others], keras_table[others])


def _modules_loaded_by(lines: list[str], modules: tuple[str, ...], env: dict | None = None) -> str:
    """Run `lines` in a fresh Python from the repository root; which of `modules` it then had loaded, as
    printed ("loaded: [...]")."""
    script = "\n".join(["import sys", *lines,
                        f"print('loaded:', sorted(m for m in {modules!r} if m in sys.modules))"])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_predicting_through_onnx_imports_neither_keras_nor_tensorflow(onnx_weights):
    printed = _modules_loaded_by([
        "import mura_core",
        "from mura_core.ensemble import load_ensemble",
        f"ensemble = load_ensemble({str(onnx_weights)!r})",
        f"paths = {[str(p) for p in _files()[:3]]!r}",
        "result = ensemble.predict_study(paths, explain=True)",
        "ensemble.predict_study(paths, explain=True, method='gradcam')",
        "ensemble.predict_files(paths)",
        "assert result.cam_method == 'lesion_map' and result.images[0].heatmaps['ensemble'].shape == (64, 64)",
    ], ("keras", "tensorflow", "jax", "torch"))
    assert "loaded: []" in printed


def test_dashboard_serves_a_bundled_sample_study_with_neither_tensorflow_nor_scikit_learn():
    # The Diagnose page on the bundled ONNX members: the verdict without Keras, TensorFlow, scikit-learn or
    # SciPy in the server's memory (reports.load_report reads a report without metrics' scikit-learn).
    env = {**os.environ, "MURA_RUNTIME": "onnx"}
    env.pop("MURA_WEIGHTS", None)
    printed = _modules_loaded_by([
        "from streamlit.testing.v1 import AppTest",
        f"at = AppTest.from_file({str(ROOT / 'app.py')!r}, default_timeout=120).run()",
        "next(b for b in at.button if b.label == 'Try a sample study').click().run()",
        "assert not at.exception, [e.value for e in at.exception]",
        "text = ' '.join(str(m.value) for m in at.markdown)",
        "assert '(ensemble' in text, text[:500]",
    ], ("keras", "tensorflow", "jax", "torch", "sklearn", "scipy"), env)
    assert "loaded: []" in printed
