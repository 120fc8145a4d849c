"""Input pipeline: the deterministic steps equal inference's, augmentation, oversampling, cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from mura_core.pipeline import Augmentation, build_cache, make_dataset, oversample
from mura_core.preprocessing import load_for_model
from tests.mura_tree import fracatlas_images

SIZE = 48


@pytest.fixture(scope="module")
def table():
    rows = fracatlas_images(3, 3)
    return pd.DataFrame({"path": [str(p) for p, _ in rows], "label": [y for _, y in rows]})


def _all(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_validation_batches_equal_inference_preprocessing(table):
    x, y = _all(make_dataset(table, SIZE, 4, training=False))
    assert x.shape == (6, SIZE, SIZE, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(y, table["label"].to_numpy(np.float32))
    expected = np.stack([load_for_model(p, SIZE) for p in table["path"]]).astype(np.float32)
    np.testing.assert_array_equal(x, expected)


def test_training_shuffles_and_augments_but_keeps_labels(table):
    x, y = _all(make_dataset(table, SIZE, 4, training=True, augmentation=Augmentation(), seed=1))
    assert sorted(y.tolist()) == sorted(table["label"].astype(float).tolist())
    assert 0.0 <= x.min() and x.max() <= 255.0
    assert np.array_equal(x[..., 0], x[..., 2]), "gray radiographs stay gray"


def test_no_op_augmentation_is_identity():
    images = tf.random.uniform([3, 20, 24, 1], 0, 255)
    out = Augmentation(0.0, 0.0, 0.0, False)(images)
    np.testing.assert_allclose(out.numpy(), images.numpy(), atol=1e-3)


def test_flip_only_mirrors_or_keeps():
    images = tf.random.uniform([16, 10, 12, 1], 0, 255)
    out = Augmentation(0.0, 0.0, 0.0, True)(images, seed=3).numpy()
    flipped = [np.allclose(o, i[:, ::-1], atol=1e-3) for o, i in zip(out, images.numpy())]
    kept = [np.allclose(o, i, atol=1e-3) for o, i in zip(out, images.numpy())]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_rotation_and_shift_move_pixels_within_bounds():
    transforms = Augmentation(20.0, 0.2, 0.2, True).transforms(256, 100, 100, seed=0).numpy()
    scale = np.hypot(transforms[:, 0], transforms[:, 3])  # 1 / zoom
    assert np.all((scale >= 1 / 1.2 - 1e-6) & (scale <= 1 / 0.8 + 1e-6))
    angles = np.degrees(np.arctan2(-transforms[:, 3], transforms[:, 4]))
    assert np.abs(angles).max() <= 20.0 + 1e-4 and np.abs(angles).max() > 10.0


def test_oversample_duplicates_abnormal(table):
    doubled = oversample(table, 2)
    assert (doubled["label"] == 1).sum() == 2 * (table["label"] == 1).sum()
    assert (doubled["label"] == 0).sum() == (table["label"] == 0).sum()


def test_unreadable_training_image_is_skipped(table, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    with_bad = pd.concat([table, pd.DataFrame({"path": [str(bad)], "label": [1]})], ignore_index=True)
    x, _ = _all(make_dataset(with_bad, SIZE, 4, training=False))
    assert len(x) == len(table)


def test_cache_gives_the_same_pixels(table, tmp_path):
    build_cache(table["path"].tolist(), SIZE, tmp_path)
    direct, _ = _all(make_dataset(table, SIZE, 4, training=False))
    cached, _ = _all(make_dataset(table, SIZE, 4, training=False, cache=tmp_path))
    np.testing.assert_array_equal(direct, cached)
