"""tf.data input pipelines: the deterministic steps for everyone, augmentation for training only.

Deterministic: decode (`imaging.load_image`) -> `resize_square` -> uint8 (S, S, 3), the same
function the CLI and the dashboard use. Random (training only): rotation, shift, zoom and
horizontal flip, as Keras preprocessing layers on batches. Images that fail to decode are dropped
with a warning naming the file (indexing has already reported missing files).

For GPU training a preprocessed cache (`build_cache`) stores every image pre-resized in one
memory-mapped uint8 array, so an epoch does not wait on PNG decoding.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from .imaging import ImageLoadError, load_image
from .preprocessing import resize_square

log = logging.getLogger(__name__)
AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation (the method's: 20 deg rotation, 20% shift and zoom, h-flip).

    The four transforms are composed into one random affine map per image and applied with a single
    bilinear warp (`ImageProjectiveTransformV3`, the op behind Keras' RandomRotation / RandomZoom /
    RandomTranslation) on the one gray channel, instead of one warp per transform on three channels.
    Areas moved in from outside the image are black, like the radiograph's background.
    """

    rotation_degrees: float = 20.0
    shift: float = 0.2
    zoom: float = 0.2
    horizontal_flip: bool = True

    def transforms(self, batch: int, height: int, width: int, seed: int | None = None) -> tf.Tensor:
        """(batch, 8) projective transforms mapping output pixels to input pixels."""
        def uniform(low, high, offset):
            return tf.random.uniform([batch], low, high, seed=None if seed is None else seed + offset)

        angle = uniform(-1.0, 1.0, 1) * (self.rotation_degrees * np.pi / 180.0)
        zoom = uniform(1.0 - self.zoom, 1.0 + self.zoom, 2)
        tx = uniform(-self.shift, self.shift, 3) * width
        ty = uniform(-self.shift, self.shift, 4) * height
        flip = tf.ones([batch])
        if self.horizontal_flip:
            flip = tf.where(uniform(0.0, 1.0, 5) < 0.5, -1.0, 1.0)
        cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
        a00, a01, a10, a11 = flip * cos, flip * sin, -sin, cos
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        a2 = cx - a00 * (cx + tx) - a01 * (cy + ty)
        b2 = cy - a10 * (cx + tx) - a11 * (cy + ty)
        zeros = tf.zeros([batch])
        return tf.stack([a00, a01, a2, a10, a11, b2, zeros, zeros], axis=1)

    def __call__(self, images: tf.Tensor, seed: int | None = None) -> tf.Tensor:
        """Augment a batch (B, H, W, C) of float images."""
        shape = tf.shape(images)
        transforms = self.transforms(shape[0], images.shape[1], images.shape[2], seed)
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="CONSTANT")


def oversample(table: pd.DataFrame, factor: int, label_col: str = "label") -> pd.DataFrame:
    """Repeat the abnormal (label 1) rows `factor` times in total (factor 1 = unchanged)."""
    if factor <= 1:
        return table.reset_index(drop=True)
    positives = table[table[label_col] == 1]
    return pd.concat([table] + [positives] * (factor - 1), ignore_index=True)


def _decode(path: bytes, size: int) -> tuple[np.ndarray, bool]:
    """One image as (size, size, 1) uint8: `resize_square`'s pixels, one channel of the three."""
    name = path.decode()
    try:
        return resize_square(load_image(name), size)[..., :1], True
    except ImageLoadError as exc:
        log.warning("skipping %s", exc)
        return np.zeros((size, size, 1), np.uint8), False


def decode_dataset(paths: list[str], size: int) -> tf.data.Dataset:
    """Dataset of (image uint8 (S, S, 1), ok bool) decoded in parallel from file paths."""
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(paths, dtype=object).astype(str))
    return ds.map(lambda path: _load(path, size), num_parallel_calls=AUTOTUNE, deterministic=True)


