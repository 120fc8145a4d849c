"""Lesion boxes in training and evaluation: box-following augmentation, lesion-map models, scoring at
native resolution, and the model-randomization sanity check, on tiny models and real radiographs."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mura_core import localization, sanity
from mura_core.ensemble import Ensemble, EnsembleLoadError, load_ensemble
from mura_core.gradcam import CamExplainer
from mura_core.heatmaps import resize_heatmap
from mura_core.localization import score_heatmap, thresholded_iou
from mura_core.pipeline import (
    MAX_BOXES,
    Augmentation,
    BoxIoU,
    BoxLoss,
    LesionMapLoss,
    PointingGame,
    augment_with_masks,
    box_masks,
    box_targets,
    erase_lesions,
    lesion_crops,
    lesion_targets,
    make_dataset,
    map_targets,
    paste_lesions,
)
from mura_core.regions import box_field
from mura_core.registry import (
    create_model,
    crop_trainer,
    load_weights_file,
    train_classifier_only,
    train_lesion_head_only,
)
from train.config import load_config

STRONG = Augmentation(rotation_degrees=30, shift=0.2, zoom=0.25, horizontal_flip=True)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


def test_a_box_drawn_into_an_image_lands_where_the_transformed_box_says():
    size = 96
    boxes = np.array([[[0.15, 0.20, 0.45, 0.40], [0.6, 0.65, 0.8, 0.9]]] * 6, np.float32)  # fractions
    masks = box_masks(boxes, size)
    images = masks * 255.0  # the boxes drawn into the images
    for seed in range(3):
        warped_images, warped_masks = augment_with_masks(STRONG, images, masks, seed)
        for image, mask in zip(warped_images.numpy(), warped_masks.numpy()):
            drawn, said = image[..., 0] > 127.5, mask[..., 0] > 0.5
            assert said.sum() > 50  # the boxes are still (mostly) in the picture
            assert _iou(drawn, said) > 0.98
    # And the warp did move the boxes: not all images equal the un-augmented masks.
    moved = [_iou(w[..., 0] > 0.5, masks[0, ..., 0] > 0.5) for w in warped_masks.numpy()]
    assert min(moved) < 0.8


def test_box_masks_and_map_targets():
    masks = box_masks(np.array([[[0.5, 0.0, 0.75, 0.25], [0, 0, 0, 0]]], np.float32), 32)
    assert masks.shape == (1, 32, 32, 1) and masks.sum() == 8 * 8
    cells = map_targets(masks, 4)[0, ..., 0]
    assert cells.tolist() == [[0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    tiny = box_masks(np.array([[[0.5, 0.5, 0.5001, 0.5001]]], np.float32), 32)
    assert tiny.sum() == 1  # a box thinner than a pixel still covers one


def test_coverage_cell_targets_weigh_the_cells_inside_a_box_over_its_ring():
    masks = box_masks(np.array([[[0.5, 0.0, 0.8125, 0.25]]], np.float32), 32)  # x 16-26 px, y 0-8 px
    assert map_targets(masks, 4)[0, 0, :, 0].tolist() == [0, 0, 1, 1]  # "touch": the 2-px sliver counts
    assert map_targets(masks, 4, "coverage")[0, 0, :, 0].tolist() == [0, 0, 1, 0.25]
    with pytest.raises(ValueError, match="unknown lesion-map cell rule 'centre'"):
        map_targets(masks, 4, "centre")
    with pytest.raises(ValueError, match="unknown lesion-map cell rule"):
        lesion_targets(pd.DataFrame({"path": [], "label": []}), {}, 4, "centre")

    metric = PointingGame()  # a peak on the sliver: a hit under "touch", a miss under "coverage"
    peak_on_sliver = np.zeros((1, 4, 4, 1), np.float32)
    peak_on_sliver[0, 0, 3] = 1
    metric.update_state(map_targets(masks, 4), peak_on_sliver)
    assert float(metric.result()) == 1.0
    metric.reset_state()
    metric.update_state(map_targets(masks, 4, "coverage"), peak_on_sliver)
    assert float(metric.result()) == 0.0


def _radiograph_with_box(path, width, height, box):
    x, y, w, h = box
    pixels = np.full((height, width), 40, np.uint8)
    pixels[y:y + h, x:x + w] = 230
    Image.fromarray(pixels).save(path)


def test_the_training_pipeline_gives_map_targets_that_follow_the_image(tmp_path):
    rows, boxes = [], {}
    for i in range(4):
        box = (20 + 10 * i, 30, 60, 50)
        _radiograph_with_box(tmp_path / f"pos{i}.png", 200, 160, box)  # not square: fractions matter
        rows.append({"path": str(tmp_path / f"pos{i}.png"), "label": 1})
        boxes[f"pos{i}.png"] = [box]
    Image.fromarray(np.tile(np.linspace(0, 120, 200, dtype=np.uint8), (160, 1))).save(tmp_path / "neg.png")
    rows += [{"path": str(tmp_path / "neg.png"), "label": 0}, {"path": str(tmp_path / "pos0.png"), "label": 1}]
    table = pd.DataFrame(rows)
    boxes_known = dict(boxes)
    targets = lesion_targets(table, boxes_known, map_size=8)
    assert targets.weight.tolist() == [1, 1, 1, 1, 1, 1]
    assert targets.boxes[0, 0].tolist() == pytest.approx([20 / 200, 30 / 160, 80 / 200, 80 / 160])
    unknown = lesion_targets(table, {}, map_size=8)
    assert unknown.weight.tolist() == [0, 0, 0, 0, 1, 0]  # positives without boxes are not trained

    ds = make_dataset(table, 128, 6, True, STRONG, seed=3, lesions=targets, class_weight={0: 2.0, 1: 0.5})
    images, y, weights = next(iter(ds))
    assert images.shape == (6, 128, 128, 3) and y["lesion_map"].shape == (6, 8, 8, 1)
    assert sorted(weights["probability"].numpy().tolist()) == [0.5] * 5 + [2.0]
    bright = map_targets(images.numpy()[..., :1] > 127.5, 8)
    for b, target, label in zip(bright, y["lesion_map"].numpy(), y["probability"].numpy()):
        if label == 0:
            assert target.sum() == 0
        else:
            assert _iou(b > 0.5, target > 0.5) > 0.75


def test_lesion_map_model_explains_saves_and_starts_from_a_classifier(tmp_path):
    keras.utils.set_random_seed(0)
    classifier = create_model("mobilenetv2", input_size=64, dense_units=8)
    classifier.save(tmp_path / "classifier.keras")
    model = create_model("mobilenetv2", weights=tmp_path / "classifier.keras", input_size=64, dense_units=8,
                         lesion_map=True)
    np.testing.assert_allclose(model.get_layer("head_logit").get_weights()[0],
                               classifier.get_layer("head_logit").get_weights()[0])
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.float32)
    out = model(images)
    assert out["probability"].shape == (2, 1) and out["lesion_map"].shape == (2, 4, 4, 1)
    np.testing.assert_allclose(out["probability"], classifier(images), atol=1e-5)

    explainer = CamExplainer(model, "out_relu")
    assert "lesion_map" in explainer.methods
    probs, maps = explainer.explain(images, "lesion_map")
    assert maps.shape == (2, 64, 64) and 0 <= maps.min() and maps.max() <= 1
    np.testing.assert_allclose(probs, out["probability"][:, 0], atol=1e-5)
    for method in ("gradcam", "gradcam++"):
        assert explainer.explain(images, method)[1].shape == (2, 64, 64)

    Ensemble({"m": model}, 0.5).save(tmp_path / "ens")
    reloaded = load_ensemble(tmp_path / "ens")
    assert "lesion_map" in reloaded.cam_methods

    manifest = json.loads((tmp_path / "ens" / "manifest.json").read_text())
    entry = manifest["members"][0]
    assert (entry["gradcam_layer"], entry["map_layer"], entry["map_stride"], entry["map_positive_weight"]) == (
        "out_relu", "block_13_expand_relu", 16, 1.0)
    assert entry["map_evidence"] == 0.0  # the classifier's probability alone
    assert reloaded.heatmap_layers["m"] == {k: entry[k] for k in ("gradcam_layer", "map_layer", "map_stride",
                                                                  "map_positive_weight", "map_evidence")}
    assert reloaded.heatmap_layer("m", "lesion_map") == "block_13_expand_relu"
    for key, value, words in (("map_stride", 8, "stride 8 does not cover"), ("map_layer", "nope", "not a layer"),
                              ("map_positive_weight", -2, "map_positive_weight must be a number > 0")):
        (tmp_path / "ens" / "manifest.json").write_text(json.dumps(
            {**manifest, "members": [{**entry, key: value}]}))
        with pytest.raises(EnsembleLoadError, match=words):
            load_ensemble(tmp_path / "ens")
    (tmp_path / "ens" / "manifest.json").write_text(json.dumps(manifest))
    result = reloaded.predict_study([images[0].astype(np.uint8)], explain=True, method="lesion_map")
    assert set(result.images[0].heatmaps) == {"m", "ensemble"}
    default = reloaded.predict_study([images[0].astype(np.uint8)], explain=True)  # the dashboard's default
    assert default.cam_method == reloaded.default_cam_method == "lesion_map"
    np.testing.assert_allclose(default.images[0].heatmaps["ensemble"], result.images[0].heatmaps["ensemble"])
    # a member trained with lesion cells weighted 20 times: its map is read as a probability, peak kept
    (tmp_path / "ens" / "manifest.json").write_text(json.dumps(
        {**manifest, "members": [{**entry, "map_positive_weight": 20.0}]}))
    weighted = load_ensemble(tmp_path / "ens").predict_study([images[0].astype(np.uint8)], explain=True)
    raw, read = result.images[0].heatmaps["m"], weighted.images[0].heatmaps["m"]
    np.testing.assert_allclose(read, raw / (raw + 20 * (1 - raw)), rtol=1e-5, atol=1e-7)
    assert np.all(read <= raw + 1e-7) and np.unravel_index(read.argmax(), read.shape) == np.unravel_index(
        raw.argmax(), raw.shape)
    assert weighted.images[0].probabilities == result.images[0].probabilities
    (tmp_path / "ens" / "manifest.json").write_text(json.dumps(manifest))
    mixed = Ensemble({"m": model, "c": classifier}, 0.5)
    assert "lesion_map" not in mixed.cam_methods
    assert mixed.predict_study([images[0].astype(np.uint8)], explain=True).cam_method == "gradcam"
    with pytest.raises(ValueError, match="lesion_map"):
        mixed.predict_study([images[0].astype(np.uint8)], explain=True, method="lesion_map")

    loss = LesionMapLoss(10.0)
    target = np.zeros((2, 4, 4, 1), np.float32)
    target[:, 0, 0] = 1
    assert float(loss(target, np.full_like(target, 0.5))) > float(loss(target, target * 0.9 + 0.05))

    model.save(tmp_path / "with_map.keras")  # a lesion-map model does not fit a plain classifier
    with pytest.raises(ValueError, match="map_reduce"):
        load_weights_file(create_model("mobilenetv2", input_size=64, dense_units=8), tmp_path / "with_map.keras")


def test_the_decoder_starts_from_a_stride_16_lesion_model_and_maps_at_stride_8(tmp_path):
    keras.utils.set_random_seed(0)
    coarse = create_model("mobilenetv2", input_size=64, dense_units=8, lesion_map=True)
    coarse.save(tmp_path / "stage3.keras")
    fine = create_model("mobilenetv2", input_size=96, dense_units=8, lesion_map=True, map_stride=8,
                        weights=tmp_path / "stage3.keras")  # another input size: the backbone is convolutional
    for name in ("map_reduce", "lesion_map", "head_logit", "block_6_expand"):  # every stage-3 weight carries over
        for a, b in zip(coarse.get_layer(name).get_weights(), fine.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert fine.get_layer("lesion_map").output.shape[1:] == (12, 12, 1)
    ensemble = Ensemble({"m": fine}, 0.5, heatmap_fusion="geometric")
    assert ensemble.heatmap_layers["m"]["map_stride"] == 8  # read off the model, not the spec's 16
    ensemble.save(tmp_path / "ens")
    loaded = load_ensemble(tmp_path / "ens")
    assert loaded.heatmap_layers["m"]["map_stride"] == 8 and loaded.heatmap_fusion == "geometric"
    pair = Ensemble({"fine": fine, "coarse": coarse}, 0.5,
                    architectures={"fine": "mobilenetv2", "coarse": "mobilenetv2"},
                    heatmap_fusion="geometric_by_resolution")
    pair.save(tmp_path / "pair")
    pair = load_ensemble(tmp_path / "pair")
    image = np.random.default_rng(1).integers(0, 256, (80, 90), dtype=np.uint8)
    maps = pair.predict_study([image], explain=True).images[0].heatmaps
    cells = [96 / 8, 64 / 16]  # each map's cells per side
    expected = np.exp((cells[0] * np.log(np.clip(maps["fine"], 1e-6, None))
                       + cells[1] * np.log(np.clip(resize_heatmap(maps["coarse"], (96, 96)), 1e-6, None))) / sum(cells))
    np.testing.assert_allclose(maps["ensemble"], expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="stride 16, 8, 4, not 2"):
        create_model("mobilenetv2", input_size=64, dense_units=8, lesion_map=True, map_stride=2)


def test_the_stride_4_step_starts_as_the_stride_8_model_and_trains_alone(tmp_path):
    keras.utils.set_random_seed(0)
    stride8 = create_model("mobilenetv2", input_size=64, dense_units=8, lesion_map=True, map_stride=8)
    stride8.save(tmp_path / "stride8.keras")
    model = create_model("mobilenetv2", input_size=64, dense_units=8, lesion_map=True, map_stride=4,
                         weights=tmp_path / "stride8.keras")
    assert model.get_layer("lesion_map").output.shape[1:] == (16, 16, 1)
    x = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3)).astype(np.float32)
    reference = np.asarray(stride8(x, training=False)["probability"])
    steps = keras.Model(model.input, [model.get_layer("map_up4").output, model.get_layer("map_refine").output])
    upsampled, refined = (np.asarray(t) for t in steps(x, training=False))
    np.testing.assert_array_equal(upsampled, refined)  # the new step starts as a plain x2 upsampling

    train_lesion_head_only(model)
    frozen = {layer.name: layer.get_weights() for layer in model.layers if not layer.trainable}
    assert "head_logit" in frozen and "block_6_expand_BN" in frozen and "map_finer" not in frozen
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss={"probability": keras.losses.BinaryCrossentropy(), "lesion_map": LesionMapLoss(20.0, 1.0)})
    boxes = np.zeros((4, 16, 16, 1), np.float32)
    boxes[:2, 5:8, 9:12] = 1.0
    model.fit(x, {"probability": np.array([1, 1, 0, 0], np.float32), "lesion_map": boxes}, epochs=2, verbose=0)
    for name, weights in frozen.items():  # the backbone (BatchNormalization statistics too) and the classifier
        for before, after in zip(weights, model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(before, after, err_msg=name)
    np.testing.assert_allclose(model(x, training=False)["probability"], reference, atol=1e-6)
    assert np.abs(model.get_layer("map_finer").get_weights()[0]).max() > 0


def test_erasing_a_fracture_makes_its_radiograph_a_negative_and_decoys_keep_their_labels():
    images = np.full((4, 64, 64, 1), 40.0, np.float32)
    masks = np.zeros((4, 64, 64, 1), np.float32)
    for i in (0, 2):  # two boxed positives; 1 is a positive without boxes, 3 a negative
        images[i, 20:30, 24:36], masks[i, 20:30, 24:36] = 230.0, 1.0
    images[:, 50:] = 120.0  # something for a decoy to fill in from
    labels = np.array([1, 1, 1, 0], np.float32)

    out, out_masks, out_labels, erased = erase_lesions(images, masks, labels, 0.999, np.random.default_rng(0))
    assert erased.tolist() == [True, False, True, False]
    assert out_labels.tolist() == [0, 1, 0, 0] and out_masks.sum() == 0
    for i in (0, 2):  # the box is filled in from the dark bone around it
        assert out[i, 20:30, 24:36].max() < 60
    for i in (1, 3):  # a decoy patch somewhere, the label kept
        assert np.any(out[i] != images[i])
    assert labels.tolist() == [1, 1, 1, 0] and masks.sum() == 240  # the inputs are untouched

    same = erase_lesions(images, masks, labels, 0.0, np.random.default_rng(0))
    assert same[0] is images and not same[3].any()


def _bone_batch():
    """Four 96 px radiographs: dark background, a bright bone band; image 0 a boxed positive whose box
    holds a cross, 1 a positive without boxes, 2 and 3 negatives."""
    images = np.full((4, 96, 96, 1), 30.0, np.float32)
    images[:, :, 30:70] = 170.0  # the bone
    images[:, :, 45:48] = 200.0  # its cortex: the brightest tenth
    masks = np.zeros((4, 96, 96, 1), np.float32)
    images[0, 40:52, 34:46], masks[0, 40:52, 34:46] = 120.0, 1.0
    images[0, 45:47, 34:46] = images[0, 40:52, 39:41] = 250.0  # the fracture: a cross
    return images, masks, np.array([1, 1, 0, 0], np.float32), np.array([True, False, True, True])


def test_a_pasted_fracture_lands_on_bone_with_its_mask_and_label():
    images, masks, labels, known = _bone_batch()
    out, out_masks, out_labels, pasted = paste_lesions(images, masks, labels, known, 0.999,
                                                       np.random.default_rng(0))
    assert pasted.tolist() == [True, False, True, True] and out_labels.tolist() == [1, 1, 1, 1]
    assert not out_masks[1].any()  # a positive without boxes: its own fracture is unmarked, nothing added
    for i in (2, 3):
        lesion = out_masks[i, ..., 0] > 0.5
        assert lesion.sum() == 144  # the source's box, moved
        ys, xs = np.nonzero(lesion)
        assert 30 <= xs.min() and xs.max() < 70  # on the bone
        box = out[i, ys.min():ys.max() + 1, xs.min():xs.max() + 1, 0]
        cross = np.zeros((12, 12), bool)
        cross[5:7], cross[:, 5:7] = True, True
        assert box[cross].mean() > box[~cross].mean() + 50  # the cross came with it, blended
    assert labels.tolist() == [1, 1, 0, 0] and masks.sum() == 144 and images[2].max() == 200  # inputs untouched

    same = paste_lesions(images, masks, labels, known, 0.0, np.random.default_rng(0))
    assert same[0] is images and not same[3].any()


def test_decoys_change_images_but_not_their_labels_or_masks():
    images, masks, labels, known = _bone_batch()
    changed = 0
    for seed in range(8):
        out, out_masks, out_labels, pasted = paste_lesions(images, masks, labels, np.zeros(4, bool), 0.999,
                                                           np.random.default_rng(seed))
        assert not pasted.any() and out_labels.tolist() == [1, 1, 0, 0]
        np.testing.assert_array_equal(out_masks, masks)
        changed += int(np.any(out != images))
    assert changed >= 6  # a decoy finds a place on the bone in most draws


def _boxed_positives(folder, n=4):
    """`n` fractured radiographs (200 x 160, a bright box each, at different places) and their boxes."""
    rows, boxes = [], {}
    for i in range(n):
        box = (20 + 10 * i, 30, 60, 50)
        _radiograph_with_box(folder / f"pos{i}.png", 200, 160, box)
        rows.append({"path": str(folder / f"pos{i}.png"), "label": 1})
        boxes[f"pos{i}.png"] = [box]
    return pd.DataFrame(rows), boxes


def _first_batch(tf_data, table, size, training, **kwargs):
    """The first batch of 4 of `make_dataset` (tf.data) or of `ImageBatches`, as NumPy arrays."""
    from mura_core.pipeline import ImageBatches

    if tf_data:
        return [t.numpy() if not isinstance(t, dict) else {k: v.numpy() for k, v in t.items()}
                for t in next(iter(make_dataset(table, size, 4, training, **kwargs)))]
    return ImageBatches(table, size, 4, training, **kwargs)[0]


@pytest.mark.parametrize("tf_data", [True, False])
def test_training_with_erased_fractures_relabels_them_in_both_pipelines(tmp_path, tf_data):
    table, boxes = _boxed_positives(tmp_path)
    targets = lesion_targets(table, boxes, map_size=8, erase_fraction=0.999)

    def batch(training):
        return _first_batch(tf_data, table, 64, training, lesions=targets, class_weight={0: 2.0, 1: 0.5})

    images, y, w = batch(training=True)
    assert y["probability"].tolist() == [0, 0, 0, 0] and y["lesion_map"].sum() == 0
    assert w["probability"].tolist() == [2.0] * 4 and w["lesion_map"].tolist() == [1.0] * 4
    assert images.max() < 100  # no bright box left
    images, y, w = batch(training=False)  # validation sees the radiographs as they are
    assert y["probability"].tolist() == [1, 1, 1, 1] and y["lesion_map"].sum() > 0 and images.max() > 200
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        lesion_targets(table, boxes, map_size=8, erase_fraction=1.0)


@pytest.mark.parametrize("tf_data", [True, False])
def test_training_with_pasted_fractures_in_both_pipelines(tmp_path, tf_data):
    table, boxes = _boxed_positives(tmp_path, n=1)
    for i in range(3):
        Image.fromarray(np.tile(np.r_[np.full(60, 40), np.full(80, 200), np.full(60, 40)].astype(np.uint8),
                                (160, 1))).save(tmp_path / f"neg{i}.png")  # a vertical bone band
    table = pd.concat([table, pd.DataFrame({"path": [str(tmp_path / f"neg{i}.png") for i in range(3)],
                                            "label": 0})], ignore_index=True)
    targets = lesion_targets(table, boxes, map_size=8, paste_fraction=0.999)

    def batch(training):
        return _first_batch(tf_data, table, 64, training, lesions=targets, class_weight={0: 2.0, 1: 0.5})

    images, y, w = batch(training=True)
    assert y["probability"].tolist() == [1, 1, 1, 1] and np.all(y["lesion_map"].reshape(4, -1).max(axis=1) > 0)
    assert sorted(w["probability"].tolist()) == [0.5, 2.0, 2.0, 2.0]  # each row keeps its class weight (shuffled)
    images, y, w = batch(training=False)  # validation sees the radiographs as they are
    assert y["probability"].tolist() == [1, 0, 0, 0] and y["lesion_map"][1:].sum() == 0
    with pytest.raises(ValueError, match=r"map_paste_fraction: expected a share in \[0, 1\)"):
        lesion_targets(table, boxes, map_size=8, paste_fraction=1.0)


@pytest.mark.parametrize("override,message", [(["train_layers=backbone"], "one of all, lesion_map, classifier"),
                                              (["train_layers=lesion_map"], "needs lesion_map: true"),
                                              (["map_erase_fraction=1.0", "lesion_map=true"], r"in \[0, 1\)"),
                                              (["map_erase_fraction=0.3"], "needs lesion_map: true"),
                                              (["map_paste_fraction=1.0", "lesion_map=true"],
                                               r"map_paste_fraction: expected a share in \[0, 1\)"),
                                              (["map_paste_fraction=0.2"], "needs lesion_map: true"),
                                              (["map_crop=100", "lesion_map=true"], "a multiple of 32 below"),
                                              (["map_crop=320", "lesion_map=true"], "below the input size 320"),
                                              (["map_crop=160"], "needs lesion_map: true"),
                                              (["map_crop=160", "lesion_map=true", "train_layers=classifier"],
                                               "choose one")])
def test_lesion_map_settings_are_checked_when_the_config_is_read(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, override)


def test_a_crop_holds_its_image_and_mask_at_the_same_place_and_mostly_the_lesion():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (200, 96, 96, 1)).astype(np.float32)
    masks = np.zeros((200, 96, 96, 1), np.float32)
    masks[:100, 70:80, 5:12] = 1.0  # a lesion near a corner in the first half; the others have none
    crops, crop_masks = lesion_crops(images, masks, 32, np.random.default_rng(1))
    assert crops.shape == (200, 32, 32, 1) and crop_masks.shape == (200, 32, 32, 1)
    for image, crop, mask, crop_mask in zip(images, crops, masks, crop_masks):  # one place for both
        top, left = (int(v[0]) for v in np.nonzero(image[..., 0] == crop[0, 0, 0]))
        np.testing.assert_array_equal(image[top:top + 32, left:left + 32], crop)
        np.testing.assert_array_equal(mask[top:top + 32, left:left + 32], crop_mask)
    holding = crop_masks.reshape(200, -1).max(axis=1) > 0
    assert 0.6 < holding[:100].mean() < 0.9  # CROP_ON_LESION (0.75) of them, the rest anywhere
    assert not holding[100:].any()
    assert lesion_crops(images, masks, 96, rng)[0].shape == images.shape  # a crop may be the whole image


@pytest.mark.parametrize("tf_data", [True, False])
def test_training_on_crops_in_both_pipelines_and_validating_on_whole_images(tmp_path, tf_data):
    table, boxes = _boxed_positives(tmp_path)
    targets = lesion_targets(table, boxes, map_size=16, cell_rule="coverage", crop=32)
    assert targets.crop_map_size(64) == 8

    def batch(training):
        return _first_batch(tf_data, table, 64, training, augmentation=STRONG, seed=2, lesions=targets,
                            class_weight={0: 2.0, 1: 0.5})

    images, y, w = batch(training=True)
    assert images.shape == (4, 32, 32, 3) and y["lesion_map"].shape == (4, 8, 8, 1)
    assert w["probability"].tolist() == [0.0] * 4  # a crop's label is not its image's
    assert w["lesion_map"].tolist() == [1.0] * 4
    bright = map_targets(images[..., :1] > 127.5, 8, "coverage")
    for b, target in zip(bright, y["lesion_map"]):  # the targets follow the crop
        assert np.abs(b - target).mean() < 0.05
    images, y, w = batch(training=False)
    assert images.shape == (4, 64, 64, 3) and y["lesion_map"].shape == (4, 16, 16, 1)
    assert w["probability"].tolist() == [0.5] * 4


def test_a_crop_trainer_trains_the_whole_image_model_but_not_its_statistics_or_classifier(tmp_path):
    keras.utils.set_random_seed(0)
    model = create_model("mobilenetv2", input_size=64, dense_units=8, lesion_map=True, map_stride=8)
    twin = crop_trainer(model, 32)
    assert twin.input_shape == (None, 32, 32, 3) and model.input_shape == (None, 64, 64, 3)
    assert twin.output["lesion_map"].shape[1:] == (4, 4, 1)
    assert twin.get_layer("Conv1") is model.get_layer("Conv1")
    frozen = {layer.name: layer.get_weights() for layer in model.layers
              if layer.name.startswith("head_") or isinstance(layer, keras.layers.BatchNormalization)}
    conv = model.get_layer("Conv1").get_weights()[0].copy()
    twin.compile(optimizer=keras.optimizers.Adam(1e-2),
                 loss={"probability": keras.losses.BinaryCrossentropy(), "lesion_map": LesionMapLoss(20.0, 1.0)})
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    boxes = np.zeros((4, 4, 4, 1), np.float32)
    boxes[:2, 1:3, 2:4] = 1.0
    twin.fit(x, {"probability": np.ones(4, np.float32), "lesion_map": boxes},
             sample_weight={"probability": np.zeros(4, np.float32), "lesion_map": np.ones(4, np.float32)},
             epochs=2, verbose=0)
    assert np.abs(model.get_layer("Conv1").get_weights()[0] - conv).max() > 0  # the backbone trained
    for name, weights in frozen.items():
        for before, after in zip(weights, model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(before, after, err_msg=name)
    model.save(tmp_path / "whole.keras")  # what a checkpoint holds: the whole-image model
    assert keras.saving.load_model(tmp_path / "whole.keras", compile=False).input_shape == (None, 64, 64, 3)
    with pytest.raises(ValueError, match="has none"):
        crop_trainer(create_model("mobilenetv2", input_size=64, dense_units=8), 32)


def test_the_classifier_alone_trains_on_the_features_a_crop_run_left():
    keras.utils.set_random_seed(0)
    model = create_model("mobilenetv2", input_size=64, dense_units=8, lesion_map=True, map_stride=8)
    train_classifier_only(model)
    frozen = {layer.name: layer.get_weights() for layer in model.layers if not layer.trainable}
    assert "Conv1" in frozen and "lesion_map" in frozen and "head_dense" not in frozen
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss={"probability": keras.losses.BinaryCrossentropy(), "lesion_map": LesionMapLoss(20.0, 1.0)})
    x = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3)).astype(np.float32)
    before = model.get_layer("head_logit").get_weights()[0].copy()
    model.fit(x, {"probability": np.array([1, 1, 0, 0], np.float32), "lesion_map": np.zeros((4, 8, 8, 1))},
              epochs=2, verbose=0)
    assert np.abs(model.get_layer("head_logit").get_weights()[0] - before).max() > 0
    for name, weights in frozen.items():  # the backbone, its statistics and the map
        for old, new in zip(weights, model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(old, new, err_msg=name)
    with pytest.raises(ValueError, match="no lesion-map head to train"):
        train_lesion_head_only(create_model("mobilenetv2", input_size=64, dense_units=8))


def test_a_run_on_crops_validates_and_keeps_whole_image_models(tmp_path):
    from train import train as train_module

    data = _fracatlas_subset(tmp_path / "fracatlas", n_fractured=4, n_normal=4)
    names = sorted(p.name for p in (data / "images").iterdir())
    splits = pd.DataFrame({"path_key": [f"images/{n}" for n in names],
                           "split": ["val" if i % 4 == 0 else "train" for i in range(len(names))]})
    splits.to_csv(tmp_path / "splits.csv", index=False)
    config = load_config(None, [
        "name=crops", "model=mobilenetv2", "weights=", "input_size=64", "val_split=val",
        f"data={{root: {data}, split_file: {tmp_path / 'splits.csv'}}}",
        "batch_size=4", "epochs=2", "dense_units=8", f"out_dir={tmp_path / 'runs'}", "lesion_map=true",
        "map_stride=8", "map_crop=32", "map_pointing_weight=1", "keep_epochs=true", "map_boxes=true",
        "monitor=val_lesion_map_pointing"])
    result = train_module.run(config)
    history = pd.read_csv(config.run_dir / "history.csv")
    assert history["epoch"].tolist() == [0, 1]
    assert {"val_lesion_map_pointing", "val_probability_auc", "lesion_map_loss", "lesion_box_loss",
            "val_lesion_box_box_iou"} <= set(history.columns)
    for path in [config.run_dir / "best.keras", *sorted((config.run_dir / "epochs").iterdir())]:
        assert keras.saving.load_model(path, compile=False).input_shape == (None, 64, 64, 3), path
    assert 0.0 <= result["threshold"] <= 1.0


def test_the_pointing_term_rewards_a_peak_in_the_box_and_hard_negatives_the_bright_bone_outside():
    target = np.zeros((1, 8, 8, 1), np.float32)
    target[0, 2, 3] = 1
    background = np.full_like(target, 0.1)
    in_box, outside = background.copy(), background.copy()
    in_box[0, 2, 3] = outside[0, 6, 6] = 0.6  # the same pixel loss but for the cell that peaks
    pointing = LesionMapLoss(20.0, pointing_weight=1.0)
    assert float(pointing(target, in_box)) < float(pointing(target, outside))
    plain = LesionMapLoss(20.0)
    assert float(pointing(target, in_box)) > float(plain(target, in_box))  # the term adds to the pixel loss
    normal = np.zeros_like(target)  # an image without boxes: no pointing term
    assert float(pointing(normal, outside)) == pytest.approx(float(plain(normal, outside)))
    hard = LesionMapLoss(20.0, hard_negative_weight=1.0)
    spread, peaked = np.full_like(target, 0.2), np.full_like(target, 0.1)
    peaked[0, 5:7, 5:7] = 0.5  # about the same mean but a bright spot outside the box
    assert float(hard(normal, peaked)) - float(plain(normal, peaked)) > float(hard(normal, spread)) - float(
        plain(normal, spread))
    assert LesionMapLoss.from_config(hard.get_config()).hard_negative_weight == 1.0

    metric = PointingGame()
    maps = np.stack([in_box[0], outside[0], outside[0]])
    targets = np.stack([target[0], target[0], normal[0]])  # the third has no box: not counted
    metric.update_state(targets, maps)
    assert float(metric.result()) == pytest.approx(0.5)
    metric.update_state(targets, maps, sample_weight=np.array([0.0, 1.0, 1.0]))  # a positive without boxes
    assert float(metric.result()) == pytest.approx(1 / 3)


def test_the_peak_margin_scores_the_highest_cell_against_the_highest_box_cell():
    target = np.zeros((1, 8, 8, 1), np.float32)
    target[0, 2:4, 2:4] = 1.0
    target[0, 2:4, 4] = 0.25  # the ring under the coverage rule: partly covered cells
    spread = np.full_like(target, 0.1)
    spread[0, 2:4, 2:4] = 0.5  # the box's cells carry most of the map's mass ...
    near_miss = spread.copy()
    near_miss[0, 3, 4] = 0.6  # ... but the peak is on the ring, just outside the box
    on_box = spread.copy()
    on_box[0, 3, 3] = 0.6
    plain, peak = LesionMapLoss(20.0), LesionMapLoss(20.0, peak_weight=1.0)

    def term(maps):
        return float(peak(target, maps)) - float(plain(target, maps))

    assert term(near_miss) > term(on_box) > 0.0
    confident = spread.copy()
    confident[0, 3, 3] = 0.999  # the box's peak beats every other cell by far more than the margin
    assert term(confident) < 0.01
    normal = np.zeros_like(target)  # an image without boxes: no peak term
    assert float(peak(normal, near_miss)) == pytest.approx(float(plain(normal, near_miss)))
    assert LesionMapLoss.from_config(peak.get_config()).peak_weight == 1.0


def test_scores_are_computed_at_the_native_resolution():
    heat = np.zeros((32, 32), np.float32)
    heat[4:8, 24:28] = 1.0  # top right at the model's input size
    native = (200, 600)  # a wide image: the box in native pixels
    hit_box, miss_box = [(450, 25, 120, 30)], [(20, 150, 100, 40)]
    assert score_heatmap(heat, hit_box, native)["hit"] is True
    scores = score_heatmap(heat, miss_box, native)
    assert scores["hit"] is False and scores["mass"] == 0 and scores["iou"] == 0
    assert score_heatmap(heat, hit_box, native)["box_area_fraction"] == pytest.approx(120 * 30 / (200 * 600))
    assert thresholded_iou(np.pad(np.ones((10, 10)), 5), [(5, 5, 10, 10)]) == 1.0


def test_model_randomization_moves_the_maps_of_a_tiny_model():
    keras.utils.set_random_seed(1)
    model = create_model("mobilenetv2", input_size=64, dense_units=8)
    stages = sanity.randomization_stages(model, "out_relu", (0.1, 0.5))
    assert [len(names) for _, names in stages] == sorted(len(names) for _, names in stages)
    assert set(stages[0][1]) == {"head_dense", "head_bn", "head_logit"}
    copy = sanity.randomized_copy(model, stages[1][1])
    changed = {layer.name for layer in model.layers
               if any(not np.array_equal(a, b)
                      for a, b in zip(layer.get_weights(), copy.get_layer(layer.name).get_weights()))}
    assert changed <= set(stages[1][1]) and "head_dense" in changed
    images = np.stack([np.asarray(Image.open(p).convert("L").resize((64, 64))) for p in _fracatlas(4)])
    images = np.repeat(images[..., None], 3, axis=-1).astype(np.float32)
    rows = sanity.model_randomization(model, "out_relu", images, fractions=(0.5,))
    assert [r["layers"] for r in rows] == [3, len(stages[-1][1])]
    assert all(r["spearman"] is None or -1 <= r["spearman"] <= 1 for r in rows)
    assert rows[-1]["spearman"] is None or rows[-1]["spearman_abs"] < 0.99
    _, trained = CamExplainer(model, "out_relu").explain(images)
    same = sanity.rank_correlations(trained, trained)
    assert np.allclose(same[~np.isnan(same)], 1)


def _fracatlas(n):
    from tests.data import FRACATLAS

    return sorted((FRACATLAS / "images").glob("*.jpg"))[:n]


def _fracatlas_subset(root, n_fractured=3, n_normal=3):
    """A FracAtlas-layout copy of a few fixture images: fractured ones with their boxes, and normals."""
    import json
    import shutil

    from tests.data import FRACATLAS as source
    csv = pd.read_csv(source / "dataset.csv")
    coco = json.loads((source / "annotations.json").read_text())
    boxed = {image["file_name"] for image in coco["images"]
             if any(a["image_id"] == image["id"] for a in coco["annotations"])}
    fractured = csv[(csv["fractured"] == 1) & csv["image_id"].isin(boxed)]
    chosen = pd.concat([fractured.head(n_fractured), csv[csv["fractured"] == 0].head(n_normal)])
    (root / "images").mkdir(parents=True)
    for image_id in chosen["image_id"]:
        shutil.copy(source / "images" / image_id, root / "images" / image_id)
    chosen.to_csv(root / "dataset.csv", index=False)
    keep = [image for image in coco["images"] if image["file_name"] in set(chosen["image_id"])]
    ids = {image["id"] for image in keep}
    (root / "annotations.json").write_text(json.dumps(
        {**coco, "images": keep, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}))
    return root


def test_evaluate_scores_both_heatmaps_draws_the_gallery_and_runs_the_sanity_check(tmp_path):
    import json

    from train import evaluate
    from train.model_card import model_card

    data = _fracatlas_subset(tmp_path / "fracatlas")
    keras.utils.set_random_seed(2)
    members = {"m": create_model("mobilenetv2", input_size=64, dense_units=8, lesion_map=True),
               "e": create_model("efficientnetb0", input_size=64, dense_units=8, lesion_map=True)}
    Ensemble(members, 0.5, {"title": "tiny"}).save(tmp_path / "weights")
    out = tmp_path / "report"
    (out / "gallery").mkdir(parents=True)
    Image.new("L", (8, 8)).save(out / "gallery" / "best_IMG_from_an_older_evaluation.jpg")
    report = evaluate.evaluate(str(tmp_path / "weights"), str(data), str(out), n_boot=20, sanity_images=2)
    assert report["localization_method"] == "lesion_map"
    assert set(report["localization_by_method"]) == {"gradcam", "lesion_map"}
    for summary in report["localization_by_method"].values():
        assert set(summary) == {"m", "e", "ensemble"} and summary["ensemble"]["n"] == 3
        assert 0 <= summary["ensemble"]["iou"] <= 1
    assert report["localization"] == report["localization_by_method"]["lesion_map"]
    assert {case["kind"] for case in report["localization_gallery"]} <= {"best", "worst"}
    for case in report["localization_gallery"]:
        assert Image.open(out / case["picture"]).size[0] > 100
    cases = report["localization_gallery"] + report["detection_gallery"]
    assert sorted(p.name for p in (out / "gallery").iterdir()) == sorted(  # only this evaluation's cases
        case["picture"].removeprefix("gallery/") for case in cases)
    # the suspected regions scored as a detector over every image, normal ones included
    detection = report["detection"]
    assert detection["n_images"] == len(pd.read_csv(out / "predictions.csv")) and detection["n_boxes"] >= 3
    assert 0 <= detection["ap50_95"] <= detection["ap50"] <= 1 and detection["method"] == "lesion_map"
    assert detection["froc"]["fp_per_image"][0] == 0 and len(report["detection_gallery"]) >= 1
    for case in report["detection_gallery"]:
        assert case["kind"] in ("best", "worst") and Image.open(out / case["picture"]).size[0] > 100
    # does the fused map read as a probability: every pixel of the scored images in one bin or another
    reliability = report["map_reliability"]
    assert [b["low"] for b in reliability] == list(localization.RELIABILITY_EDGES[:-1])
    assert sum(b["pixels"] for b in reliability) > 0
    for b in reliability:
        assert b["pixels"] == 0 or (b["low"] <= b["mean"] <= b["high"] and 0 <= b["in_boxes"] <= 1)
    sanity_rows = report["sanity"]["members"]["m"]
    assert report["sanity"]["images"] == 2 and sanity_rows[0]["stage"] == "head"
    assert json.loads((out / "report.json").read_text())["sanity"] == report["sanity"]
    from mura_core.installed import read_manifest

    card = model_card(read_manifest(tmp_path / "weights"), report)
    assert "Lesion map localization" in card and "Sanity check" in card


def test_the_numpy_warp_is_the_tensorflow_warp():
    """`Augmentation.warp_arrays` (OpenCV, for JAX and PyTorch) and `Augmentation.__call__` (TensorFlow)
    apply the same matrices the same way."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 40, 48, 1)).astype(np.float32)
    matrices = STRONG.matrices(np.random.default_rng(5), 4, 40, 48).astype(np.float32)
    by_tf = tf.raw_ops.ImageProjectiveTransformV3(images=images, transforms=matrices, output_shape=[40, 48],
                                                  fill_value=0.0, interpolation="BILINEAR",
                                                  fill_mode="CONSTANT").numpy()
    (by_cv2,) = STRONG.warp_arrays(np.random.default_rng(5), images)
    inner = (slice(None), slice(2, -2), slice(2, -2))  # the image's border pixels blend with black differently
    assert np.abs(by_tf[inner] - by_cv2[inner]).mean() < 1.0
    assert np.percentile(np.abs(by_tf[inner] - by_cv2[inner]), 95) < 2.0


