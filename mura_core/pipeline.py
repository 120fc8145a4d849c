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

from .imaging import ImageLoadError, load_image
from .preprocessing import resize_square

log = logging.getLogger(__name__)
AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation (the method's: 20 deg rotation, 20% shift and zoom, h-flip)."""

    rotation_degrees: float = 20.0
    shift: float = 0.2
    zoom: float = 0.2
    horizontal_flip: bool = True

    def layers(self, seed: int | None = None) -> keras.Sequential:
        """The augmentation as a Keras model of preprocessing layers (applied to [0, 255] images)."""
        steps = []
        if self.horizontal_flip:
            steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
        if self.rotation_degrees:
            steps.append(keras.layers.RandomRotation(self.rotation_degrees / 360.0, fill_mode="constant", seed=seed))
        if self.shift:
            steps.append(keras.layers.RandomTranslation(self.shift, self.shift, fill_mode="constant", seed=seed))
        if self.zoom:
            steps.append(keras.layers.RandomZoom(self.zoom, self.zoom, fill_mode="constant", seed=seed))
        return keras.Sequential(steps, name="augmentation")


def oversample(table: pd.DataFrame, factor: int, label_col: str = "label") -> pd.DataFrame:
    """Repeat the abnormal (label 1) rows `factor` times in total (factor 1 = unchanged)."""
    if factor <= 1:
        return table.reset_index(drop=True)
    positives = table[table[label_col] == 1]
    return pd.concat([table] + [positives] * (factor - 1), ignore_index=True)


def _decode(path: bytes, size: int) -> tuple[np.ndarray, bool]:
    name = path.decode()
    try:
        return resize_square(load_image(name), size), True
    except ImageLoadError as exc:
        log.warning("skipping %s", exc)
        return np.zeros((size, size, 3), np.uint8), False


def decode_dataset(paths: list[str], size: int) -> tf.data.Dataset:
    """Dataset of (image uint8 (S, S, 3), ok bool) decoded in parallel from file paths."""
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(paths, dtype=object).astype(str))

    def load(path):
        image, ok = tf.numpy_function(lambda p: _decode(p, size), [path], [tf.uint8, tf.bool])
        image.set_shape((size, size, 3))
        ok.set_shape(())
        return image, ok

    return ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)


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
            image.set_shape((size, size, 3))
            return image, label

        ds = ds.map(read, num_parallel_calls=AUTOTUNE)
    else:
        paths = table["path"].astype(str).to_numpy()
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        if training:
            ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

        def load(path, label):
            image, ok = tf.numpy_function(lambda p: _decode(p, size), [path], [tf.uint8, tf.bool])
            image.set_shape((size, size, 3))
            ok.set_shape(())
            return image, label, ok

        ds = ds.map(load, num_parallel_calls=AUTOTUNE).filter(_decoded).map(_drop_flag)
    ds = ds.batch(batch_size, drop_remainder=False).map(_to_float, num_parallel_calls=AUTOTUNE)
    if training and augmentation is not None:
        augment = augmentation.layers(seed)

        def apply(images, labels):
            return augment(images, training=True), labels

        ds = ds.map(apply, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def _decoded(image, label, ok):
    return ok


def _drop_flag(image, label, ok):
    return image, label


def _to_float(images, labels):
    return tf.cast(images, tf.float32), labels


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
        gray = np.asarray(self.array[self.rows[int(i)]])
        return np.repeat(gray[..., None], 3, axis=-1)
