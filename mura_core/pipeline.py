"""Training input: the deterministic steps for everyone, augmentation for training only, on any backend.

Deterministic: decode (`imaging.load_image`) -> `resize_square` -> uint8 (S, S, 3), the same
function the CLI and the dashboard use. Random (training only): rotation, shift, zoom and
horizontal flip, composed into one affine warp per image (`Augmentation`); for a lesion-map model,
optionally, fractures erased from some radiographs to make counterfactual negatives (`erase_lesions`),
fractures pasted onto other bone (`paste_lesions`), and the map trained on crops of the warped image
instead of the whole of it (`lesion_crops`). Images that fail to decode are dropped with a warning
naming the file (indexing has already reported missing files).

`make_dataset` gives a `tf.data` pipeline when Keras runs on TensorFlow (the warp is TensorFlow's
projective-transform op, in the graph), and an `ImageBatches` (a Keras `PyDataset`, read by worker
threads or processes) on JAX or PyTorch, where TensorFlow need not be installed (the same warp
matrices, applied with OpenCV). Lesion-box masks and map targets are NumPy functions both use.

For GPU training a preprocessed cache (`build_cache`) stores every image pre-resized in one
memory-mapped uint8 array, so an epoch does not wait on PNG decoding.
"""

from __future__ import annotations

import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import keras
import numpy as np
import pandas as pd
from sklearn.utils.class_weight import compute_class_weight

