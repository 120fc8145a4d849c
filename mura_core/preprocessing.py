"""The deterministic preprocessing every image goes through, and the scaling that lives in the model.

Deterministic steps (shared by training, validation, evaluation, the CLI and the dashboard):
decode (`imaging.load_image`) -> resize to the model's square input -> grayscale to 3 channels, uint8.
Augmentation is added for training only (`pipeline.py`). Pixel scaling (each backbone's own
ImageNet convention) is a layer inside the saved model, so nothing outside the model can drift.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from .imaging import ImageSource, load_image, resize_square  # noqa: F401  (resize_square re-exported)


def load_for_model(source: ImageSource, size: int, name: str | None = None) -> np.ndarray:
    """Decode `source` and resize it: (size, size, 3) uint8. Raises `ImageLoadError`."""
    return resize_square(load_image(source, name), size)


@dataclass(frozen=True)
class Scaling:
    """How a backbone's ImageNet weights expect raw [0, 255] RGB pixels: ``(x - mean) / std``.

    The conventions of `keras.applications.imagenet_utils.preprocess_input`: "torch" (DenseNet:
    [0, 1], then ImageNet mean/std), "caffe" (ResNet: RGB -> BGR, minus the ImageNet mean), "tf"
    (MobileNet: [-1, 1]), "lite" (EfficientNet-Lite's checkpoints: (x - 127) / 128) and "raw"
    (backbones that scale inside themselves, like EfficientNet).
    Each `ModelSpec` carries one, and `layer()` puts it inside the model.

    Attributes:
        name: the `preprocess_input` mode it reproduces.
        mean: per-channel mean in [0, 255] units, in the backbone's channel order.
        std: per-channel standard deviation in [0, 255] units.
        bgr: the backbone expects BGR channel order.
    """

    name: str
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bgr: bool = False

    def layer(self, name: str = "scaling") -> keras.layers.Layer:
        """The Keras layer that applies this scaling (first layer of every model)."""
        if self.bgr:  # Keras' Normalization cannot swap channels: our layer does both steps
            return ImageScaling(self.name, name=name)
        if self.mean == (0.0, 0.0, 0.0) and self.std == (1.0, 1.0, 1.0):
            return keras.layers.Identity(name=name)
        return keras.layers.Normalization(mean=list(self.mean), variance=[s * s for s in self.std], name=name)


TORCH = Scaling("torch", mean=(0.485 * 255, 0.456 * 255, 0.406 * 255), std=(0.229 * 255, 0.224 * 255, 0.225 * 255))
CAFFE = Scaling("caffe", mean=(103.939, 116.779, 123.68), bgr=True)
TF = Scaling("tf", mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5))
RAW = Scaling("raw")
# EfficientNet-Lite's ImageNet checkpoints (efficientnet_lite): (x - 127) / 128.
LITE = Scaling("lite", mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
SCALINGS = {s.name: s for s in (TORCH, CAFFE, TF, RAW, LITE)}


@keras.saving.register_keras_serializable(package="mura_core")
class ImageScaling(keras.layers.Layer):
    """A `Scaling` by name as one layer: channel swap (caffe) and ``(x - mean) / std``.

    New models use it for "caffe" only (`Scaling.layer`); models saved by earlier versions hold it
    for every mode, so it keeps reading them all.
    """

    def __init__(self, mode: str = "torch", **kwargs):
        super().__init__(**kwargs)
        if mode not in SCALINGS:
            raise ValueError(f"Unknown scaling mode {mode!r}; expected one of {tuple(SCALINGS)}")
        self.mode = mode

    def call(self, inputs):
        scaling = SCALINGS[self.mode]
        x = ops.cast(inputs, self.compute_dtype)
        if scaling.bgr:
            x = ops.flip(x, axis=-1)
        mean = ops.convert_to_tensor(scaling.mean, self.compute_dtype)
        std = ops.convert_to_tensor(scaling.std, self.compute_dtype)
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
