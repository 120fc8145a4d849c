"""Train and predict without TensorFlow (`KERAS_BACKEND=jax` or `torch`): the CI's second environment.

Run in an environment with the project's requirements minus tensorflow-cpu and tf-keras-vis, plus
JAX (see `.ci/run`):

    KERAS_BACKEND=jax python -m pytest tests/backend_smoke

The default test run (TensorFlow) leaves this folder out (`tests/conftest.py`). The data is the
repository's own: the radiographs and fracture boxes of `weights/samples/`, laid out as a small
FracAtlas tree.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mura_core import backend
from mura_core.ensemble import Ensemble
from mura_core.gradcam import CamExplainer
from mura_core.pipeline import Augmentation, ImageBatches, box_masks, lesion_targets, make_dataset
from train import train as train_module
from train.config import DataSource, load_config

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "weights" / "samples"
DEMO_CONFIG = ROOT / "train" / "configs" / "history" / "demo_fracatlas_mobilenetv2_stage3.yaml"
SIZE = 64


@pytest.fixture(scope="module")
def mini_fracatlas(tmp_path_factory) -> tuple[Path, Path]:
    """A FracAtlas-layout tree of the 8 bundled samples, each also mirrored (16 images), and a split file."""
    root = tmp_path_factory.mktemp("fracatlas")
    (root / "images").mkdir()
    samples = pd.read_csv(SAMPLES / "samples.csv")
    rows, images, annotations, splits = [], [], [], []
    for i, sample in enumerate(samples.itertuples()):
        picture = Image.open(SAMPLES / sample.file).convert("L")
        boxes = json.loads(sample.boxes) if isinstance(sample.boxes, str) else []
        for copy, mirrored in enumerate((False, True)):
            name = f"IMG{i:03d}{copy}.jpg"
            (picture.transpose(Image.FLIP_LEFT_RIGHT) if mirrored else picture).save(root / "images" / name)
            part = sample.body_part.lower()
            rows.append({"image_id": name, "hand": int(part == "hand"), "leg": int(part == "leg"),
                         "hip": int(part == "hip"), "shoulder": int(part == "shoulder"), "mixed": 0,
                         "fractured": int(sample.label)})
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": name, "width": picture.width, "height": picture.height})
            for x, y, w, h in boxes:
                x = picture.width - x - w if mirrored else x
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 0,
                                    "bbox": [x, y, w, h]})
            splits.append({"path_key": f"images/{name}", "split": "val" if copy and i % 4 < 2 else "train"})
    pd.DataFrame(rows).to_csv(root / "dataset.csv", index=False)
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                       "categories": [{"id": 0, "name": "fractured"}]}))
    split_file = root / "split.csv"
    pd.DataFrame(splits).to_csv(split_file, index=False)
    return root, split_file


def test_the_backend_is_not_tensorflow_and_tensorflow_is_not_imported():
    assert backend.name() in (backend.JAX, backend.TORCH)
    assert "tensorflow" not in sys.modules


def test_batches_carry_class_weights_and_boxes_follow_the_warp(mini_fracatlas):
    root, _ = mini_fracatlas
    table = pd.DataFrame({"path": sorted(str(p) for p in (root / "images").iterdir()),
                          "label": pd.read_csv(root / "dataset.csv").sort_values("image_id")["fractured"]})
    from mura_core.datasets import load_boxes

    lesions = lesion_targets(table, load_boxes(root, "fracatlas"), SIZE // 16)
    batches = make_dataset(table, SIZE, 5, True, Augmentation(30, 0.2, 0.25, True), seed=1, lesions=lesions,
                           class_weight={0: 0.5, 1: 2.0})
    assert isinstance(batches, ImageBatches) and len(batches) == 4
    x, y, w = batches[0]
    assert x.shape == (5, SIZE, SIZE, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 255
    assert y["lesion_map"].shape == (5, SIZE // 16, SIZE // 16, 1)
    assert sorted(set(w["probability"].tolist())) <= [0.5, 2.0]
    assert np.array_equal(w["probability"] == 2.0, y["probability"] == 1.0)
    # Data parallel: a batch is padded to a multiple of the devices, the copies weigh nothing.
    padded = ImageBatches(table, SIZE, 5, False, lesions=lesions, pad_multiple=4)
    x, y, w = padded[0]
    assert len(x) == 8 and np.array_equal(x[5:], np.repeat(x[4:5], 3, axis=0))
    assert w["probability"].tolist() == [1.0] * 5 + [0.0] * 3 and w["lesion_map"][5:].tolist() == [0.0] * 3
    # The same warp moves an image and its masks: boxes drawn into images land where the masks say.
    boxes = np.array([[[0.15, 0.20, 0.45, 0.40], [0.6, 0.65, 0.8, 0.9]]] * 6, np.float32)
    masks = box_masks(boxes, 96)
    warped, moved = Augmentation(30, 0.2, 0.25, True).warp_arrays(np.random.default_rng(0), masks * 255.0, masks)
    for image, mask in zip(warped, moved):
        drawn, said = image[..., 0] > 127.5, mask[..., 0] > 0.5
        assert said.sum() > 50 and (drawn & said).sum() / (drawn | said).sum() > 0.98
    assert min(((m[..., 0] > 0.5) & (masks[0, ..., 0] > 0.5)).sum() / masks[0].sum() for m in moved) < 0.8


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt("simulated interruption")


def test_train_resume_and_predict_with_heatmaps(mini_fracatlas, tmp_path):
    """The demo's stage-3 settings (lesion-map head, class weights, augmentation, cache), tiny: two epochs,
    interrupted after the first and resumed; then the member predicts a study with both heatmaps."""
    root, split_file = mini_fracatlas
    config = load_config(DEMO_CONFIG, [f"input_size={SIZE}", "weights=null", "batch_size=4", "epochs=2",
                                       "oversample_abnormal=2", "dense_units=16", f"out_dir={tmp_path / 'runs'}",
                                       f"cache_dir={tmp_path / 'cache'}", "input_workers=2"])
    config = dataclasses.replace(config, data=(DataSource(str(root), "fracatlas", str(split_file)),))
    with pytest.raises(KeyboardInterrupt):
        train_module.run(config, extra_callbacks=[_Interrupt()])
    assert (config.run_dir / "backup").is_dir()
    result = train_module.run(config)
    history = pd.read_csv(config.run_dir / "history.csv")
    assert history["epoch"].tolist() == [0, 1]
    assert np.isfinite(history["loss"]).all() and "val_probability_auc" in history
    assert 0.0 <= result["threshold"] <= 1.0 and not (config.run_dir / "backup").exists()
    assert len(pd.read_csv(config.run_dir / "val_predictions.csv")) == 4

    model = keras.saving.load_model(config.run_dir / "best.keras", compile=False, safe_mode=True)
    ensemble = Ensemble({"member": model}, architectures={"member": "mobilenetv2"})
    assert ensemble.cam_methods == ["gradcam", "lesion_map"]
    study = [SAMPLES / "IMG0000019.jpg", SAMPLES / "IMG0000045.jpg"]
    for method in ensemble.cam_methods:
        found = ensemble.predict_study(study, explain=True, method=method)
        assert 0.0 <= found.probability <= 1.0 and found.verdict
        for image in found.images:
            heat = image.heatmaps["ensemble"]
            assert heat.shape == (SIZE, SIZE) and heat.min() >= 0.0 and heat.max() <= 1.0
    with pytest.raises(ValueError, match="not offered by every member; choose one of gradcam, lesion_map"):
        ensemble.predict_study(study, explain=True, method="scorecam")
    with pytest.raises(ValueError, match="needs TensorFlow"):
        CamExplainer(model, "out_relu").explain(np.zeros((1, SIZE, SIZE, 3), np.float32), "scorecam")
    assert "tensorflow" not in sys.modules


def test_the_lesion_map_trains_on_crops_and_validates_on_whole_images(mini_fracatlas, tmp_path):
    """`map_crop`: a weight-sharing twin trains on crops (`registry.crop_trainer`), the whole-image model
    validates and is what the checkpoint holds."""
    root, split_file = mini_fracatlas
    config = load_config(DEMO_CONFIG, [f"input_size={SIZE}", "weights=null", "batch_size=4", "epochs=1",
                                       "dense_units=16", f"out_dir={tmp_path / 'runs'}", "map_stride=8",
                                       f"map_crop={SIZE // 2}", "map_pointing_weight=1", "input_workers=2",
                                       "monitor=val_lesion_map_pointing"])
    config = dataclasses.replace(config, data=(DataSource(str(root), "fracatlas", str(split_file)),))
    train_module.run(config)
    history = pd.read_csv(config.run_dir / "history.csv")
    assert np.isfinite(history["lesion_map_loss"]).all() and "val_lesion_map_pointing" in history
    model = keras.saving.load_model(config.run_dir / "best.keras", compile=False, safe_mode=True)
    assert model.input_shape == (None, SIZE, SIZE, 3)
    assert "tensorflow" not in sys.modules


@pytest.mark.skipif(backend.name() != backend.JAX, reason="keras.distribution.DataParallel is JAX's")
def test_jax_trains_data_parallel_over_two_devices(mini_fracatlas, tmp_path):
    """Two CPU devices (XLA_FLAGS): a batch of 3 per device is 6, split in two."""
    root, split_file = mini_fracatlas
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "KERAS_BACKEND": "jax",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("data_parallel_task.py")), str(root),
                           str(split_file), str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found == {"devices": 2, "epochs_run": 1}
    history = pd.read_csv(tmp_path / "data_parallel" / "history.csv")
    assert np.isfinite(history["loss"]).all()


def test_the_bundled_weights_predict_through_onnx_without_tensorflow():
    """The bundled ensemble's ONNX graphs (ONNX Runtime): the evaluation's probabilities for the samples,
    both lesion maps and Grad-CAM, and no TensorFlow."""
    from mura_core.ensemble import load_ensemble

    ensemble = load_ensemble(ROOT / "weights")
    assert set(ensemble.runtimes.values()) == {"onnx"}
    assert ensemble.cam_methods == ["gradcam", "lesion_map"]  # the others need TensorFlow
    recorded = pd.read_csv(ROOT / "weights" / "report" / "predictions.csv")
    recorded = recorded.set_index(recorded["path"].map(lambda p: Path(p).name))["ensemble"]
    study = [SAMPLES / "IMG0000019.jpg", SAMPLES / "IMG0000045.jpg"]
    for method in ensemble.cam_methods:
        found = ensemble.predict_study(study, explain=True, method=method)
        for path, image in zip(study, found.images):
            assert abs(image.ensemble - recorded[path.name]) <= 1e-4
            heat = image.heatmaps["ensemble"]
            assert heat.ndim == 2 and heat.min() >= 0.0 and heat.max() <= 1.0 and heat.max() > heat.min()
    assert "tensorflow" not in sys.modules