def test_image_batches_equal_the_tf_data_batches_without_augmentation(tmp_path):
    """The `PyDataset` input of JAX and PyTorch gives tf.data's images, targets and weights."""
    from mura_core.pipeline import ImageBatches

    rows, boxes = [], {}
    for i in range(5):
        box = (20 + 10 * i, 30, 60, 50)
        _radiograph_with_box(tmp_path / f"pos{i}.png", 200, 160, box)
        rows.append({"path": str(tmp_path / f"pos{i}.png"), "label": int(i < 3)})
        boxes[f"pos{i}.png"] = [box] if i < 3 else []
    table = pd.DataFrame(rows)
    targets = lesion_targets(table, boxes, map_size=4)
    tf_batches = list(make_dataset(table, 64, 2, False, lesions=targets, class_weight={0: 2.0, 1: 0.5}))
    ours = ImageBatches(table, 64, 2, False, lesions=targets, class_weight={0: 2.0, 1: 0.5})
    assert len(ours) == len(tf_batches) == 3
    for (x, y, w), (x2, y2, w2) in zip(tf_batches, (ours[i] for i in range(len(ours)))):
        np.testing.assert_array_equal(x.numpy(), x2)
        for key in ("probability", "lesion_map"):
            np.testing.assert_array_equal(y[key].numpy(), y2[key])
            np.testing.assert_array_equal(w[key].numpy(), w2[key])


