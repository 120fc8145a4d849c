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

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from .imaging import ImageLoadError, image_size, load_image
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
        warped = tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="CONSTANT")
        return tf.ensure_shape(warped, images.shape)


@dataclass(frozen=True)
class LesionTargets:
    """Per row of a table: its lesion boxes and whether they are known, for a lesion-map head.

    Attributes:
        boxes: (N, MAX_BOXES, 4) float32 boxes (x0, y0, x1, y1) as fractions of the image's width
            and height (the square resize keeps fractions); unused slots are zeros.
        weight: (N,) float32: 1 where the boxes are known (a negative has none: an empty map), 0
            where a positive has no boxes (its map is not trained).
        map_size: the side of the model's lesion map (input side / 16).
    """

    boxes: np.ndarray
    weight: np.ndarray
    map_size: int


MAX_BOXES = 16


def lesion_targets(table: pd.DataFrame, boxes_by_name: dict, map_size: int) -> LesionTargets:
    """`LesionTargets` for `table` from boxes in stored-image pixels, keyed by file name.

    Args:
        table: rows with `path` and `label`.
        boxes_by_name: (x, y, w, h) boxes per image file name (`datasets.load_boxes`).
        map_size: the model's lesion-map side.
    """
    boxes = np.zeros((len(table), MAX_BOXES, 4), np.float32)
    weight = np.zeros(len(table), np.float32)
    for i, (path, label) in enumerate(zip(table["path"], table["label"])):
        found = boxes_by_name.get(Path(path).name) or []
        if int(label) == 0:
            weight[i] = 1.0  # a negative: no lesion anywhere
            continue
        size = image_size(path) if found else None
        if not found or size is None:
            continue
        width, height = size
        for k, (x, y, w, h) in enumerate(found[:MAX_BOXES]):
            boxes[i, k] = (x / width, y / height, (x + w) / width, (y + h) / height)
        weight[i] = 1.0
    return LesionTargets(np.clip(boxes, 0.0, 1.0), weight, int(map_size))


def box_masks(boxes: tf.Tensor, size: int) -> tf.Tensor:
    """(B, S, S, 1) float32 masks: 1 on the pixels whose centre lies in one of the (B, K, 4) boxes.

    Boxes are (x0, y0, x1, y1) fractions; all-zero rows are padding. A real box thinner than a pixel
    still covers one pixel.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    real = tf.reduce_any(boxes != 0.0, axis=-1)[..., None]
    pixel = 1.0 / size
    x0, y0 = boxes[..., 0], boxes[..., 1]
    x1 = tf.where(real[..., 0], tf.maximum(boxes[..., 2], x0 + pixel), boxes[..., 2])
    y1 = tf.where(real[..., 0], tf.maximum(boxes[..., 3], y0 + pixel), boxes[..., 3])
    centres = (tf.range(size, dtype=tf.float32) + 0.5) / size
    xs, ys = centres[None, None, None, :], centres[None, None, :, None]
    inside = ((xs >= x0[..., None, None]) & (xs < x1[..., None, None])
              & (ys >= y0[..., None, None]) & (ys < y1[..., None, None]))
    return tf.cast(tf.reduce_any(inside, axis=1), tf.float32)[..., None]


def augment_with_masks(augmentation: Augmentation, images: tf.Tensor, masks: tf.Tensor,
                       seed: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Augment images (B, S, S, C) and their box masks (B, S, S, 1) with one warp: boxes follow exactly."""
    both = augmentation(tf.concat([images, masks], axis=-1), seed)
    return both[..., :-1], both[..., -1:]


def map_targets(masks: tf.Tensor, map_size: int) -> tf.Tensor:
    """Pixel masks (B, S, S, 1) -> lesion-map targets (B, m, m, 1): a cell is 1 where a box covers it."""
    stride = int(masks.shape[1]) // map_size
    return tf.cast(tf.nn.max_pool2d(masks, stride, stride, "VALID") > 0.5, tf.float32)