def _load(path: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    image, ok = tf.numpy_function(lambda p: _decode(p, size), [path], [tf.uint8, tf.bool])
    image.set_shape((size, size, 1))
    ok.set_shape(())
    return image, ok


def make_dataset(
    table: pd.DataFrame,
    size: int,
    batch_size: int,
    training: bool,
    augmentation: Augmentation | None = None,
    seed: int = 0,
    cache: str | os.PathLike | None = None,
) -> tf.data.Dataset:
    """A batched dataset of (images float32 [0, 255] (B, S, S, 3), labels float32 (B,)).

    Args:
        table: rows with at least `path` and `label` (oversample beforehand if wanted).
        size: square input side.
        batch_size: batch size.
        training: shuffle each epoch and apply `augmentation`.
        augmentation: random transforms for training (None: none).
        seed: shuffle / augmentation seed.
        cache: a folder made by `build_cache` for this size (images read from it, not decoded).
    """
    if cache is not None:
        table = table[~table["path"].isin(cache_failures(cache, size))]
    labels = table["label"].to_numpy(np.float32)
    if cache is not None:
        images = open_cache(cache, size, table["path"].tolist())
        index = tf.data.Dataset.from_tensor_slices(np.arange(len(table), dtype=np.int64))
        ds = tf.data.Dataset.zip((index, tf.data.Dataset.from_tensor_slices(labels)))
        if training:
            ds = ds.shuffle(len(table), seed=seed, reshuffle_each_iteration=True)

        def read(i, label):
            image = tf.numpy_function(lambda j: images[j], [i], tf.uint8)
            image.set_shape((size, size, 1))
            return image, label

        ds = ds.map(read, num_parallel_calls=AUTOTUNE)
    else:
        paths = table["path"].astype(str).to_numpy()
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        if training:
            ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

        def load(path, label):
            image, ok = _load(path, size)
            return image, label, ok

        ds = ds.map(load, num_parallel_calls=AUTOTUNE).filter(_decoded).map(_drop_flag)
    ds = ds.batch(batch_size, drop_remainder=False).map(_to_float, num_parallel_calls=AUTOTUNE)
    if training and augmentation is not None:

        def augment(images, labels):
            return augmentation(images, seed), labels

        ds = ds.map(augment, num_parallel_calls=AUTOTUNE)
    return ds.map(_to_rgb, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def _decoded(image, label, ok):
    return ok


def _drop_flag(image, label, ok):
    return image, label


def _to_float(images, labels):
    return tf.cast(images, tf.float32), labels


def _to_rgb(images, labels):
    return tf.repeat(images, 3, axis=-1), labels


def build_cache(paths: list[str], size: int, folder: str | os.PathLike, batch: int = 256) -> Path:
    """Decode and resize every image once into `folder/images_<size>.npy` (memory-mapped uint8).

    The folder also gets `index_<size>.json` (paths in order, and the ones that failed to decode).
    Rebuilding is incremental only in the sense that an existing complete cache is reused.

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data_file, index_file = folder / f"images_{size}.npy", folder / f"index_{size}.json"
    if index_file.exists() and json.loads(index_file.read_text())["paths"] == list(paths):
        return folder
    tmp = folder / f"images_{size}.partial.npy"
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size))
    failed = []
    decoded = decode_dataset(list(paths), size).batch(batch).as_numpy_iterator()
    start = 0
    for images, ok in decoded:
        array[start:start + len(images)] = images[..., 0]
        failed += [paths[start + i] for i in np.flatnonzero(~ok)]
        start += len(images)
    array.flush()
    del array
    os.replace(tmp, data_file)
    index_file.write_text(json.dumps({"size": size, "paths": list(paths), "failed": failed}))
    return folder


def cache_failures(folder: str | os.PathLike, size: int) -> set[str]:
    """Paths that failed to decode when the cache was built (they are left out of training)."""
    return set(json.loads((Path(folder) / f"index_{size}.json").read_text())["failed"])


def open_cache(folder: str | os.PathLike, size: int, paths: list[str]) -> _CacheView:
    """A read-only view of a cache built by `build_cache`, indexed in the order of `paths`."""
    folder = Path(folder)
    index = json.loads((folder / f"index_{size}.json").read_text())
    position = {p: i for i, p in enumerate(index["paths"])}
    missing = [p for p in paths if p not in position]
    if missing:
        raise KeyError(f"{folder}: {len(missing)} images are not in the cache, e.g. {missing[0]}; rebuild it")
    array = np.load(folder / f"images_{size}.npy", mmap_mode="r")
    return _CacheView(array, np.array([position[p] for p in paths]))


class _CacheView:
    def __init__(self, array: np.ndarray, rows: np.ndarray):
        self.array, self.rows = array, rows

    def __getitem__(self, i) -> np.ndarray:
        return np.asarray(self.array[self.rows[int(i)]])[..., None]


def class_weights(labels) -> dict[int, float]:
    """Balanced class weights for training, ``n / (2 * count(class))``.

    Args:
        labels: Training labels, 0 or 1.

    Returns:
        ``{0: weight_negative, 1: weight_positive}`` as plain int keys and floats.

    Raises:
        ValueError: If a class is missing or a label is neither 0 nor 1.
    """
    labels = np.asarray(labels).ravel()
    if not np.isin(labels, (0, 1)).all():
        bad = sorted(set(np.unique(labels).tolist()) - {0, 1})
        raise ValueError(f"class_weights: labels must be 0 or 1, found {bad}")
    for cls, name in ((0, "negative (0)"), (1, "positive (1)")):
        if not (labels == cls).any():
            raise ValueError(
                f"class_weights: no {name} labels among {labels.size}; "
                "balanced weights need both classes"
            )
    weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    return {0: float(weights[0]), 1: float(weights[1])}
