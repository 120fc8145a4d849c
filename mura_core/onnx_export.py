"""Writing an ensemble member as ONNX, with the outputs the serving runtime reads, and checking it.

`export_member` turns a flat Keras model from `create_model` into one ONNX graph (through tf2onnx, on
TensorFlow) whose named outputs are everything the default view needs from one forward pass
(`onnx_runtime.OUTPUTS`): the probability, the lesion map and box codes (when the model has them), the Grad-CAM layer's
activations and the Grad-CAM channel weights. The weights are the exact gradient of the probability
with respect to the pooled activations, divided by the number of cells (what `tf.GradientTape` gives
`cam_backends` after its spatial mean): the head from the global average pool to the probability
(Dense, BatchNormalization, Dropout and Activation layers, as `registry.create_model` builds it) is
differentiated layer by layer inside the graph, with each ReLU's mask and each sigmoid's slope taken
from the same forward pass. A head of other layers gets no weights output (its Grad-CAM then needs
Keras).

Keras' `Normalization` layer keeps its fixed mean and variance as captured tensors, which tf2onnx
turns into extra graph inputs; the exported graph reads a twin of the model whose scaling layers hold
them as constants (`ConstantScaling`), so the ONNX graph has one input, the raw image.

`check_parity` runs the Keras model and the ONNX graph on real radiographs and refuses a member whose
outputs differ by more than `PROBABILITY_TOLERANCE` or `MAP_TOLERANCE`.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np

from .heatmaps import normalize_heatmap
from .imaging import ImageLoadError, is_image_name, load_image, resize_square
from .installed import DEFAULT_WEIGHTS, sha256_file
from .onnx_runtime import (
    BOX_OUTPUT,
    FEATURES,
    GRADCAM_WEIGHTS,
    LESION_OUTPUT,
    PROBABILITY,
    OnnxGraph,
    gradcam_maps,
)
from .vocabulary import LESION_BOX, LESION_MAP

OPSET = 17
"""The ONNX opset members are written with (ONNX Runtime 1.17 and later run it)."""
PROBABILITY_TOLERANCE = 1e-4
MAP_TOLERANCE = 1e-3
BOX_TOLERANCE = 1e-3
"""Largest differences `check_parity` accepts: probabilities, lesion and Grad-CAM maps (in [0, 1]), and the
box head's codes (offsets in cells, log sizes in cells)."""


class ExportError(RuntimeError):
    """A member cannot be written as ONNX, or its ONNX outputs differ from Keras'; the message says why."""


@keras.saving.register_keras_serializable(package="mura_core")
class ConstantScaling(keras.layers.Layer):
    """``(x - mean) / std`` with mean and std as constants of the graph (not captured tensors).

    What Keras' `Normalization` computes for a fixed mean and variance (std = max(sqrt(variance),
    epsilon)); the export's twin of a model uses it in place of `Normalization`.
    """

    def __init__(self, mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,), **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(v) for v in np.ravel(mean)]
        self.std = [float(v) for v in np.ravel(std)]

    def call(self, inputs):
        x = keras.ops.cast(inputs, self.compute_dtype)
        mean = keras.ops.convert_to_tensor(np.asarray(self.mean, np.float32), self.compute_dtype)
        std = keras.ops.convert_to_tensor(np.asarray(self.std, np.float32), self.compute_dtype)
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


def _constant_normalization(layer) -> bool:
    """Whether `layer` is a `Normalization` over the channels (last axis) with its statistics set: given
    (the spec's scaling) or adapted and loaded (EfficientNet's own)."""
    if not isinstance(layer, keras.layers.Normalization) or layer.invert or getattr(layer, "mean", None) is None:
        return False
    return tuple(layer.axis) in ((-1,), (len(layer.input.shape) - 1,))


def constant_scaling_twin(model: keras.Model) -> keras.Model:
    """A copy of `model` (new layers, the same weights) whose `Normalization` layers over the channels are
    equal `ConstantScaling` layers (their statistics as graph constants)."""
    def clone(layer):
        if _constant_normalization(layer):
            mean = np.ravel(keras.ops.convert_to_numpy(layer.mean)).astype(np.float64)
            std = np.maximum(np.sqrt(np.ravel(keras.ops.convert_to_numpy(layer.variance))), keras.backend.epsilon())
            return ConstantScaling(mean.tolist(), std.tolist(), name=layer.name, dtype=layer.dtype_policy)
        return layer.__class__.from_config(layer.get_config())

    twin = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        copy = twin.get_layer(layer.name)
        if copy.weights:  # a ConstantScaling holds its statistics as constants instead
            copy.set_weights(layer.get_weights())
    return twin