from . import backend
from .imaging import ImageLoadError, image_size, load_image
from .preprocessing import resize_square
from .regions import BOX_CHANNELS, BOX_LOG_LIMIT

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)


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

    def _matrices(self, uniform, xp, batch, height: int, width: int):
        """The geometry, once for both array libraries: (batch, 8) maps from output to input pixels.

        Args:
            uniform: `uniform(low, high, offset)` -> `batch` random draws (offset: which transform).
            xp: the array module the draws belong to (`numpy` or `tensorflow`).
        """
        angle = uniform(-1.0, 1.0, 1) * (self.rotation_degrees * np.pi / 180.0)
        zoom = uniform(1.0 - self.zoom, 1.0 + self.zoom, 2)
        tx = uniform(-self.shift, self.shift, 3) * width
        ty = uniform(-self.shift, self.shift, 4) * height
        flip = xp.ones([batch])
        if self.horizontal_flip:
            flip = xp.where(uniform(0.0, 1.0, 5) < 0.5, -1.0, 1.0)
        cos, sin = xp.cos(angle) / zoom, xp.sin(angle) / zoom
        a00, a01, a10, a11 = flip * cos, flip * sin, -sin, cos
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        a2 = cx - a00 * (cx + tx) - a01 * (cy + ty)
        b2 = cy - a10 * (cx + tx) - a11 * (cy + ty)
        zeros = xp.zeros([batch])
        return xp.stack([a00, a01, a2, a10, a11, b2, zeros, zeros], axis=1)

    def transforms(self, batch: int, height: int, width: int, seed: int | None = None) -> tf.Tensor:
        """(batch, 8) projective transforms mapping output pixels to input pixels (TensorFlow)."""
        import tensorflow as tf

        def uniform(low, high, offset):
            return tf.random.uniform([batch], low, high, seed=None if seed is None else seed + offset)

        return self._matrices(uniform, tf, batch, height, width)

    def matrices(self, rng: np.random.Generator, batch: int, height: int, width: int) -> np.ndarray:
        """The same transforms as NumPy (batch, 8) float64, drawn from `rng`."""
        return self._matrices(lambda low, high, offset: rng.uniform(low, high, batch), np, batch, height, width)

    def __call__(self, images: tf.Tensor, seed: int | None = None) -> tf.Tensor:
        """Augment a batch (B, H, W, C) of float images (TensorFlow, in a `tf.data` graph)."""
        import tensorflow as tf

        shape = tf.shape(images)
        transforms = self.transforms(shape[0], images.shape[1], images.shape[2], seed)
        warped = tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="CONSTANT")
        return tf.ensure_shape(warped, images.shape)

    def warp_arrays(self, rng: np.random.Generator, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """Augment NumPy batches (B, H, W, C) with OpenCV: the i-th image of every array gets the same warp.

        `warp_arrays(rng, images, masks)` moves each lesion mask exactly as its image (the NumPy
        counterpart of `augment_with_masks`). Bilinear, black outside, like `__call__`.
        """
        batch, height, width = arrays[0].shape[:3]
        matrices = self.matrices(rng, batch, height, width)[:, :6].reshape(batch, 2, 3)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        out = []
        for array in arrays:
            warped = np.empty(array.shape, np.float32)
            for i in range(batch):
                image = np.asarray(array[i], np.float32)
                moved = cv2.warpAffine(image, matrices[i], (width, height), flags=flags,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
                warped[i] = moved.reshape(image.shape)
            out.append(warped)
        return tuple(out)


@dataclass(frozen=True)
class LesionTargets:
    """Per row of a table: its lesion boxes and whether they are known, for a lesion-map head.

    Attributes:
        boxes: (N, MAX_BOXES, 4) float32 boxes (x0, y0, x1, y1) as fractions of the image's width
            and height (the square resize keeps fractions); unused slots are zeros.
        weight: (N,) float32: 1 where the boxes are known (a negative has none: an empty map), 0
            where a positive has no boxes (its map is not trained).
        map_size: the side of the model's lesion map (input side / stride).
        cell_rule: how a box becomes the map's cell targets (`map_targets`, one of `CELL_RULES`).
        erase_fraction: in training, the share of boxed positives shown as their own counterfactual
            negative instead (`erase_lesions`); 0 for none.
        paste_fraction: in training, the probability that an image receives a lesion of its batch, and
            a decoy (`paste_lesions`); 0 for none. An image keeps its row's class weight when it
            receives one, so the pasted lesions do not unbalance the classes further.
        crop: in training, the side of the square crops the map trains on (`lesion_crops`), in input
            pixels; 0 for whole images. Validation always sees whole images.
        box_head: also make the box head's targets ("lesion_box", `box_targets`), weighted like the map.
        box_cells: which cells regress a box (`box_targets`, one of `BOX_CELL_RULES`).
    """

    boxes: np.ndarray
    weight: np.ndarray
    map_size: int
    cell_rule: str = "touch"
    erase_fraction: float = 0.0
    crop: int = 0
    paste_fraction: float = 0.0
    box_head: bool = False
    box_cells: str = "centre"

    def crop_map_size(self, size: int) -> int:
        """The side of a crop's map, for inputs of side `size` (the map's stride is size / map_size)."""
        return self.crop * self.map_size // size


CELL_RULES = ("touch", "coverage")
BOX_CELL_RULES = ("centre", "touch")  # box_targets: the cells whose centre lies in a box, or all it touches


def check_cell_rule(rule: str) -> str:
    """`rule` if it is one of `CELL_RULES`, else a ValueError that names the choices."""
    if rule not in CELL_RULES:
        raise ValueError(f"unknown lesion-map cell rule {rule!r}; choose one of {', '.join(CELL_RULES)}")
    return rule


def check_box_cells(rule: str) -> str:
    """`rule` if it is one of `BOX_CELL_RULES`, else a ValueError that names the choices."""
    if rule not in BOX_CELL_RULES:
        raise ValueError(f"unknown box-head cell rule {rule!r}; choose one of {', '.join(BOX_CELL_RULES)}")
    return rule


def check_fraction(name: str, fraction: float) -> float:
    """`fraction` if it is a share in [0, 1) (`erase_lesions`, `paste_lesions`), else a ValueError naming `name`."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"{name}: expected a share in [0, 1), got {fraction!r}")
    return fraction


CROP_MULTIPLE = 32  # a crop's side: a multiple of the backbones' coarsest stride, so its map's cells tile it


def check_crop(crop: int, size: int) -> int:
    """`crop` if it is 0 (whole images) or a multiple of `CROP_MULTIPLE` below `size`, else a ValueError."""
    if crop and not (0 < crop < size and crop % CROP_MULTIPLE == 0):
        raise ValueError(f"map_crop: expected 0 (whole images) or a multiple of {CROP_MULTIPLE} below the "
                         f"input size {size}, got {crop!r}")
    return crop


MAX_BOXES = 16


def lesion_targets(table: pd.DataFrame, boxes_by_name: dict, map_size: int,
                   cell_rule: str = "touch", erase_fraction: float = 0.0, crop: int = 0,
                   paste_fraction: float = 0.0, box_head: bool = False,
                   box_cells: str = "centre") -> LesionTargets:
    """`LesionTargets` for `table` from boxes in stored-image pixels, keyed by file name.

    Args:
        table: rows with `path` and `label`.
        boxes_by_name: (x, y, w, h) boxes per image file name (`datasets.load_boxes`).
        map_size: the model's lesion-map side.
        cell_rule: how a box becomes cell targets (`map_targets`).
        erase_fraction, crop, paste_fraction: see `LesionTargets` (training only).
        box_head: also make the box head's targets (`LesionTargets.box_head`).
        box_cells: which cells regress a box (`box_targets`).
    """
    check_cell_rule(cell_rule)  # here, not first inside a training step
    check_box_cells(box_cells)
    check_fraction("map_erase_fraction", erase_fraction)
    check_fraction("map_paste_fraction", paste_fraction)
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
    return LesionTargets(np.clip(boxes, 0.0, 1.0), weight, int(map_size), cell_rule, float(erase_fraction),
                         int(crop), float(paste_fraction), bool(box_head), box_cells)


def box_masks(boxes: np.ndarray, size: int) -> np.ndarray:
    """(B, S, S, 1) float32 masks: 1 on the pixels whose centre lies in one of the (B, K, 4) boxes.

    Boxes are (x0, y0, x1, y1) fractions; all-zero rows are padding. A real box thinner than a pixel
    still covers one pixel.
    """
    boxes = np.asarray(boxes, np.float32)
    real = np.any(boxes != 0.0, axis=-1)
    pixel = np.float32(1.0 / size)
    x0, y0 = boxes[..., 0], boxes[..., 1]
    x1 = np.where(real, np.maximum(boxes[..., 2], x0 + pixel), boxes[..., 2])
    y1 = np.where(real, np.maximum(boxes[..., 3], y0 + pixel), boxes[..., 3])
    centres = ((np.arange(size, dtype=np.float32) + 0.5) / size)[None, None, :]
    in_x = (centres >= x0[..., None]) & (centres < x1[..., None])  # (B, K, S)
    in_y = (centres >= y0[..., None]) & (centres < y1[..., None])
    inside = np.any(in_y[..., :, None] & in_x[..., None, :], axis=1)
    return inside.astype(np.float32)[..., None]


ERASE_MARGIN = 2  # pixels around a box that are erased with it (a fracture line may touch its box's edge)
DECOY_SIDE = (0.04, 0.10)  # a decoy patch's side, a share of the image's: about a fracture box's (FracAtlas)


def erase_lesions(images: np.ndarray, masks: np.ndarray, labels: np.ndarray, fraction: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Counterfactual negatives: each positive with boxes, with probability `fraction`, loses its lesions.

    The pixels of its boxes (and `ERASE_MARGIN` around them) are filled in from their surroundings
    (OpenCV's Telea inpainting), its label becomes 0 and its mask empty. The same radiograph then
    appears with and without its fracture, so what tells the two apart, for the classifier and for the
    lesion map, lies inside the boxes: the anatomy, the cast or the plate around a fracture do not.
    So that a filled-in patch tells nothing by itself, every other image gets one with the same
    probability, a square of `DECOY_SIDE` of the image's side at a random place off its boxes, its label
    and mask kept.

    Args:
        images: (B, S, S, 1) grays in [0, 255] (`tf.data` erases before augmentation,
            `ImageBatches` after it: the masks follow the warp either way).
        masks: (B, S, S, 1) box masks (`box_masks`) of the same images, warped with them.
        labels: (B,) labels.
        fraction: the probability of erasing a boxed positive; 0 erases nothing.
        rng: the random draws.

    Returns:
        (images, masks, labels, erased): copies where anything changed, and the (B,) bool erased rows.
    """
    boxed = (np.asarray(labels) > 0.5) & (np.asarray(masks).reshape(len(masks), -1).max(axis=1) > 0)
    draw = rng.random(len(boxed)) < fraction
    erased = boxed & draw  # the others drawn get a decoy
    if not draw.any():
        return images, masks, labels, erased
    images, masks, labels = np.array(images, np.float32), np.array(masks, np.float32), np.array(labels, np.float32)
    grow = np.ones((2 * ERASE_MARGIN + 1,) * 2, np.uint8)
    size = images.shape[1]
    for i in np.flatnonzero(draw):
        lesion = cv2.dilate((masks[i, ..., 0] > 0).astype(np.uint8), grow)
        if erased[i]:
            hole = lesion
        else:
            side = max(int(round(rng.uniform(*DECOY_SIDE) * size)), 2)
            top, left = rng.integers(0, size - side + 1, 2)
            hole = np.zeros((size, size), np.uint8)
            hole[top:top + side, left:left + side] = 1
            hole &= 1 - lesion
        gray = np.clip(np.rint(images[i, ..., 0]), 0, 255).astype(np.uint8)
        images[i, ..., 0] = cv2.inpaint(gray, hole, 3, cv2.INPAINT_TELEA)
    masks[erased], labels[erased] = 0.0, 0.0
    return images, masks, labels, erased


PASTE_MARGIN = 0.25  # of a pasted lesion's side, the bone around it that is pasted (and blended) with it
BONE_QUANTILE = 0.85  # a patch lands where its centre is at least this quantile of the image's grays (its
# median at least 0.25 lower), inside the image: on bone, seldom on soft tissue or background


def paste_lesions(images: np.ndarray, masks: np.ndarray, labels: np.ndarray, known: np.ndarray, fraction: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Copy-paste: fractures of the batch pasted onto other bone, so a lesion is seen at new places.

    A lesion map trained on a few hundred boxed radiographs learns where their fractures were (the
    distal radius, a metacarpal) as much as what a fracture looks like. Here each image whose map is
    known (`known`), with probability `fraction`, receives a lesion of the batch (one box of a boxed
    positive, possibly its own, with `PASTE_MARGIN` of its side around it) at a random place on bright
    bone (a centre pixel of at least the `BONE_QUANTILE` of its grays, the patch off its own lesions),
    blended in by OpenCV's Poisson image editing (`cv2.seamlessClone`: the patch's gradients, the
    destination's brightness). The lesion's pixels join the image's mask and its label becomes 1. So
    that a blended patch tells nothing by itself, every image, with the same probability, also gets a
    decoy: a patch of the same size from a lesion-free place of a batch image, blended in the same way,
    its label and mask kept. Sources are the batch itself: only training images.

    Args:
        images: (B, S, S, 1) grays in [0, 255] (as `erase_lesions`).
        masks: (B, S, S, 1) box masks (`box_masks`) of the same images, warped with them.
        labels: (B,) labels.
        known: (B,) whether an image's map is trained (its lesion-map weight): a positive without
            boxes gets no lesion (its own would stay unmarked).
        fraction: the probability of a pasted lesion, and of a decoy, per image; 0 pastes nothing.
        rng: the random draws.

    Returns:
        (images, masks, labels, pasted): copies where anything changed, and the (B,) bool rows that
        received a lesion.
    """
    images, masks, labels = np.asarray(images), np.asarray(masks), np.asarray(labels)
    pasted = np.zeros(len(images), bool)
    lesions = _lesion_patches(masks, labels)
    draw_lesion = (rng.random(len(images)) < fraction) & np.asarray(known, bool) & bool(lesions)
    draw_decoy = rng.random(len(images)) < fraction
    if not (draw_lesion.any() or draw_decoy.any()):
        return images, masks, labels, pasted
    images, masks, labels = np.array(images, np.float32), np.array(masks, np.float32), np.array(labels, np.float32)
    grays = np.clip(np.rint(images[..., 0]), 0, 255).astype(np.uint8)
    for i in np.flatnonzero(draw_lesion | draw_decoy):
        occupied = masks[i, ..., 0] > 0.5
        if draw_lesion[i]:
            source, (top, left, bottom, right) = lesions[rng.integers(len(lesions))]
            placed = _paste(grays, images, i, source, (top, left, bottom, right), occupied, rng)
            if placed is not None:
                dy, dx = placed
                lesion = masks[source, top:bottom, left:right, 0] > 0.5
                masks[i, top + dy:bottom + dy, left + dx:right + dx, 0][lesion] = 1.0
                labels[i], pasted[i] = 1.0, True
                occupied = masks[i, ..., 0] > 0.5
        if draw_decoy[i]:
            height, width = _patch_shape(lesions, images.shape[1], rng)
            source = int(rng.integers(len(images)))
            place = _free_place(masks[source, ..., 0] > 0.5, height, width, rng)
            if place is not None:
                _paste(grays, images, i, source, (*place, place[0] + height, place[1] + width), occupied, rng)
    return images, masks, labels, pasted


def _lesion_patches(masks: np.ndarray, labels: np.ndarray) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(image, (top, left, bottom, right)) of each lesion of the positives, with `PASTE_MARGIN` around it."""
    size, patches = masks.shape[1], []
    for i in np.flatnonzero(np.asarray(labels) > 0.5):
        lesion = (masks[i, ..., 0] > 0.5).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(lesion)
        for left, top, width, height, _ in stats[1:count]:
            margin = max(int(round(PASTE_MARGIN * max(width, height))), 2)
            box = (max(top - margin, 0), max(left - margin, 0), min(top + height + margin, size),
                   min(left + width + margin, size))
            if min(box[2] - box[0], box[3] - box[1]) >= 4 and max(box[2] - box[0], box[3] - box[1]) < size // 2:
                patches.append((int(i), tuple(int(v) for v in box)))
    return patches


def _patch_shape(lesions: list, size: int, rng: np.random.Generator) -> tuple[int, int]:
    """A decoy's (height, width): a lesion patch's of the batch, else a square of `DECOY_SIDE` of `size`."""
    if lesions:
        _, (top, left, bottom, right) = lesions[rng.integers(len(lesions))]
        return bottom - top, right - left
    side = max(int(round(rng.uniform(*DECOY_SIDE) * size)), 4)
    return side, side


def _free_place(occupied: np.ndarray, height: int, width: int, rng: np.random.Generator, margin: int = 0,
                accept=None, tries: int = 20) -> tuple[int, int] | None:
    """A random (top, left) for a height x width patch at least `margin` pixels inside the image that
    touches nothing `occupied` and that `accept(top, left)`, if given, takes; None after `tries` draws."""
    size = occupied.shape[0]
    for _ in range(tries):
        top = int(rng.integers(margin, size - height + 1 - margin))
        left = int(rng.integers(margin, size - width + 1 - margin))
        if not occupied[top:top + height, left:left + width].any() and (accept is None or accept(top, left)):
            return top, left
    return None


def _paste(grays: np.ndarray, images: np.ndarray, i: int, source: int, box: tuple[int, int, int, int],
           occupied: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    """Blend `grays[source]`'s `box` into `images[i]` at a random place on bright bone off `occupied`.

    Returns the (dy, dx) it moved by, or None when `_free_place` found no place.
    """
    top, left, bottom, right = box
    height, width, size = bottom - top, right - left, grays.shape[1]
    if height + 2 >= size or width + 2 >= size:
        return None
    inside = grays[i][grays[i] > 0]  # not the warp's padding
    if not inside.size:
        return None
    bone, around = np.quantile(inside, [BONE_QUANTILE, BONE_QUANTILE - 0.25])

    def on_bone(new_top, new_left):
        patch = grays[i, new_top:new_top + height, new_left:new_left + width]
        return patch[height // 2, width // 2] >= bone and np.median(patch) >= around and patch.min() > 0

    place = _free_place(occupied, height, width, rng, margin=1, accept=on_bone)
    if place is None:
        return None
    new_top, new_left = place
    # The patch with a 1-pixel frame outside the blended mask: seamlessClone centres the mask's bounding
    # box on the point given, so the patch's top-left lands at (new_top, new_left).
    patch = np.pad(grays[source, top:bottom, left:right], 1, mode="edge")
    mask = np.zeros(patch.shape, np.uint8)
    mask[1:-1, 1:-1] = 255
    centre = (new_left + width // 2, new_top + height // 2)
    blended = cv2.seamlessClone(cv2.cvtColor(patch, cv2.COLOR_GRAY2BGR), cv2.cvtColor(grays[i], cv2.COLOR_GRAY2BGR),
                                mask, centre, cv2.NORMAL_CLONE)[..., 0]
    images[i, ..., 0] = blended
    grays[i] = blended
    return new_top - top, new_left - left


CROP_ON_LESION = 0.75  # of the crops of an image with a lesion, the share placed to hold part of it


def lesion_crops(images: np.ndarray, masks: np.ndarray, side: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One square crop of `side` pixels of each image and of its mask, at the same place.

    The lesion map can be trained on crops of the (warped) image at its full resolution: a step on a
    crop of a quarter of the image costs about a quarter, and the fully convolutional model still maps
    whole images at inference. A crop of an image with lesion pixels holds one of them, drawn at random
    and at a random place in the crop, with probability `CROP_ON_LESION`; every other crop lies anywhere
    in the image, so crops of the bone away from the fracture (joints, plates, the other view) are
    negatives too.

    Args:
        images: (B, S, S, C) images.
        masks: (B, S, S, 1) their box masks (`box_masks`), warped with them.
        side: the crop's side, at most S.
        rng: the random draws.

    Returns:
        (images, masks): (B, side, side, C) and (B, side, side, 1) float32 crops.
    """
    size = images.shape[1]
    crops = np.empty((len(images), side, side, images.shape[-1]), np.float32)
    crop_masks = np.empty((len(images), side, side, 1), np.float32)
    for i in range(len(images)):
        ys, xs = np.nonzero(masks[i, ..., 0] > 0.5)
        if len(ys) and rng.random() < CROP_ON_LESION:
            k = rng.integers(len(ys))
            top = rng.integers(max(ys[k] - side + 1, 0), min(ys[k], size - side) + 1)
            left = rng.integers(max(xs[k] - side + 1, 0), min(xs[k], size - side) + 1)
        else:
            top, left = rng.integers(0, size - side + 1, 2)
        crops[i] = images[i, top:top + side, left:left + side]
        crop_masks[i] = masks[i, top:top + side, left:left + side]
    return crops, crop_masks


def augment_with_masks(augmentation: Augmentation, images: tf.Tensor, masks: tf.Tensor,
                       seed: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Augment images (B, S, S, C) and their box masks (B, S, S, 1) with one warp: boxes follow exactly.

    TensorFlow; `Augmentation.warp_arrays` does the same on NumPy arrays.
    """
    import tensorflow as tf

    both = augmentation(tf.concat([images, masks], axis=-1), seed)
    return both[..., :-1], both[..., -1:]


def map_targets(masks: np.ndarray, map_size: int, rule: str = "touch") -> np.ndarray:
    """Pixel masks (B, S, S, 1) -> lesion-map targets (B, m, m, 1), by `rule`:

    - "touch": a cell is 1 where a box covers any of its pixels. A box's ring of partly covered cells
      counts as lesion, so a map can learn to peak on a cell whose centre lies outside the box.
    - "coverage": a cell's target is the share of its pixels a box covers (0 to 1), so the cells
      inside the box outweigh the ring around it, in the pixel loss and in the pointing term's target.
    """
    masks = np.asarray(masks, np.float32)
    batch, side = masks.shape[0], masks.shape[1]
    stride = side // map_size
    cells = masks[:, :map_size * stride, :map_size * stride, 0].reshape(batch, map_size, stride, map_size, stride)
    if check_cell_rule(rule) == "coverage":
        return np.clip(cells, 0.0, 1.0).mean(axis=(2, 4), dtype=np.float32)[..., None]
    return (cells.max(axis=(2, 4)) > 0.5).astype(np.float32)[..., None]


def box_targets(masks: np.ndarray, map_size: int, rule: str = "centre") -> np.ndarray:
    """Pixel masks (B, S, S, 1) -> the box head's targets (B, m, m, 1 + 4): a cell weight, then the codes
    of `regions.BOX_CHANNELS`.

    Each connected part of a mask is one lesion box (its bounding box: the boxes' rectangles, and after a
    warp the rectangle around the warped box; boxes that overlap or touch are one part). Which cells
    regress it (weight 1), by `rule`:

    - "centre": the cells whose centre lies in the box; a box too small to hold a cell's centre is
      regressed by the cell holding its own centre.
    - "touch": every cell the box covers a pixel of, the lesion map's own "touch" cells (`map_targets`),
      so the head is trained wherever the map may peak.

    Where the rectangles of two parts overlap, the smaller one wins.
    """
    touch = check_box_cells(rule) == "touch"
    masks = np.asarray(masks, np.float32)
    batch, side = masks.shape[0], masks.shape[1]
    stride = side / map_size
    out = np.zeros((batch, map_size, map_size, 1 + len(BOX_CHANNELS)), np.float32)
    centres = np.arange(map_size, dtype=np.float32) + 0.5

    def cells(start: float, length: float) -> slice:
        if touch:
            return slice(max(int(start // stride), 0), min(math.ceil((start + length) / stride), map_size))
        first, last = math.ceil(start / stride - 0.5), math.ceil((start + length) / stride - 0.5) - 1
        if last < first:  # no cell centre inside: the cell holding the box's centre
            first = last = min(max(int((start + length / 2) / stride), 0), map_size - 1)
        return slice(max(first, 0), min(last, map_size - 1) + 1)

    for b in range(batch):
        count, _, stats, _ = cv2.connectedComponentsWithStats((masks[b, ..., 0] > 0.5).astype(np.uint8), connectivity=8)
        for k in sorted(range(1, count), key=lambda k: -int(stats[k, cv2.CC_STAT_AREA])):  # the smaller box last
            x, y, w, h = (float(v) for v in stats[k, :4])
            rows, cols = cells(y, h), cells(x, w)
            out[b, rows, cols, 0] = 1.0
            out[b, rows, cols, 1] = ((x + w / 2) / stride - centres[cols])[None, :]
            out[b, rows, cols, 2] = ((y + h / 2) / stride - centres[rows])[:, None]
            out[b, rows, cols, 3] = math.log(w / stride)
            out[b, rows, cols, 4] = math.log(h / stride)
    return out


@keras.saving.register_keras_serializable(package="mura_core")
class BoxLoss(keras.losses.Loss):
    """The box head's loss: the Huber loss (delta 1) of the codes (`regions.BOX_CHANNELS`), summed over
    the four channels and averaged over the cells that regress a box (`box_targets`' weight); 0 for an
    image without boxes."""

    def __init__(self, name: str = "box_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        ops = keras.ops
        y_true = ops.cast(y_true, y_pred.dtype)
        weight, codes = y_true[..., 0], y_true[..., 1:]
        error = ops.abs(y_pred - codes)
        huber = ops.sum(ops.where(error < 1.0, 0.5 * ops.square(error), error - 0.5), axis=-1)
        total = ops.sum(weight * huber, axis=(1, 2))
        return total / ops.maximum(ops.sum(weight, axis=(1, 2)), 1.0)


class BoxIoU(keras.metrics.Metric):
    """Training's box metric: the mean IoU between the box each regressing cell predicts and its lesion's
    box (`box_targets`), over the cells that regress a box."""

    def __init__(self, name: str = "box_iou", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable((), "zeros", name="total")
        self.count = self.add_variable((), "zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        y_true, y_pred = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        weight = y_true[..., 0]
        if sample_weight is not None:
            weight = weight * ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1, 1))

        def corners(codes):
            half_w = 0.5 * ops.exp(ops.clip(codes[..., 2], -BOX_LOG_LIMIT, BOX_LOG_LIMIT))
            half_h = 0.5 * ops.exp(ops.clip(codes[..., 3], -BOX_LOG_LIMIT, BOX_LOG_LIMIT))
            return codes[..., 0] - half_w, codes[..., 1] - half_h, codes[..., 0] + half_w, codes[..., 1] + half_h

        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = corners(y_pred), corners(y_true[..., 1:])
        inter = ops.maximum(ops.minimum(ax1, bx1) - ops.maximum(ax0, bx0), 0.0) * \
            ops.maximum(ops.minimum(ay1, by1) - ops.maximum(ay0, by0), 0.0)
        union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
        self.total.assign_add(ops.sum(weight * inter / ops.maximum(union, 1e-6)))
        self.count.assign_add(ops.sum(weight))

    def result(self):
        return keras.ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)


@keras.saving.register_keras_serializable(package="mura_core")
class LesionMapLoss(keras.losses.Loss):
    """The lesion map's loss: pixel binary cross-entropy with lesion cells weighted `positive_weight`
    times, plus two optional terms that teach where in the bone the lesion is.

    - Pointing (`pointing_weight`): the cross-entropy between the softmax of the map's logits over all
      cells and the box cells normalised to sum 1 (images with boxes only). The pixel loss scores
      cells one by one; this term makes the box cells win against every other cell of the image.
    - Hard negatives (`hard_negative_weight`): the mean cross-entropy of the `HARD_NEGATIVE_FRACTION`
      highest-scoring cells outside the boxes, so the bright bone elsewhere (other joints, plates and
      screws) is pushed down harder than empty background.
    - Peak margin (`peak_weight`): softplus(outside - inside + `PEAK_MARGIN`), where inside and outside
      are the soft maxima (log-sum-exp at temperature `PEAK_TEMPERATURE`) of the map's logits over the
      box cells and over the other cells, each cell weighted by its target and by one minus it. The
      pointing term raises the box cells' share of the map as a whole; this one scores what the pointing
      game scores, the highest cell against the highest box cell, so it acts on near misses, the peaks
      on the bone just outside a box.

    A fracture box covers about 1% of an image, so unweighted the map learns to say "no lesion"
    everywhere. Per-image weights (`LesionTargets.weight`) leave positives without boxes out.
    """

    HARD_NEGATIVE_FRACTION = 0.02
    PEAK_MARGIN = 1.0  # in logits: the box's peak should beat the rest by this much
    PEAK_TEMPERATURE = 0.1  # in logits: the soft maximum is within 0.1 * log(cells) of the maximum

    def __init__(self, positive_weight: float = 20.0, pointing_weight: float = 0.0,
                 hard_negative_weight: float = 0.0, peak_weight: float = 0.0,
                 name: str = "lesion_map_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_weight = float(positive_weight)
        self.pointing_weight = float(pointing_weight)
        self.hard_negative_weight = float(hard_negative_weight)
        self.peak_weight = float(peak_weight)

    def call(self, y_true, y_pred):
        ops = keras.ops
        y_pred = ops.clip(y_pred, 1e-6, 1.0 - 1e-6)
        y_true = ops.cast(y_true, y_pred.dtype)
        positive, negative = -ops.log(y_pred), -ops.log(1.0 - y_pred)
        loss = ops.mean(self.positive_weight * y_true * positive + (1.0 - y_true) * negative, axis=(1, 2, 3))
        batch = ops.shape(y_pred)[0]
        logits = ops.reshape(negative - positive, (batch, -1))  # log(p) - log(1 - p)
        mask = ops.reshape(y_true, (batch, -1))
        area = ops.sum(mask, axis=1)
        if self.pointing_weight:
            target = mask / ops.maximum(area, 1.0)[:, None]
            pointing = -ops.sum(target * ops.log_softmax(logits, axis=1), axis=1)
            loss = loss + self.pointing_weight * ops.where(area > 0, pointing, ops.zeros_like(pointing))
        if self.peak_weight:
            def soft_max(weights):
                t = self.PEAK_TEMPERATURE
                return t * ops.logsumexp((logits + ops.log(ops.maximum(weights, 1e-6))) / t, axis=1)

            peak = ops.softplus(soft_max(1.0 - mask) - soft_max(mask) + self.PEAK_MARGIN)
            loss = loss + self.peak_weight * ops.where(area > 0, peak, ops.zeros_like(peak))
        if self.hard_negative_weight:
            cells = ops.reshape(negative * (1.0 - y_true), (batch, -1))
            k = max(1, int(round(self.HARD_NEGATIVE_FRACTION * int(y_pred.shape[1]) * int(y_pred.shape[2]))))
            loss = loss + self.hard_negative_weight * ops.mean(ops.top_k(cells, k, sorted=False)[0], axis=1)
        return loss

    def get_config(self):
        return {**super().get_config(), "positive_weight": self.positive_weight,
                "pointing_weight": self.pointing_weight, "hard_negative_weight": self.hard_negative_weight,
                "peak_weight": self.peak_weight}


class PointingGame(keras.metrics.Metric):
    """Training's pointing game on the lesion map's cells: of the images with boxes, the share whose
    highest cell lies in a box: a target of at least 0.5, so under the "coverage" cell rule a cell at
    least half covered (`localization.pointing_game` scores it at native resolution)."""

    def __init__(self, name: str = "pointing", **kwargs):
        super().__init__(name=name, **kwargs)
        self.hits = self.add_variable((), "zeros", name="hits")
        self.count = self.add_variable((), "zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        batch = ops.shape(y_pred)[0]
        mask = ops.reshape(ops.cast(y_true, "float32"), (batch, -1))
        peak = ops.argmax(ops.reshape(ops.cast(y_pred, "float32"), (batch, -1)), axis=1)
        hit = ops.cast(ops.take_along_axis(mask, ops.expand_dims(peak, 1), axis=1)[:, 0] >= 0.5, "float32")
        has_box = ops.cast(ops.sum(mask, axis=1) > 0, "float32")
        if sample_weight is not None:
            has_box = has_box * ops.cast(ops.reshape(sample_weight, (-1,)), "float32")
        self.hits.assign_add(ops.sum(hit * has_box))
        self.count.assign_add(ops.sum(has_box))

    def result(self):
        return keras.ops.divide_no_nan(self.hits, self.count)

    def reset_state(self):
        self.hits.assign(0.0)
        self.count.assign(0.0)


def oversample(table: pd.DataFrame, factor: int, label_col: str = "label") -> pd.DataFrame:
    """Repeat the abnormal (label 1) rows `factor` times in total (factor 1 = unchanged)."""
    if factor <= 1:
        return table.reset_index(drop=True)
    positives = table[table[label_col] == 1]
    return pd.concat([table] + [positives] * (factor - 1), ignore_index=True)


def _decode_file(name: str, size: int) -> tuple[np.ndarray, bool]:
    """One image as (size, size, 1) uint8: `resize_square`'s pixels, one channel of the three."""
    try:
        return resize_square(load_image(name), size)[..., :1], True
    except ImageLoadError as exc:
        log.warning("skipping %s", exc)
        return np.zeros((size, size, 1), np.uint8), False


def _decode(path: bytes, size: int) -> tuple[np.ndarray, bool]:
    return _decode_file(path.decode(), size)


def _load(path: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    import tensorflow as tf

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
    workers: int | None = None,
    use_multiprocessing: bool = False,
    pad_multiple: int = 1,
) -> tf.data.Dataset | ImageBatches:
    """A batched dataset of (images float32 [0, 255] (B, S, S, 3), labels float32 (B,)).

    On TensorFlow a `tf.data.Dataset`; on the other backends an `ImageBatches` (Keras `PyDataset`)
    that gives the same batches from NumPy and OpenCV. `ImageBatches` also carries `class_weight`
    as per-image sample weights (Keras' `fit(class_weight=...)` is then not needed).

    With `lesions`, for a model with a lesion map: (images, {"probability": labels, "lesion_map":
    maps}, {"probability": class weights, "lesion_map": lesion weights}), where each box mask goes
    through the very same augmentation warp as its image before it is pooled to the map's cells. With
    `lesions.crop`, training batches are crops of the warped images (`lesion_crops`) and their
    classification weights are 0 (an image's label does not say whether its crop holds the lesion).

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
            no `class_weight` for a model with two outputs); on a backend other than TensorFlow, always.
        workers: threads (or processes) reading batches for `ImageBatches` (None: up to 4).
        use_multiprocessing: `ImageBatches` reads with processes instead of threads.
        pad_multiple: `ImageBatches` pads each batch to a multiple of this (the devices of a data-parallel
            run) by repeating its last image with sample weight 0. Always `ImageBatches` when above 1.
    """
    if not backend.is_tensorflow() or pad_multiple > 1:
        return ImageBatches(table, size, batch_size, training, augmentation, seed, cache, lesions, class_weight,
                            workers=workers, use_multiprocessing=use_multiprocessing, pad_multiple=pad_multiple)
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
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

        ds = ds.map(read, num_parallel_calls=autotune)
    else:
        paths = table["path"].astype(str).to_numpy()
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        if training:
            ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

        def load(path, label):
            image, ok = _load(path, size)
            return image, label, ok

        ds = ds.map(load, num_parallel_calls=autotune).filter(_decoded).map(_drop_flag)
    ds = ds.batch(batch_size, drop_remainder=False).map(_to_float, num_parallel_calls=autotune)
    if training and augmentation is not None:

        def augment(images, labels):
            return augmentation(images, seed), labels

        ds = ds.map(augment, num_parallel_calls=autotune)
    return ds.map(_to_rgb, num_parallel_calls=autotune).prefetch(autotune)


def _decoded(image, label, ok):
    return ok


def _drop_flag(image, label, ok):
    return image, label


def _to_float(images, labels):
    import tensorflow as tf

    return tf.cast(images, tf.float32), labels


def _to_rgb(images, labels):
    import tensorflow as tf

    return tf.repeat(images, 3, axis=-1), labels


def build_cache(paths: list[str], size: int, folder: str | os.PathLike) -> Path:
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
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # OpenCV and PIL release the GIL
        for i, (image, ok) in enumerate(pool.map(lambda p: _decode_file(str(p), size), paths, chunksize=16)):
            array[i] = image[..., 0]
            if not ok:
                failed.append(paths[i])
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
    import tensorflow as tf

    keep = np.ones(len(table), bool)
    if cache is not None:
        keep = ~table["path"].isin(cache_failures(cache, size)).to_numpy()
    table = table[keep]
    boxes, weight = lesions.boxes[keep], lesions.weight[keep]
    labels = table["label"].to_numpy(np.float32)
    class_w = _per_image_weights(labels, class_weight)
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

    ds = rows.map(read, num_parallel_calls=tf.data.AUTOTUNE).filter(lambda *row: row[-1])
    ds = ds.map(lambda *row: row[:-1]).batch(batch_size, drop_remainder=False)

    erase = lesions.erase_fraction if training else 0.0
    paste = lesions.paste_fraction if training else 0.0
    crop = lesions.crop if training else 0
    map_size = lesions.crop_map_size(size) if crop else lesions.map_size
    rng, crop_rng = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    paste_rng = np.random.default_rng([seed, 3])
    negative_weight = np.float32({0: 1.0, **(class_weight or {})}[0])

    def erase_some(images, masks, labels, class_w):
        images, masks, labels, erased = erase_lesions(images, masks, labels, erase, rng)
        return images, masks, labels, np.where(erased, negative_weight, class_w).astype(np.float32)

    def paste_some(images, masks, labels, weight):
        return paste_lesions(images, masks, labels, weight > 0, paste, paste_rng)[:3]

    def targets(images, labels, boxes, weight, class_w):
        images = tf.cast(images, tf.float32)
        masks = tf.numpy_function(lambda b: box_masks(b, size), [boxes], tf.float32)
        masks.set_shape((None, size, size, 1))
        if erase:
            images, masks, labels, class_w = tf.numpy_function(
                erase_some, [images, masks, labels, class_w], [tf.float32] * 4)
            images.set_shape((None, size, size, 1))
            masks.set_shape((None, size, size, 1))
            labels.set_shape((None,))
            class_w.set_shape((None,))
        if training and augmentation is not None:
            images, masks = augment_with_masks(augmentation, images, masks, seed)
        if paste:  # after the warp: a pasted lesion keeps its own orientation
            images, masks, labels = tf.numpy_function(paste_some, [images, masks, labels, weight], [tf.float32] * 3)
            images.set_shape((None, size, size, 1))
            masks.set_shape((None, size, size, 1))
            labels.set_shape((None,))
        if crop:
            images, masks = tf.numpy_function(lambda i, m: lesion_crops(i, m, crop, crop_rng), [images, masks],
                                              [tf.float32, tf.float32])
            images.set_shape((None, crop, crop, 1))
            masks.set_shape((None, crop, crop, 1))
            class_w = tf.zeros_like(class_w)  # an image's label does not say whether its crop holds the lesion
        cells = tf.numpy_function(lambda m: map_targets(m, map_size, lesions.cell_rule), [masks], tf.float32)
        cells.set_shape((None, map_size, map_size, 1))
        y, w = {"probability": labels, "lesion_map": cells}, {"probability": class_w, "lesion_map": weight}
        if lesions.box_head:
            y["lesion_box"] = tf.numpy_function(lambda m: box_targets(m, map_size, lesions.box_cells), [masks],
                                                tf.float32)
            y["lesion_box"].set_shape((None, map_size, map_size, 1 + len(BOX_CHANNELS)))
            w["lesion_box"] = weight
        return tf.repeat(images, 3, axis=-1), y, w

    return ds.map(targets, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _per_image_weights(labels: np.ndarray, class_weight: dict[int, float] | None) -> np.ndarray:
    """Each image's weight in the classification loss: its class's weight (1 without class weights)."""
    weights = {0: 1.0, 1: 1.0, **(class_weight or {})}
    return np.where(labels > 0.5, weights[1], weights[0]).astype(np.float32)


class ImageBatches(keras.utils.PyDataset):
    """`make_dataset`'s batches as a Keras `PyDataset`: NumPy and OpenCV, for any backend (no TensorFlow).

    Same rows, pixels, augmentation and targets as the `tf.data` pipeline: images float32 [0, 255]
    (B, S, S, 3); labels (B,); per-image sample weights from `class_weight`; with `lesions`, the dicts
    of targets and weights of a lesion-map model, each box mask warped with its image. Training
    shuffles every epoch; the order and the warps derive from `seed`, the epoch and the batch, so
    worker threads or processes give the same batches in any order.

    Args:
        table, size, batch_size, training, augmentation, seed, cache, lesions, class_weight: as
            `make_dataset`.
        workers: reading threads (or processes) for Keras' enqueuer (None: up to 4).
        use_multiprocessing: read with processes.
        pad_multiple: pad every batch to a multiple of this with zero-weight copies of its last image.
    """

    def __init__(self, table: pd.DataFrame, size: int, batch_size: int, training: bool,
                 augmentation: Augmentation | None = None, seed: int = 0,
                 cache: str | os.PathLike | None = None, lesions: LesionTargets | None = None,
                 class_weight: dict[int, float] | None = None, workers: int | None = None,
                 use_multiprocessing: bool = False, pad_multiple: int = 1):
        workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        super().__init__(workers=max(int(workers), 1), use_multiprocessing=use_multiprocessing,
                         max_queue_size=max(2 * workers, 4))
        keep = np.ones(len(table), bool)
        if cache is not None:
            keep = ~table["path"].isin(cache_failures(cache, size)).to_numpy()
        table = table[keep]
        self.size, self.batch_size, self.training, self.seed = int(size), int(batch_size), training, int(seed)
        self.augmentation = augmentation if training else None
        self.paths = table["path"].astype(str).tolist()
        self.labels = table["label"].to_numpy(np.float32)
        self.weights = _per_image_weights(self.labels, class_weight) if class_weight else None
        self.negative_weight = np.float32({0: 1.0, **(class_weight or {})}[0])
        self.lesions = lesions
        if lesions is not None:
            self.boxes, self.box_weight = lesions.boxes[keep], lesions.weight[keep]
        self.images = open_cache(cache, size, self.paths) if cache is not None else None
        self.pad_multiple = max(int(pad_multiple), 1)
        self.epoch, self._repeat = 0, False
        if not self.paths:
            raise ValueError("no images to make batches of")

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / self.batch_size)

    @property
    def num_batches(self) -> int | None:
        return None if self._repeat else len(self)

    def repeat(self) -> ImageBatches:
        """Batches without end (each pass reshuffled), for `fit(steps_per_epoch=...)`; returns self."""
        self._repeat = True
        return self

    def on_epoch_end(self) -> None:
        self.epoch += 1

    def _order(self, round_: int) -> np.ndarray:
        if not self.training:
            return np.arange(len(self.paths))
        return np.random.default_rng([self.seed, round_]).permutation(len(self.paths))

    def _read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.images is not None:
            return np.stack([self.images[i] for i in rows]), np.ones(len(rows), bool)
        decoded = [_decode_file(self.paths[i], self.size) for i in rows]
        return np.stack([image for image, _ in decoded]), np.array([ok for _, ok in decoded])

    def __getitem__(self, index: int):
        round_, position = self.epoch + index // len(self), index % len(self)
        rows = self._order(round_)[position * self.batch_size:(position + 1) * self.batch_size]
        images, ok = self._read(rows)
        rows, images = rows[ok], images[ok].astype(np.float32)
        masks = box_masks(self.boxes[rows], self.size) if self.lesions is not None else None
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, round_, position])
            arrays = self.augmentation.warp_arrays(rng, images, *([] if masks is None else [masks]))
            images, masks = arrays[0], (arrays[1] if masks is not None else None)
        labels = self.labels[rows]
        weights = None if self.weights is None else self.weights[rows]
        if self.lesions is not None and self.training and self.lesions.erase_fraction:
            rng = np.random.default_rng([self.seed, round_, position, 1])
            images, masks, labels, erased = erase_lesions(images, masks, labels, self.lesions.erase_fraction, rng)
            if weights is not None:
                weights = np.where(erased, self.negative_weight, weights).astype(np.float32)
        if self.lesions is not None and self.training and self.lesions.paste_fraction:
            rng = np.random.default_rng([self.seed, round_, position, 3])
            images, masks, labels, _ = paste_lesions(images, masks, labels, self.box_weight[rows] > 0,
                                                     self.lesions.paste_fraction, rng)
        map_size = None if self.lesions is None else self.lesions.map_size
        if self.lesions is not None and self.training and self.lesions.crop:
            rng = np.random.default_rng([self.seed, round_, position, 2])
            images, masks = lesion_crops(images, masks, self.lesions.crop, rng)
            map_size = self.lesions.crop_map_size(self.size)
            weights = np.zeros(len(rows), np.float32)  # an image's label does not say whether its crop holds the lesion
        x, y = np.repeat(images, 3, axis=-1), labels
        if self.lesions is not None:
            y = {"probability": y, "lesion_map": map_targets(masks, map_size, self.lesions.cell_rule)}
            weights = {"probability": np.ones(len(rows), np.float32) if weights is None else weights,
                       "lesion_map": self.box_weight[rows]}
            if self.lesions.box_head:
                y["lesion_box"] = box_targets(masks, map_size, self.lesions.box_cells)
                weights["lesion_box"] = self.box_weight[rows]
        missing = -len(x) % self.pad_multiple
        if missing:
            x, y, weights = _pad_batch(x, y, weights, missing)
        return (x, y) if weights is None else (x, y, weights)


def _pad_batch(x, y, weights, missing: int):
    """Repeat the batch's last image `missing` times, with sample weight 0."""
    def pad(array, value=None):
        extra = np.repeat(array[-1:], missing, axis=0)
        return np.concatenate([array, extra if value is None else np.full_like(extra, value)])

    if weights is None:
        weights = np.ones(len(x), np.float32)
    if isinstance(y, dict):
        return pad(x), {k: pad(v) for k, v in y.items()}, {k: pad(v, 0.0) for k, v in weights.items()}
    return pad(x), pad(y), pad(weights, 0.0)