def test_box_targets_encode_each_box_so_that_the_box_field_decodes_it():
    boxes = np.zeros((2, MAX_BOXES, 4), np.float32)
    boxes[0, 0] = (0.25, 0.125, 0.5, 0.3125)  # 16 x 12 px of 64: cells 4 to 7 by 2 to 4 at stride 4
    boxes[0, 1] = (0.8, 0.8, 0.82, 0.81)  # one pixel, smaller than a cell: its centre's cell regresses it
    targets = box_targets(box_masks(boxes, 64), 16)
    assert targets.shape == (2, 16, 16, 5) and targets[1].sum() == 0  # an image without boxes: nothing
    weight, fields = targets[0, ..., 0], box_field(targets[0, ..., 1:])
    rows, cols = np.nonzero(weight)
    decoded = {tuple(np.round(fields[r, c] * 64).astype(int)) for r, c in zip(rows, cols)}
    assert decoded == {(16, 8, 32, 20), (51, 51, 52, 52)}  # each box, to the pixel, from each of its cells
    assert weight[2:5, 4:8].all() and weight[12, 12] == 1 and weight.sum() == 4 * 3 + 1
    boxes[0, 1] = (0.3, 0.15, 0.35, 0.2)  # overlapping the first: their masks are one part, one box
    merged = box_targets(box_masks(boxes, 64), 16)
    assert merged[0, ..., 0].sum() == 12
    np.testing.assert_array_equal(merged[0, 2:5, 4:8], targets[0, 2:5, 4:8])


