"""Ensemble: study prediction, Grad-CAM, manifest with checksums, safe loading, concurrent use."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import pytest
from tf_keras_vis.gradcam import Gradcam

from mura_core.ensemble import Ensemble, EnsembleLoadError, load_ensemble
from mura_core.gradcam import CamExplainer, fuse_heatmaps, overlay, resize_heatmap
from mura_core.heatmaps import heatmap_peak, unweight_lesion_map
from mura_core.imaging import load_image
from mura_core.localization import pointing_game
from mura_core.registry import create_model
from tests.mura_tree import fracatlas_images


@pytest.fixture(scope="module")
def images():
    return [str(p) for p, _ in fracatlas_images(2, 2)]


@pytest.fixture(scope="module")
def ensemble():
    keras.utils.set_random_seed(3)
    members = {"mnv2": create_model("mobilenetv2", input_size=64, dense_units=8),
               "dn121": create_model("densenet121", input_size=32, dense_units=8)}
    return Ensemble(members, threshold=0.5, info={"title": "tiny"})


@pytest.fixture(scope="module")
def saved(ensemble, tmp_path_factory):
    return ensemble.save(tmp_path_factory.mktemp("ens") / "weights")


def test_predict_study_mean_of_members_and_images(ensemble, images):
    result = ensemble.predict_study(images)
    for image in result.images:
        assert image.ensemble == pytest.approx(np.mean(list(image.probabilities.values())))
    assert result.probability == pytest.approx(np.mean([r.ensemble for r in result.images]))
    assert result.verdict == ("abnormal" if result.probability >= 0.5 else "normal")
    assert set(result.to_frame().columns) >= {"image", "mnv2", "dn121", "ensemble", "verdict", "error"}
    json.dumps(result.to_dict())


def test_studies_batched_together_match_one_by_one(ensemble, images, tmp_path, monkeypatch):
    from mura_core import ensemble as ensemble_module
    from mura_core.results import Study

    wrist = tmp_path / "XR_WRIST" / "patient1"
    wrist.mkdir(parents=True)
    (wrist / "a.jpg").write_bytes(open(images[0], "rb").read())
    studies = [Study(images[:3]), Study([str(wrist / "a.jpg"), images[3]]), Study(images[1:2], body_part="XR_HAND")]
    decoded = []
    original = ensemble_module.load_image_info
    monkeypatch.setattr(ensemble_module, "load_image_info", lambda *a: decoded.append(a[0]) or original(*a))
    together = list(ensemble.predict_studies(studies, batch_size=2))
    assert len(decoded) == 6  # each file decoded once, colour and body part recorded then
    for study, batched in zip(studies, together):
        alone = ensemble.predict_study(study.images, body_part=study.body_part)
        assert batched.probability == pytest.approx(alone.probability, abs=1e-5)
        assert [r.ensemble for r in batched.images] == pytest.approx([r.ensemble for r in alone.images], abs=1e-5)
    assert [r.body_part for r in together] == ["", "XR_WRIST", "XR_HAND"]
    assert together[1].body_part_source == "file names"
    assert all(together[0].image_warning(r) == together[0].coverage_note for r in together[0].images)


def test_bad_file_reported_rest_predicted(ensemble, images, tmp_path):
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"")
    result = ensemble.predict_study([images[0], bad, images[1]])
    assert [r.ok for r in result.images] == [True, False, True]
    assert "empty" in result.images[1].error and result.errors[0].startswith("scan.png")
    assert result.probability is not None


def test_explain_gives_heatmaps_and_same_probabilities(ensemble, images):
    plain = ensemble.predict_study(images)
    explained = ensemble.predict_study(images, explain=True)
    for path, a, b in zip(images, plain.images, explained.images):
        assert a.ensemble == pytest.approx(b.ensemble, abs=1e-5)
        assert set(b.heatmaps) == {"mnv2", "dn121", "ensemble"}
        assert b.image.shape == load_image(path).shape  # native resolution; the dashboard shrinks it
        sides = {name: ensemble.input_size(name) for name in ensemble.names}
        sides["ensemble"] = max(sides.values())  # fused at the finest member map
        for name, heat in b.heatmaps.items():
            assert heat.shape == (sides[name], sides[name]) and heat.dtype == np.float32
            assert 0.0 <= heat.min() and heat.max() <= 1.0
        rgb = overlay(b.image, b.heatmaps["ensemble"], alpha=0.5)
        assert rgb.shape == (*b.image.shape, 3) and rgb.dtype == np.uint8


@pytest.mark.parametrize("method", ["gradcam++", "layercam"])
def test_alternative_cam_methods(ensemble, images, method):
    result = ensemble.predict_study(images[:1], explain=True, method=method)
    assert result.cam_method == method
    assert result.images[0].heatmaps["ensemble"].max() <= 1.0


def test_compiled_gradcam_equals_tf_keras_vis(images):
    keras.utils.set_random_seed(5)
    model = create_model("densenet121", input_size=64, dense_units=8)
    explainer = CamExplainer(model, "relu")
    from mura_core.preprocessing import load_for_model

    batch = np.stack([load_for_model(p, 64) for p in images]).astype(np.float32)
    _, ours = explainer._gradcam_fn(batch)
    reference = Gradcam(model, clone=False)(lambda out: out[:, 0], batch, penultimate_layer="relu",
                                            seek_penultimate_conv_layer=False, expand_cam=False,
                                            normalize_cam=False)
    np.testing.assert_allclose(ours.numpy(), np.asarray(reference), rtol=1e-4, atol=1e-7)


def test_fuse_is_mean_of_maps():
    a, b = np.zeros((4, 4), np.float32), np.ones((4, 4), np.float32)
    a[0, 0] = 1.0
    fused = fuse_heatmaps([a, b])
    assert fused.max() == pytest.approx(1.0) and fused[0, 0] == pytest.approx(1.0)
    assert fused[1, 1] == pytest.approx(0.0)


def test_unweighting_a_lesion_map_undoes_the_weight_of_its_training_loss():
    # the best output of a cross-entropy with positives weighted w, where a cell is a lesion with chance p
    w, p = 20.0, np.array([0.0, 0.001, 0.05, 1 / 21, 0.5, 0.9, 1.0], np.float32)
    trained = w * p / (w * p + 1 - p)
    np.testing.assert_allclose(unweight_lesion_map(trained, w), p, rtol=1e-5, atol=1e-7)
    assert unweight_lesion_map(np.float32(0.5), w) == pytest.approx(1 / 21)
    np.testing.assert_array_equal(unweight_lesion_map(trained, 1), trained)
    assert np.all(np.diff(unweight_lesion_map(np.linspace(0, 1, 101), w)) > 0)  # monotone: the peak stays
    with pytest.raises(ValueError, match="> 0"):
        unweight_lesion_map(trained, 0)


def test_a_maps_peak_value_is_its_height_after_the_pointing_blur():
    from mura_core.heatmaps import peak_value

    spot = np.zeros((64, 64), np.float32)
    spot[10, 10] = 1.0  # one bright cell
    region = np.zeros((64, 64), np.float32)
    region[40:52, 20:32] = 0.5  # a dimmer region of 12 x 12
    assert peak_value(spot, smoothing=0) == 1.0
    assert peak_value(spot) < 0.1 < 0.49 < peak_value(region) <= 0.5  # blurred, the region stands above the spot
    assert peak_value(spot + region) == pytest.approx(peak_value(region), abs=1e-3)
    assert peak_value(np.zeros((0, 0))) == 0.0 and peak_value(np.full((4, 4), np.nan)) == 0.0


def test_geometric_fusion_keeps_only_what_every_member_sees():
    coarse = np.full((4, 4), 0.1, np.float32)
    coarse[:2, :2] = 0.8  # a neighbourhood
    fine = np.full((4, 4), 0.05, np.float32)
    fine[1, 1], fine[3, 3] = 0.6, 0.7  # a spot inside it, and a brighter one outside
    mean = fuse_heatmaps([coarse, fine], normalize=False)
    geometric = fuse_heatmaps([coarse, fine], normalize=False, rule="geometric")
    assert np.unravel_index(mean.argmax(), mean.shape) == (1, 1)
    assert geometric[1, 1] == pytest.approx(np.sqrt(0.8 * 0.6), rel=1e-5)
    assert geometric[3, 3] == pytest.approx(np.sqrt(0.1 * 0.7), rel=1e-5) and geometric[3, 3] < mean[3, 3]
    assert geometric[1, 1] / geometric.sum() > mean[1, 1] / mean.sum()  # more of the mass on the spot
    with pytest.raises(ValueError, match="median"):
        fuse_heatmaps([coarse], rule="median")

    by_resolution = fuse_heatmaps([coarse, fine], [12, 56], normalize=False, rule="geometric_by_resolution")
    assert by_resolution[1, 1] == pytest.approx((0.8 ** 12 * 0.6 ** 56) ** (1 / 68), rel=1e-5)
    assert by_resolution[1, 1] / by_resolution.sum() > geometric[1, 1] / geometric.sum()  # the fine map has more say
    with pytest.raises(ValueError, match="resolution"):
        fuse_heatmaps([coarse, fine], rule="geometric_by_resolution")


def test_heatmap_peak_in_image_pixels():
    heat = np.zeros((20, 30), np.float32)
    heat[5, 7] = 1.0
    assert heatmap_peak(heat, heat.shape) == (5, 7)
    assert heatmap_peak(np.full((4, 4), 0.3), (40, 40)) is None  # a constant map points nowhere
    assert heatmap_peak(np.zeros((0, 0)), (40, 40)) is None

    coarse = np.zeros((4, 4), np.float32)
    coarse[1, 2] = 1.0  # in a 100 x 200 image: rows 25..49, columns 100..149, centre (37.5, 124.5)
    row, col = heatmap_peak(coarse, (100, 200))
    assert abs(row - 37.5) <= 1 and abs(col - 124.5) <= 1
    native = resize_heatmap(coarse, (100, 200))  # what the pointing game scores: the same pixel
    assert pointing_game(native, [(col, row, 1, 1)]) and not pointing_game(native, [(col + 2, row, 1, 1)])

    region = np.zeros((100, 100), np.float32)  # a compact hot region, and a lone brighter pixel elsewhere
    region[60:72, 20:32] = 0.8
    region[10, 80] = 1.0
    assert heatmap_peak(region, region.shape, smoothing=0) == (10, 80)
    row, col = heatmap_peak(region, region.shape)  # the default blur: the region's centre
    assert 60 <= row < 72 and 20 <= col < 32
    assert pointing_game(region, [(20, 60, 12, 12)])


def test_save_load_round_trip(ensemble, saved, images):
    manifest = json.loads((saved / "manifest.json").read_text())
    assert {m["architecture"] for m in manifest["members"]} == {"mobilenetv2", "densenet121"}
    assert all(len(m["sha256"]) == 64 for m in manifest["members"]) and manifest["heatmap_fusion"] == "mean"
    loaded = load_ensemble(saved)
    assert loaded.names == ensemble.names and loaded.info == {"title": "tiny"}
    a, b = ensemble.predict_study(images), loaded.predict_study(images)
    np.testing.assert_allclose([r.ensemble for r in a.images], [r.ensemble for r in b.images], atol=1e-6)


def _broken_copy(saved, tmp_path, change):
    folder = tmp_path / "broken"
    shutil.copytree(saved, folder)
    change(folder, json.loads((folder / "manifest.json").read_text()))
    return folder


def _truncate(folder, manifest):
    path = folder / manifest["members"][0]["file"]
    path.write_bytes(path.read_bytes()[:1000])


def _mismatch(folder, manifest):
    manifest["members"][0]["architecture"] = "densenet121"
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _wrong_size(folder, manifest):
    manifest["members"][0]["input_size"] = 320
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _corrupt_unchecked(folder, manifest):
    path = folder / manifest["members"][1]["file"]
    path.write_bytes(b"PK\x03\x04 not really a zip" * 10)
    manifest["members"][1]["sha256"] = __import__("mura_core.ensemble").ensemble.sha256_file(path)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("change,words", [
    (lambda f, m: (f / m["members"][0]["file"]).unlink(), "missing"),
    (_truncate, "checksum"),
    (_mismatch, "holds a 'mobilenetv2' model"),
    (_wrong_size, "does not match"),
    (_corrupt_unchecked, "cannot load"),
    (lambda f, m: (f / "manifest.json").write_text("{"), "unreadable manifest"),
    (lambda f, m: (f / "manifest.json").write_text(json.dumps({**m, "heatmap_fusion": "max"})), "heatmap_fusion"),
])
def test_broken_weights_name_the_file(saved, tmp_path, change, words):
    folder = _broken_copy(saved, tmp_path, change)
    with pytest.raises(EnsembleLoadError) as err:
        load_ensemble(folder)
    assert words in str(err.value) and str(folder) in str(err.value)


def test_concurrent_studies_are_not_mixed(ensemble, images):
    studies = [[images[i % 4], images[(i + 1) % 4]] for i in range(8)]
    serial = [ensemble.predict_study(s).probability for s in studies]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda s: ensemble.predict_study(s, explain=True).probability, studies))
    np.testing.assert_allclose(parallel, serial, atol=1e-5)