@keras.saving.register_keras_serializable(package="mura_core")
class LesionMapLoss(keras.losses.Loss):
    """Pixel binary cross-entropy of a lesion map, with lesion cells weighted `positive_weight` times.

    A fracture box covers about 1% of an image, so unweighted the map learns to say "no lesion"
    everywhere. Per-image weights (`LesionTargets.weight`) leave positives without boxes out.
    """

    def __init__(self, positive_weight: float = 20.0, name: str = "lesion_map_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_weight = float(positive_weight)

    def call(self, y_true, y_pred):
        y_pred = keras.ops.clip(y_pred, 1e-6, 1.0 - 1e-6)
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        bce = -(self.positive_weight * y_true * keras.ops.log(y_pred) + (1.0 - y_true) * keras.ops.log(1.0 - y_pred))
        return keras.ops.mean(bce, axis=(1, 2, 3))

    def get_config(self):
        return {**super().get_config(), "positive_weight": self.positive_weight}


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
    lesions: LesionTargets | None = None,
    class_weight: dict[int, float] | None = None,
) -> tf.data.Dataset:
    """A batched dataset of (images float32 [0, 255] (B, S, S, 3), labels float32 (B,)).

    With `lesions`, for a model with a lesion map: (images, {"probability": labels, "lesion_map":
    maps}, {"probability": class weights, "lesion_map": lesion weights}), where each box mask goes
    through the very same augmentation warp as its image before it is pooled to the map's cells.

    Args:
        table: rows with at least `path` and `label` (oversample beforehand if wanted).
        size: square input side.
        batch_size: batch size.
        training: shuffle each epoch and apply `augmentation`.
        augmentation: random transforms for training (None: none).
        seed: shuffle / augmentation seed.
        cache: a folder made by `build_cache` for this size (images read from it, not decoded).
        lesions: `lesion_targets` for the rows of `table` (same order).
        class_weight: with `lesions`, the per-class weights of the classification loss (Keras takes
            no `class_weight` for a model with two outputs).
    """
    if lesions is not None:
        return _lesion_dataset(table, size, batch_size, training, augmentation, seed, cache, lesions,
                               class_weight)
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


def _lesion_dataset(table, size, batch_size, training, augmentation, seed, cache, lesions, class_weight):
    keep = np.ones(len(table), bool)
    if cache is not None:
        keep = ~table["path"].isin(cache_failures(cache, size)).to_numpy()
    table = table[keep]
    boxes, weight = lesions.boxes[keep], lesions.weight[keep]
    labels = table["label"].to_numpy(np.float32)
    weights = {0: 1.0, 1: 1.0, **(class_weight or {})}
    class_w = np.where(labels > 0.5, weights[1], weights[0]).astype(np.float32)
    rows = tf.data.Dataset.from_tensor_slices((np.arange(len(table), dtype=np.int64), labels, boxes, weight, class_w))
    if training:
        rows = rows.shuffle(len(table), seed=seed, reshuffle_each_iteration=True)
    if cache is not None:
        images = open_cache(cache, size, table["path"].tolist())

        def read(i, *rest):
            image = tf.numpy_function(lambda j: images[j], [i], tf.uint8)
            image.set_shape((size, size, 1))
            return (image, *rest, True)
    else:
        paths = tf.constant(table["path"].astype(str).to_numpy())

        def read(i, *rest):
            image, ok = _load(tf.gather(paths, i), size)
            return (image, *rest, ok)

    ds = rows.map(read, num_parallel_calls=AUTOTUNE).filter(lambda *row: row[-1])
    ds = ds.map(lambda *row: row[:-1]).batch(batch_size, drop_remainder=False)

    def targets(images, labels, boxes, weight, class_w):
        images = tf.cast(images, tf.float32)
        masks = box_masks(boxes, size)
        if training and augmentation is not None:
            images, masks = augment_with_masks(augmentation, images, masks, seed)
        y = {"probability": labels, "lesion_map": map_targets(masks, lesions.map_size)}
        return tf.repeat(images, 3, axis=-1), y, {"probability": class_w, "lesion_map": weight}

    return ds.map(targets, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