def _single_inbound(layer) -> keras.layers.Layer | None:
    """The one layer feeding `layer` in its functional graph, or None when it has several inputs."""
    nodes = layer._inbound_nodes
    if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
        return None
    return nodes[0].input_tensors[0]._keras_history.operation


def head_chain(model: keras.Model, gradcam_layer: str) -> list[keras.layers.Layer] | None:
    """The layers from the global average pool of `gradcam_layer`'s output to "probability", in order
    (the pool first), when each is one this module differentiates; else None.

    Differentiated: Dense (linear, ReLU or sigmoid activation), BatchNormalization, Dropout, Activation
    (linear, ReLU, sigmoid).
    """
    chain = []
    layer = model.get_layer("probability")
    while True:
        chain.append(layer)
        if isinstance(layer, keras.layers.GlobalAveragePooling2D):
            break
        if not _differentiable(layer):
            return None
        layer = _single_inbound(layer)
        if layer is None:
            return None
    if _single_inbound(chain[-1]) is not model.get_layer(gradcam_layer):
        return None
    if chain[-1].data_format != "channels_last" or chain[-1].keepdims:
        return None
    return chain[::-1]


_ACTIVATIONS = ("linear", "relu", "sigmoid")


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") if activation is not None else "linear"


def _differentiable(layer) -> bool:
    if isinstance(layer, (keras.layers.Dense, keras.layers.Activation)):
        return _activation_name(layer) in _ACTIVATIONS
    return isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Dropout))


def _head_steps(chain: list) -> list[tuple]:
    """The head's layers after the pool, for `_backward`: ("dense", kernel, bias (variables), activation),
    ("activation", name), ("scale", per-channel factor) for BatchNormalization, or ("same",)."""
    steps = []
    for layer in chain[1:]:
        if isinstance(layer, keras.layers.Dropout):
            steps.append(("same",))
        elif isinstance(layer, keras.layers.BatchNormalization):
            weights = {w.path.split("/")[-1]: keras.ops.convert_to_numpy(w) for w in layer.weights}
            gamma = weights.get("gamma", np.ones_like(weights["moving_variance"]))
            steps.append(("scale", (gamma / np.sqrt(weights["moving_variance"] + layer.epsilon)).astype(np.float32)))
        elif isinstance(layer, keras.layers.Dense):  # its variables: the graph stores them once for both passes
            steps.append(("dense", layer.kernel, layer.bias if layer.use_bias else None, _activation_name(layer)))
        else:
            steps.append(("activation", _activation_name(layer)))
    return steps


def _backward(tf, steps: list[tuple], inputs: list, outputs: list):
    """d(probability)/d(pooled features): the chain rule through the head's `steps`, last to first, given
    each step's input and output in this forward pass."""
    grad = tf.ones_like(outputs[-1])
    for step, x, y in reversed(list(zip(steps, inputs, outputs))):
        if step[0] == "scale":
            grad = grad * tf.constant(step[1])[None, :]
            continue
        if step[0] == "same":
            continue
        pre = x
        if step[0] == "dense":
            kernel = tf.convert_to_tensor(step[1].value)
            pre = tf.matmul(x, kernel)
            if step[2] is not None:
                pre = pre + tf.convert_to_tensor(step[2].value)
        activation = step[-1]
        if activation == "relu":
            grad = grad * tf.cast(pre > 0, grad.dtype)
        elif activation == "sigmoid":
            grad = grad * y * (1.0 - y)
        if step[0] == "dense":
            # grad @ kernel^T written as (kernel @ grad^T)^T: a transposed constant would be folded into a
            # second copy of the kernel in the graph
            grad = tf.transpose(tf.matmul(kernel, tf.transpose(grad)))
    return grad


