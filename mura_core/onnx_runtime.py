"""Serving a member from its ONNX graph with ONNX Runtime: probabilities, lesion maps and Grad-CAM without
TensorFlow.

Light on purpose: this module imports NumPy and `onnxruntime`, never Keras. A member written by
`onnx_export.export_member` has the named outputs `OUTPUTS`; one forward pass gives the probability,
the lesion map and the Grad-CAM at the last convolutional layer (its activations weighted by the exact
gradient of the probability, computed inside the graph). Heatmap methods that need real gradients at
other layers or many passes (Grad-CAM++, LayerCAM, Score-CAM) load the member's Keras model the first
time one is asked for (`OnnxMember.needs_keras`).

Which runtime serves an installed ensemble: `RUNTIME_ENV` (`MURA_RUNTIME`) or the dashboard's
`runtime` secret, "auto" (ONNX where the manifest lists a member's ONNX file, else Keras), "onnx" or
"keras" (`runtime_setting`).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .heatmaps import normalize_heatmap, resize_heatmap
from .vocabulary import CAM_METHODS, LESION_BOX, LESION_MAP

PROBABILITY, LESION_OUTPUT, FEATURES, GRADCAM_WEIGHTS = "probability", "lesion_map", "features", "gradcam_weights"
BOX_OUTPUT = LESION_BOX
OUTPUTS = (PROBABILITY, LESION_OUTPUT, BOX_OUTPUT, FEATURES, GRADCAM_WEIGHTS)
"""The named outputs of a member's ONNX graph: the probability (n,), the lesion map (n, h, w), the box
head's codes (n, h, w, 4) (`regions.BOX_CHANNELS`), the Grad-CAM layer's activations (n, h, w, C) and the
Grad-CAM channel weights (n, C). The lesion map and the box codes only when the model has them; the
weights only when its head is one the export differentiates."""

RUNTIME_ENV = "MURA_RUNTIME"
RUNTIME_SECRET = "runtime"
RUNTIMES = ("auto", "onnx", "keras")
"""Which runtime serves the members: ONNX where the files exist (auto), ONNX only, or Keras only."""


def runtime_setting(value: str | None = None) -> str:
    """The runtime asked for: `value` when given, else `$MURA_RUNTIME`, else "auto".

    Raises:
        ValueError: not one of `RUNTIMES` (the message names where it came from).
    """
    source = "runtime" if value else RUNTIME_ENV
    chosen = (value or os.environ.get(RUNTIME_ENV) or "auto").strip().lower()
    if chosen not in RUNTIMES:
        raise ValueError(f"{source}={chosen!r}: choose one of {', '.join(RUNTIMES)}")
    return chosen


@functools.lru_cache(maxsize=1)
def onnxruntime_available() -> bool:
    """Whether `onnxruntime` is installed (checked without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


@functools.lru_cache(maxsize=1)
def gradient_methods_available() -> bool:
    """Whether the Keras methods that need TensorFlow (tf-keras-vis) could run here: Keras' backend is
    TensorFlow and it is installed (checked without importing either)."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    return backend == "tensorflow" and importlib.util.find_spec("tensorflow") is not None


def gradcam_maps(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Grad-CAM from activations (n, h, w, C) and channel weights (n, C): ReLU of the weighted sum, (n, h, w)."""
    return np.maximum(np.einsum("nhwc,nc->nhw", features, weights), 0.0)


THREADS_ENV = "MURA_ONNX_THREADS"
"""ONNX Runtime's intra-op threads per graph (default 0: one per physical core)."""


def onnx_threads() -> int:
    """`$MURA_ONNX_THREADS` as a count of threads, 0 (ONNX Runtime's default) when unset.

    Raises:
        ValueError: not a whole number >= 0.
    """
    value = os.environ.get(THREADS_ENV, "").strip() or "0"
    if not value.isdigit():
        raise ValueError(f"{THREADS_ENV}={value!r}: expected a whole number of threads (0: one per core)")
    return int(value)


class OnnxGraph:
    """One ONNX graph in an ONNX Runtime session (CPU): raw images in, named outputs out.

    Its worker threads sleep between runs instead of spinning: a server shares its cores between
    sessions (and often a training run), where spinning threads took the CPU the next run needed (a
    warm MobileNetV2 study 0.20 s spinning, 0.13 s not, with a training run beside). It runs one image
    at a time with ONNX Runtime's memory arena, so that the arena holds the buffers of one image's pass,
    reused by every later pass, whatever the study's size. Without the arena every pass asked the C heap
    for its buffers afresh and the kernel had to map and zero them again; with it and whole batches the
    arena kept what it held for each batch shape. The bundled EfficientNet-Lite0 at 448 px, a warm 2-image
    study's passes on 2 cores: 97-108 ms without the arena, 66 ms with it on the batch of 2 (+97 MiB
    resident), 73-77 ms one image at a time (+48 MiB, and a lower peak than without the arena).

    Args:
        path: the `.onnx` file.
        threads: intra-op threads (None: `onnx_threads()`; 0: one per physical core).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = onnx_threads() if threads is None else threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.path = Path(path)
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.output_shapes = {o.name: list(o.shape) for o in self.session.get_outputs()}
        shape = self.session.get_inputs()[0].shape
        self.input_size = int(shape[1]) if isinstance(shape[1], int) else None

    def run(self, images: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The outputs `names` for (n, S, S, 3) raw pixels, one image per pass (see the class)."""
        images = np.asarray(images, np.float32)
        if len(images) <= 1:
            return dict(zip(names, self.session.run(list(names), {self.inputs[0]: images})))
        passes = [self.run(images[i:i + 1], names) for i in range(len(images))]
        return {name: np.concatenate([one[name] for one in passes]) for name in names}


class OnnxMember:
    """A member served by ONNX Runtime, with the `gradcam.CamExplainer` interface the ensemble calls.

    Args:
        path: the member's `.onnx` file (already verified).
        architecture: its registry name.
        gradcam_layer: the layer its Grad-CAM reads (the manifest's).
        keras_loader: returns the member's Keras model; called once, the first time a heatmap method
            needs gradients the graph does not give.
        threads: ONNX Runtime's intra-op threads (None: `onnx_threads()`).
    """

    def __init__(self, path: str | os.PathLike, architecture: str, gradcam_layer: str,
                 keras_loader: Callable[[], Any], threads: int | None = None):
        self.graph = OnnxGraph(path, threads)
        if self.graph.input_size is None or PROBABILITY not in self.graph.outputs:
            raise ValueError(f"{path}: not a member graph (a fixed-size image input and a probability output)")
        self.name = architecture
        self.input_size = self.graph.input_size
        self.layer_name = gradcam_layer
        self.has_lesion_map = LESION_OUTPUT in self.graph.outputs
        self.has_boxes = BOX_OUTPUT in self.graph.outputs
        self.has_gradcam = FEATURES in self.graph.outputs and GRADCAM_WEIGHTS in self.graph.outputs
        side = self.graph.output_shapes.get(LESION_OUTPUT, [None, None])[1]
        self.map_side = int(side) if isinstance(side, int) else None
        self.map_stride = self.input_size // self.map_side if self.map_side else None
        self._keras_loader = keras_loader
        self._keras = None  # (model, CamExplainer) once loaded
        self._lock = threading.Lock()

    @property
    def methods(self) -> list[str]:
        """Heatmap methods offered: the graph's (lesion map, Grad-CAM), and those Keras computes when
        TensorFlow is installed (`gradient_methods_available`)."""
        keras_methods = set(CAM_METHODS) if gradient_methods_available() else {"gradcam", LESION_MAP}
        return [m for m in CAM_METHODS if (m != LESION_MAP or self.has_lesion_map)
                and (m in keras_methods or not self.needs_keras(m))]

    def needs_keras(self, method: str) -> bool:
        """Whether `method` needs the Keras model (gradients the graph does not give, or many passes)."""
        if method == LESION_MAP:
            return False
        return not (method == "gradcam" and self.has_gradcam)

    @property
    def keras_loaded(self) -> bool:
        """Whether the Keras model has been loaded (by a method that needs it, or by `keras_model`)."""
        return self._keras is not None

    def keras_model(self):
        """The member's Keras model, loaded the first time (imports Keras and its backend)."""
        return self._keras_explainer().model

    def _keras_explainer(self):
        with self._lock:
            if self._keras is None:
                from .gradcam import CamExplainer

                model = self._keras_loader()
                self._keras = CamExplainer(model, self.layer_name)
            return self._keras

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (n,) for a batch of raw images (n, S, S, 3) in [0, 255]."""
        return self.graph.run(images, [PROBABILITY])[PROBABILITY]

    def explain(self, images: np.ndarray, method: str = "gradcam") -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (n,) and heatmaps (n, S, S) in [0, 1], as `CamExplainer.explain` gives them.

        The lesion map and the Grad-CAM come from one pass of the graph; other methods from the Keras
        model (loaded the first time).
        """
        if method not in CAM_METHODS:
            raise ValueError(f"Unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}")
        if method == LESION_MAP and not self.has_lesion_map:
            raise ValueError(f"{self.name} has no lesion map; its methods: {', '.join(self.methods)}")
        if self.needs_keras(method):
            if method not in self.methods:
                raise ValueError(f"{CAM_METHODS[method]} needs TensorFlow (tf-keras-vis), which is not "
                                 f"installed here; methods: {', '.join(self.methods)}")
            return self._keras_explainer().explain(images, method)
        size = (self.input_size, self.input_size)
        if method == LESION_MAP:
            probs, maps, _ = self.explain_lesions(images)
            return probs, maps
        out = self.graph.run(images, [PROBABILITY, FEATURES, GRADCAM_WEIGHTS])
        cams = gradcam_maps(out[FEATURES], out[GRADCAM_WEIGHTS])
        return out[PROBABILITY], np.stack([normalize_heatmap(resize_heatmap(c, size)) for c in cams])

    def explain_lesions(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Probabilities (n,), lesion maps (n, S, S) and the box head's codes (n, m, m, 4) (None without
        one), from one pass, as `CamExplainer.explain_lesions` gives them."""
        if not self.has_lesion_map:
            raise ValueError(f"{self.name} has no lesion map; its methods: {', '.join(self.methods)}")
        names = [PROBABILITY, LESION_OUTPUT] + ([BOX_OUTPUT] if self.has_boxes else [])
        out = self.graph.run(images, names)
        size = (self.input_size, self.input_size)
        return (out[PROBABILITY], np.stack([resize_heatmap(m, size) for m in out[LESION_OUTPUT]]),
                out.get(BOX_OUTPUT))