def test_the_touch_rule_trains_the_box_head_on_every_cell_the_lesion_map_marks():
    boxes = np.zeros((1, MAX_BOXES, 4), np.float32)
    boxes[0, 0] = (0.24, 0.1, 0.5, 0.3)  # not on the cell grid: a ring of partly covered cells
    boxes[0, 1] = (0.8, 0.8, 0.82, 0.81)  # smaller than a cell
    masks = box_masks(boxes, 64)
    touch, centre = box_targets(masks, 16, "touch"), box_targets(masks, 16)
    np.testing.assert_array_equal(touch[0, ..., 0], map_targets(masks, 16, "touch")[0, ..., 0])
    assert touch[0, ..., 0].sum() > centre[0, ..., 0].sum() and (touch[0, ..., 0] >= centre[0, ..., 0]).all()
    fields = box_field(touch[0, ..., 1:])
    decoded = {tuple(np.round(fields[r, c] * 64).astype(int)) for r, c in zip(*np.nonzero(touch[0, ..., 0]))}
    assert decoded == {tuple(np.round(fields[r, c] * 64).astype(int)) for r, c in zip(*np.nonzero(centre[0, ..., 0]))}
    with pytest.raises(ValueError, match="box-head cell rule 'ring'.*centre, touch"):
        box_targets(masks, 16, "ring")
    with pytest.raises(ValueError, match="box-head cell rule"):
        lesion_targets(pd.DataFrame({"path": [], "label": []}), {}, 16, box_head=True, box_cells="all")