def export_member(model: keras.Model, path: str | os.PathLike, gradcam_layer: str,
                  opset: int = OPSET) -> dict[str, Any]:
    """Write `model` as an ONNX graph at `path` with the named outputs `onnx_runtime.OUTPUTS` it can give.

    Args:
        model: a flat functional model from `create_model` (input "image", (S, S, 3) raw pixels).
        path: the `.onnx` file to write.
        gradcam_layer: the layer whose activations are the Grad-CAM features.
        opset: the ONNX opset.

    Returns:
        {"opset", "outputs"}: the opset written and the output names the graph has.

    Raises:
        ExportError: not on TensorFlow, tf2onnx missing, or the conversion failed.
    """
    if keras.backend.backend() != "tensorflow":
        raise ExportError(f"ONNX export runs on the TensorFlow backend, not {keras.backend.backend()}")
    try:
        import tensorflow as tf
        import tf2onnx
        from keras.src.export.tf2onnx_lib import patch_tf2onnx
    except ImportError as exc:
        raise ExportError(f"ONNX export needs tf2onnx and onnx ({exc}); pip install -r requirements.txt") from None
    twin = constant_scaling_twin(model)
    size = int(model.input_shape[1])
    chain = head_chain(twin, gradcam_layer)
    named = {PROBABILITY: twin.get_layer("probability").output, FEATURES: twin.get_layer(gradcam_layer).output}
    if any(layer.name == LESION_MAP for layer in twin.layers):
        named[LESION_OUTPUT] = twin.get_layer(LESION_MAP).output
    if any(layer.name == LESION_BOX for layer in twin.layers):
        named[BOX_OUTPUT] = twin.get_layer(LESION_BOX).output
    steps = _head_steps(chain) if chain else []
    head_inputs = [layer.input for layer in chain[1:]] if chain else []
    head_outputs = [layer.output for layer in chain[1:]] if chain else []
    graph = keras.Model(twin.inputs, [named, head_inputs, head_outputs])
    spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="image")

    def forward(image):
        out, inputs, outputs = graph(image, training=False)
        result = {PROBABILITY: tf.identity(out[PROBABILITY][:, 0], name=PROBABILITY),
                  FEATURES: tf.identity(out[FEATURES], name=FEATURES)}
        if LESION_OUTPUT in out:
            result[LESION_OUTPUT] = tf.identity(out[LESION_OUTPUT][..., 0], name=LESION_OUTPUT)
        if BOX_OUTPUT in out:
            result[BOX_OUTPUT] = tf.identity(out[BOX_OUTPUT], name=BOX_OUTPUT)
        if chain:
            cells = tf.cast(tf.shape(out[FEATURES])[1] * tf.shape(out[FEATURES])[2], tf.float32)
            result[GRADCAM_WEIGHTS] = tf.identity(_backward(tf, steps, inputs, outputs) / cells, name=GRADCAM_WEIGHTS)
        return result

    function = tf.function(forward, input_signature=[spec])
    patch_tf2onnx()  # Keras' own patch of tf2onnx for NumPy 2
    path = Path(path)
    try:
        tf2onnx.convert.from_function(function, input_signature=[spec], opset=opset, output_path=str(path))
    except Exception as exc:  # tf2onnx raises many types
        raise ExportError(f"{path}: tf2onnx could not convert {model.name} ({type(exc).__name__}: {exc})") from None
    onnx_graph = OnnxGraph(path)
    extra = [name for name in onnx_graph.inputs if name != "image"]
    if extra:
        raise ExportError(f"{path}: the graph has inputs besides the image: {', '.join(extra)}")
    return {"opset": opset, "outputs": sorted(onnx_graph.outputs)}


def keras_outputs(model: keras.Model, gradcam_layer: str, images: np.ndarray) -> dict[str, np.ndarray]:
    """What the Keras model gives for `images` ((n, S, S, 3) raw pixels): probability (n,), lesion map
    (n, h, w) when it has one, and Grad-CAM (n, h, w) at `gradcam_layer` by `tf.GradientTape`
    (`cam_backends`), before normalization."""
    from .gradcam import CamExplainer

    explainer = CamExplainer(model, gradcam_layer)
    batch = keras.ops.convert_to_tensor(images.astype(np.float32))
    probability, cams = explainer._gradcam_fn(batch)
    out = {PROBABILITY: keras.ops.convert_to_numpy(probability), "gradcam": keras.ops.convert_to_numpy(cams)}
    if explainer.has_lesion_map:
        _, maps, *boxes = explainer._map_fn(batch)
        out[LESION_OUTPUT] = keras.ops.convert_to_numpy(maps)
        if boxes:
            out[BOX_OUTPUT] = keras.ops.convert_to_numpy(boxes[0])
    return out


