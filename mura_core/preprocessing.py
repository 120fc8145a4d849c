"""The deterministic preprocessing every image goes through, and the scaling that lives in the model.

Deterministic steps (shared by training, validation, evaluation, the CLI and the dashboard):
decode (`imaging.load_image`) -> resize to the model's square input -> grayscale to 3 channels, uint8.
Augmentation is added for training only (`pipeline.py`). Pixel scaling (each backbone's own
ImageNet convention) is a layer inside the saved model, so nothing outside the model can drift.
"""

from __future__ import annotations

import cv2
import keras
import numpy as np
from keras import ops

from .imaging import ImageSource, load_image

# Keras' conventions: keras.applications.imagenet_utils.preprocess_input modes.
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
SCALING_MODES = ("torch", "caffe", "tf", "raw")


def resize_square(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D uint8 radiograph to (size, size, 3) uint8, the models' raw input.

    Like the MURA method, the image is stretched to the square (no padding). Shrinking uses area
    interpolation (no aliasing), enlarging bilinear.

    Args:
        gray: (H, W) uint8 image from `load_image`.
        size: the model's input side in pixels.

    Returns:
        (size, size, 3) uint8 array, the gray channel repeated.
    """
    height, width = gray.shape[:2]
    shrink = height >= size and width >= size
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    resized = cv2.resize(gray, (size, size), interpolation=interpolation)
    return np.repeat(resized[..., None], 3, axis=-1)


def load_for_model(source: ImageSource, size: int, name: str | None = None) -> np.ndarray:
    """Decode `source` and resize it: (size, size, 3) uint8. Raises `ImageLoadError`."""
    return resize_square(load_image(source, name), size)


@keras.saving.register_keras_serializable(package="mura_core")
class ImageScaling(keras.layers.Layer):
    """Scale raw [0, 255] RGB pixels as a backbone's ImageNet weights expect.

    Modes follow `keras.applications.imagenet_utils.preprocess_input`: "torch" (DenseNet: [0, 1],
    then ImageNet mean/std), "caffe" (ResNet: RGB->BGR, minus the ImageNet mean), "tf" (MobileNet:
    [-1, 1]) and "raw" (backbones that scale inside themselves, like EfficientNet).
    """

    def __init__(self, mode: str = "torch", **kwargs):
        super().__init__(**kwargs)
        if mode not in SCALING_MODES:
            raise ValueError(f"Unknown scaling mode {mode!r}; expected one of {SCALING_MODES}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "torch":
            mean = ops.convert_to_tensor([m * 255.0 for m in _TORCH_MEAN], self.compute_dtype)
            std = ops.convert_to_tensor([s * 255.0 for s in _TORCH_STD], self.compute_dtype)
            return (x - mean) / std
        if self.mode == "caffe":
            mean = ops.convert_to_tensor(_CAFFE_MEAN_BGR, self.compute_dtype)
            return ops.flip(x, axis=-1) - mean
        if self.mode == "tf":
            return x / 127.5 - 1.0
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