def test_the_box_loss_is_zero_at_the_targets_and_the_iou_metric_one():
    boxes = np.zeros((2, MAX_BOXES, 4), np.float32)
    boxes[0, 0] = (0.25, 0.25, 0.5, 0.5)
    targets = box_targets(box_masks(boxes, 64), 8)
    exact = targets[..., 1:]
    off = exact + np.array([0.0, 0.0, np.log(2.0), 0.0], np.float32)  # every box twice as wide
    loss = BoxLoss(reduction=None)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loss(targets, exact)), [0.0, 0.0], atol=1e-7)
    wrong = keras.ops.convert_to_numpy(loss(targets, off))
    np.testing.assert_allclose(wrong, [0.5 * np.log(2.0) ** 2, 0.0], rtol=1e-5)  # Huber, inside its square part
    metric = BoxIoU()
    metric.update_state(targets, exact)
    assert float(metric.result()) == pytest.approx(1.0)
    metric.reset_state()
    metric.update_state(targets, off)
    assert float(metric.result()) == pytest.approx(0.5)


@pytest.mark.parametrize("tf_data", [True, False])
def test_both_pipelines_give_the_box_head_its_targets(tmp_path, tf_data):
    table, boxes = _boxed_positives(tmp_path)
    targets = lesion_targets(table, boxes, map_size=8, box_head=True)
    images, y, w = _first_batch(tf_data, table, 64, False, lesions=targets)
    assert y["lesion_box"].shape == (4, 8, 8, 5) and w["lesion_box"].tolist() == [1, 1, 1, 1]
    for i, (x, top, width, height) in enumerate(boxes[f"pos{k}.png"][0] for k in range(4)):
        rows, cols = np.nonzero(y["lesion_box"][i, ..., 0])
        decoded = box_field(y["lesion_box"][i, ..., 1:])[rows[0], cols[0]]
        expected = np.array([x / 200, top / 160, (x + width) / 200, (top + height) / 160])
        np.testing.assert_allclose(decoded, expected, atol=1.5 / 64)  # within the mask's pixel rounding
    without = _first_batch(tf_data, table, 64, False, lesions=lesion_targets(table, boxes, map_size=8))
    assert "lesion_box" not in without[1]


def test_the_box_head_sits_beside_the_map_and_starts_from_a_model_without_one(tmp_path):
    plain = create_model("mobilenetv2", input_size=64, dense_units=8, lesion_map=True, map_stride=8)
    plain.save(tmp_path / "plain.keras")
    boxed = create_model("mobilenetv2", tmp_path / "plain.keras", 64, dense_units=8, lesion_map=True,
                         map_stride=8, lesion_boxes=True)
    assert boxed.output["lesion_box"].shape == (None, 8, 8, 4)
    np.testing.assert_array_equal(boxed.get_layer("lesion_map").get_weights()[0],
                                  plain.get_layer("lesion_map").get_weights()[0])
    train_lesion_head_only(boxed)
    assert boxed.get_layer("lesion_box").trainable and boxed.get_layer("map_box_mix").trainable
    with pytest.raises(ValueError, match="lesion_map=True"):
        create_model("mobilenetv2", input_size=64, lesion_boxes=True)