def check_parity(model: keras.Model, path: str | os.PathLike, gradcam_layer: str,
                 images: np.ndarray) -> dict[str, float]:
    """The largest differences between the Keras model and its ONNX graph on `images`.

    Compared: the probability, the lesion map (a probability per cell) and the Grad-CAM map scaled to
    [0, 1] (as every view shows it) when the graph gives its weights.

    Args:
        model: the Keras model.
        path: its ONNX graph.
        gradcam_layer: the Grad-CAM layer.
        images: (n, S, S, 3) raw pixels of real radiographs.

    Returns:
        {"probability", "lesion_map", "gradcam"}: the largest absolute differences (those compared).

    Raises:
        ExportError: a difference above `PROBABILITY_TOLERANCE` (probability) or `MAP_TOLERANCE` (maps).
    """
    expected = keras_outputs(model, gradcam_layer, images)
    graph = OnnxGraph(path)
    got = graph.run(images, graph.outputs)
    diffs = {PROBABILITY: float(np.max(np.abs(got[PROBABILITY] - expected[PROBABILITY])))}
    if LESION_OUTPUT in expected:
        if LESION_OUTPUT not in got:
            raise ExportError(f"{path}: the graph has no lesion map, the model has one")
        diffs[LESION_OUTPUT] = float(np.max(np.abs(got[LESION_OUTPUT] - expected[LESION_OUTPUT])))
    if BOX_OUTPUT in expected:
        if BOX_OUTPUT not in got:
            raise ExportError(f"{path}: the graph has no box head, the model has one")
        diffs[BOX_OUTPUT] = float(np.max(np.abs(got[BOX_OUTPUT] - expected[BOX_OUTPUT])))
    if GRADCAM_WEIGHTS in got:
        cams = gradcam_maps(got[FEATURES], got[GRADCAM_WEIGHTS])
        diffs["gradcam"] = float(max(np.max(np.abs(normalize_heatmap(a) - normalize_heatmap(b)))
                                     for a, b in zip(cams, expected["gradcam"])))
    limits = {PROBABILITY: PROBABILITY_TOLERANCE, LESION_OUTPUT: MAP_TOLERANCE, "gradcam": MAP_TOLERANCE,
              BOX_OUTPUT: BOX_TOLERANCE}
    over = [f"{key} {value:.2g} > {limits[key]:g}" for key, value in diffs.items() if not value <= limits[key]]
    if over:
        raise ExportError(f"{path}: ONNX outputs differ from Keras' on {len(images)} radiographs: {'; '.join(over)}")
    return diffs


def export_checked(model: keras.Model, path: str | os.PathLike, gradcam_layer: str, images: np.ndarray,
                   opset: int = OPSET) -> dict[str, Any]:
    """`export_member` into a temporary file, `check_parity` on `images`, then the file moved to `path`.

    Returns:
        {"opset", "outputs", "parity"}: as `export_member`, with the differences `check_parity` found.

    Raises:
        ExportError: the conversion failed or the outputs differ (nothing is written at `path`).
    """
    path = Path(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".onnx", dir=path.parent)
    os.close(handle)
    try:
        written = export_member(model, tmp, gradcam_layer, opset)
        written["parity"] = check_parity(model, tmp, gradcam_layer, images)
        os.chmod(tmp, 0o644)  # mkstemp's file is private; a member file is not
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return written


PARITY_FOLDER = DEFAULT_WEIGHTS / "samples"
"""Where the parity check's radiographs come from: the sample studies bundled with the repository."""


def parity_images(size: int, folder: str | os.PathLike = PARITY_FOLDER) -> np.ndarray:
    """The radiographs of `folder` as the models' raw input at `size` px: (n, size, size, 3) float32.

    Raises:
        ExportError: fewer than two readable radiographs there.
    """
    grays = []
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if is_image_name(path):
            try:
                grays.append(load_image(path))
            except ImageLoadError:
                continue
    if len(grays) < 2:
        raise ExportError(f"{folder}: the parity check needs at least two radiographs there, found {len(grays)}")
    return np.stack([resize_square(g, size) for g in grays]).astype(np.float32)


def write_onnx_member(model: keras.Model, path: str | os.PathLike, gradcam_layer: str,
                      opset: int = OPSET) -> dict[str, Any]:
    """Write `model` as ONNX at `path`, checked on the bundled radiographs (`export_checked`).

    Returns:
        The manifest's "onnx" entry of the member: file (name in its folder), sha256, opset, outputs.
    """
    path = Path(path)
    written = export_checked(model, path, gradcam_layer, parity_images(int(model.input_shape[1])), opset)
    return {"file": path.name, "sha256": sha256_file(path), "opset": written["opset"],
            "outputs": written["outputs"]}


def halve_keras_weights(path: str | os.PathLike) -> None:
    """Store the float32 weights of a `.keras` archive as float16, in place (deflated): half the size.

    Keras loads them into its float32 variables (the values rounded to float16). For an ensemble whose
    members have ONNX graphs, the Keras models only serve gradients and training.
    """
    import h5py

    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        items = [(info, archive.read(info.filename)) for info in archive.infolist()]
    halved = []
    for info, data in items:
        if info.filename.endswith(".h5"):
            source, out = io.BytesIO(data), io.BytesIO()
            with h5py.File(source, "r") as old, h5py.File(out, "w") as new:
                new.attrs.update(old.attrs)

                def copy(name, item, new=new):
                    if isinstance(item, h5py.Dataset):
                        value = item[()]
                        if getattr(value, "dtype", None) == np.float32:
                            value = value.astype(np.float16)
                        new.create_dataset(name, data=value)
                    else:
                        new.require_group(name)
                    new[name].attrs.update(item.attrs)

                old.visititems(copy)
            data = out.getvalue()
        halved.append((info, data))
    tmp = path.with_suffix(".half")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for info, data in halved:
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    os.replace(tmp, path)
