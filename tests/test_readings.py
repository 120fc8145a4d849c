"""How a member reads an image: mirrored too (`mura_core.test_time`, manifest key "test_time_flip"), and with
its lesion map's say in its probability (`decision.member_probability`, member key "map_evidence")."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mura_core.regions import box_field
from mura_core.test_time import unmirror_codes


def _mirror_boxes(field: np.ndarray) -> np.ndarray:
    """(m, n, 4) boxes as fractions (x0, y0, x1, y1) -> the same boxes in the mirrored image, cell by cell."""
    field = field[:, ::-1]
    return np.stack([1 - field[..., 2], field[..., 1], 1 - field[..., 0], field[..., 3]], axis=-1)


def test_codes_read_on_a_mirrored_image_decode_to_the_mirrored_boxes():
    rng = np.random.default_rng(0)
    codes = rng.normal(0, 0.5, (2, 6, 6, 4)).astype(np.float32)  # the head's codes on two mirrored images
    back = unmirror_codes(codes)
    for mirrored, original in zip(codes, back):
        np.testing.assert_allclose(box_field(original), _mirror_boxes(box_field(mirrored)), atol=1e-6)
    np.testing.assert_allclose(unmirror_codes(back), codes)  # mirroring twice is the identity


@pytest.fixture(scope="module")
def boxed_model():
    import keras

    from mura_core.registry import create_model
    from tests.conftest import _with_sample_statistics

    keras.utils.set_random_seed(11)  # batch statistics from radiographs, so the outputs are not flat
    return _with_sample_statistics(create_model("mobilenetv2", input_size=64, dense_units=8, lesion_map=True,
                                                map_stride=8, lesion_boxes=True, bn_momentum=0.0), 64)


def _radiograph() -> np.ndarray:
    """A fixture radiograph at 128 x 128 px: twice the model's input, so that shrinking it to the input
    (area interpolation over 2 x 2 blocks) commutes with mirroring exactly."""
    from PIL import Image

    from tests.mura_tree import fracatlas_images

    path = fracatlas_images(1, 1)[0][0]
    return np.asarray(Image.open(path).convert("L").resize((128, 128)))


def test_a_mirroring_ensemble_reads_an_image_and_its_mirror_alike(boxed_model):
    from mura_core.ensemble import Ensemble

    gray = _radiograph()
    plain = Ensemble({"m": boxed_model}, threshold=0.5)
    mirroring = Ensemble({"m": boxed_model}, threshold=0.5, test_time_flip=True)
    as_is = mirroring.predict_study([gray], explain=True).images[0]
    mirrored = mirroring.predict_study([gray[:, ::-1].copy()], explain=True).images[0]
    assert as_is.ensemble == pytest.approx(mirrored.ensemble, abs=1e-5)
    np.testing.assert_allclose(as_is.heatmaps["ensemble"], mirrored.heatmaps["ensemble"][:, ::-1], atol=1e-5)
    np.testing.assert_allclose(as_is.box_field, _mirror_boxes(mirrored.box_field), atol=1e-5)
    # each reading is the mean of the plain ensemble's two
    readings = [plain.predict_study([g], explain=True).images[0] for g in (gray, gray[:, ::-1].copy())]
    assert as_is.ensemble == pytest.approx((readings[0].ensemble + readings[1].ensemble) / 2, abs=1e-5)
    assert abs(readings[0].ensemble - readings[1].ensemble) > 1e-4  # so the two readings do differ
    assert mirroring.predict_arrays([gray])["m"][0] == pytest.approx(as_is.ensemble, abs=1e-5)


def test_the_manifest_carries_the_setting_and_refuses_a_bad_one(boxed_model, tmp_path):
    from mura_core.ensemble import Ensemble, EnsembleLoadError, load_ensemble

    folder = Ensemble({"m": boxed_model}, threshold=0.5, test_time_flip=True).save(tmp_path / "weights")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["test_time_flip"] is True
    assert load_ensemble(folder).test_time_flip
    del manifest["test_time_flip"]  # a manifest written before the setting: no mirroring
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert not load_ensemble(folder).test_time_flip
    manifest["test_time_flip"] = "yes"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EnsembleLoadError, match=r"manifest\.json: test_time_flip must be true or false"):
        load_ensemble(folder)


def test_a_members_probability_takes_its_lesion_maps_evidence_on_every_path(boxed_model, tmp_path):
    from mura_core.decision import member_probability
    from mura_core.ensemble import Ensemble, EnsembleLoadError, load_ensemble
    from mura_core.heatmaps import peak_value

    gray = _radiograph()
    layers = {"map_positive_weight": 20.0}
    plain = Ensemble({"m": boxed_model}, threshold=0.5, heatmap_layers={"m": layers})
    read = plain.predict_study([gray], explain=True).images[0]
    expected = member_probability(read.probabilities["m"], peak_value(read.heatmaps["m"]), 0.5)
    assert abs(expected - read.probabilities["m"]) > 1e-3  # the map's say changes the probability
    weighed = Ensemble({"m": boxed_model}, threshold=0.5, heatmap_layers={"m": {**layers, "map_evidence": 0.5}})
    for explain, method in ((False, None), (True, None), (True, "gradcam")):
        image = weighed.predict_study([gray], explain=explain, method=method).images[0]
        assert image.probabilities["m"] == pytest.approx(expected, abs=1e-5)
        assert image.ensemble == pytest.approx(expected, abs=1e-5)
    assert weighed.predict_arrays([gray])["m"][0] == pytest.approx(expected, abs=1e-5)
    folder = weighed.save(tmp_path / "weights")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["members"][0]["map_evidence"] == 0.5
    assert load_ensemble(folder).predict_study([gray]).probability == pytest.approx(expected, abs=1e-5)
    manifest["members"][0]["map_evidence"] = 2
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EnsembleLoadError, match=r"member 'm': map_evidence must be a number in \[0, 1\]"):
        load_ensemble(folder)


def test_map_evidence_needs_a_lesion_map():
    import keras

    from mura_core.ensemble import Ensemble
    from mura_core.registry import create_model

    keras.utils.set_random_seed(12)
    model = create_model("mobilenetv2", input_size=64, dense_units=8)
    with pytest.raises(ValueError, match="member 'c': map_evidence 0.5 needs a lesion map"):
        Ensemble({"c": model}, heatmap_layers={"c": {"map_evidence": 0.5}})


def test_build_chooses_the_threshold_on_the_ensembles_own_readings(boxed_model, fracatlas, tmp_path):
    """With the map's evidence (or mirroring) the ensemble reads otherwise than its run did in training:
    build_ensemble predicts the run's validation images itself and chooses the threshold on that."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from mura_core.datasets import index_dataset
    from mura_core.ensemble import Ensemble, load_ensemble
    from train import build_ensemble
    from train.config import load_config, save_config

    config = load_config(None, ["name=boxed", "model=mobilenetv2", "weights=", "input_size=64", f"data={fracatlas}",
                                "lesion_map=true", "map_stride=8", "map_positive_weight=20",
                                f"out_dir={tmp_path}"])
    run = config.run_dir
    run.mkdir(parents=True)
    save_config(config, run / "config.yaml")
    boxed_model.save(run / "best.keras")
    (run / "history.csv").write_text("epoch,loss\n0,1.0\n")
    table = index_dataset(fracatlas, "fracatlas").table
    plain = Ensemble({"boxed": boxed_model}).predict_files(table["path"].tolist())
    pd.DataFrame({"path": table["path"], "label": table["label"], "probability": plain["ensemble"]}).to_csv(
        run / "val_predictions.csv", index=False)
    ensemble = build_ensemble.build([run], tmp_path / "weights", 0.8, {"title": "test"}, onnx=False,
                                    map_evidence=0.5)
    own = load_ensemble(tmp_path / "weights").predict_files(table["path"].tolist())["ensemble"]
    assert ensemble.info["validation"]["auc"] == pytest.approx(roc_auc_score(table["label"], own))
    assert ensemble.info["validation"]["auc"] != pytest.approx(roc_auc_score(table["label"], plain["ensemble"]))
    assert ensemble.heatmap_layers["boxed"]["map_evidence"] == 0.5


def test_build_takes_one_map_weight_or_one_per_run(tmp_path, capsys):
    """`--map-evidence` takes one weight for every member or one per run; any other count is refused, with
    nothing written."""
    from train import build_ensemble

    runs = [str(tmp_path / "a"), str(tmp_path / "b")]
    out = tmp_path / "weights"
    for weights, words in [(["0.5", "0.3", "0.1"], "give one weight or one per run (2), not 3"),
                           (["0.5", "1.5"], "must lie in [0, 1]")]:
        with pytest.raises(SystemExit):
            build_ensemble.main(["--runs", *runs, "--out", str(out), "--map-evidence", *weights])
        assert words in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"give one weight or one per run \(2\), not 3"):
        build_ensemble.build([tmp_path / "a", tmp_path / "b"], out, 0.8, {}, map_evidence=[0.5, 0.3, 0.1])
    assert not out.exists()
