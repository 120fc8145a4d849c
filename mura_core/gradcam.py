"""Class activation maps: a compiled one-pass Grad-CAM, tf-keras-vis alternatives, pure map helpers.

`CamExplainer` is built once per model and reused: its Grad-CAM returns the model's probabilities
and the heatmaps from one forward pass (the gradient only flows from the output back to the last
convolutional block, through the head), traced once for any batch size. It computes what
`tf_keras_vis.gradcam.Gradcam` computes (the tests check that they agree); Grad-CAM++, LayerCAM and
Score-CAM go through tf-keras-vis visualizers made once per model (no clone per call).
Prediction, Grad-CAM and lesion maps run on any Keras backend (`cam_backends`); the tf-keras-vis
methods on TensorFlow only.

Heatmaps are float32 arrays in [0, 1]; resizing, fusing and drawing them are pure functions in
`heatmaps` (no TensorFlow), re-exported here.
"""

from __future__ import annotations

import threading

import keras
import numpy as np

from . import cam_backends
from .heatmaps import fuse_heatmaps, normalize_heatmap, overlay, resize_heatmap  # noqa: F401  (re-exported)
from .vocabulary import CAM_METHODS, LESION_BOX, LESION_MAP  # noqa: F401  (re-exported)


def _score(output):
    """The score every CAM explains: the probability of 'abnormal'."""
    return output[:, 0]


class CamExplainer:
    """Predictions and CAMs for one model, with everything compiled or built once.

    Args:
        model: a flat functional model from `create_model` (one sigmoid output).
        layer_name: the convolutional layer to read (the spec's `gradcam_layer`).
        jit_compile: compile the Grad-CAM function with XLA (TensorFlow; JAX always compiles).
    """

    def __init__(self, model: keras.Model, layer_name: str, jit_compile: bool = False):
        self.model = model
        self.layer_name = layer_name
        self.input_size = int(model.input_shape[1])
        layer_output = model.get_layer(layer_name).output
        probability = model.get_layer("probability").output
        # The probability alone: the model itself, or its classifier branch when it also has a lesion map.
        self._classifier = model if len(model.outputs) == 1 else keras.Model(model.inputs, probability)
        self._cam_model = keras.Model(model.inputs, [layer_output, probability])
        self.has_lesion_map = any(layer.name == LESION_MAP for layer in model.layers)
        self.has_boxes = any(layer.name == LESION_BOX for layer in model.layers)
        map_model = None
        if self.has_lesion_map:  # probability, lesion map and any box head, from one pass
            map_model = keras.Model(model.inputs, [probability, model.get_layer(LESION_MAP).output]
                                    + ([model.get_layer(LESION_BOX).output] if self.has_boxes else []))
        functions = cam_backends.ModelFunctions(self._classifier, self._cam_model, map_model, self.input_size,
                                                jit_compile)
        self._predict_fn, self._gradcam_fn, self._map_fn = functions.predict, functions.gradcam, functions.lesion_map
        self._visualizers: dict[str, object] = {}
        self._lock = threading.Lock()

    @property
    def methods(self) -> list[str]:
        """The heatmap methods this model offers on this backend (`cam_backends.methods`; the lesion map
        only if it has one)."""
        return [m for m in cam_backends.methods() if m != LESION_MAP or self.has_lesion_map]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (n,) for a batch of raw images (n, S, S, 3) in [0, 255]."""
        return cam_backends.to_numpy(self._predict_fn(_tensor(images)))

    def explain(self, images: np.ndarray, method: str = "gradcam") -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (n,) and heatmaps (n, S, S) in [0, 1] for a batch of raw images.

        Args:
            images: (n, S, S, 3) raw pixel values in [0, 255].
            method: one of `CAM_METHODS`.
        """
        batch = _tensor(images)
        size = (self.input_size, self.input_size)
        if method not in CAM_METHODS:
            raise ValueError(f"Unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}")
        if method not in self.methods:
            if method == LESION_MAP:
                raise ValueError(f"{self.model.name} has no lesion map; its methods: {', '.join(self.methods)}")
            raise ValueError(f"{CAM_METHODS[method]} needs TensorFlow (tf-keras-vis); on the "
                             f"{keras.backend.backend()} backend: {', '.join(self.methods)}")
        if method == LESION_MAP:
            probs, maps, _ = self.explain_lesions(images)
            return probs, maps
        if method == "gradcam":
            probs, cams = self._gradcam_fn(batch)
            cams = cam_backends.to_numpy(cams)
        else:
            probs = self._predict_fn(batch)
            cams = self._visualizer(method)(_score, batch, penultimate_layer=self.layer_name,
                                            seek_penultimate_conv_layer=False,
                                            expand_cam=False, normalize_cam=False)
            cams = np.asarray(cams)
        maps = np.stack([normalize_heatmap(resize_heatmap(cam, size)) for cam in cams])
        return cam_backends.to_numpy(probs), maps

    def explain_lesions(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Probabilities (n,), lesion maps (n, S, S) (probabilities of a lesion per cell, not rescaled) and
        the box head's codes (n, m, m, 4) (`regions.BOX_CHANNELS`; None without a box head), from one pass."""
        if not self.has_lesion_map:
            raise ValueError(f"{self.model.name} has no lesion map; its methods: {', '.join(self.methods)}")
        probs, maps, *boxes = self._map_fn(_tensor(images))
        size = (self.input_size, self.input_size)
        maps = np.stack([resize_heatmap(m, size) for m in cam_backends.to_numpy(maps)])
        return cam_backends.to_numpy(probs), maps, (cam_backends.to_numpy(boxes[0]) if boxes else None)

    def _visualizer(self, method: str):
        with self._lock:
            if method not in self._visualizers:
                self._visualizers[method] = _make_visualizer(method, self._classifier)
            return self._visualizers[method]


def _tensor(images: np.ndarray):
    """Raw images as a float32 tensor of the backend, on its default device."""
    return keras.ops.convert_to_tensor(np.asarray(images, np.float32))


def _make_visualizer(method: str, model: keras.Model):
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.scorecam import Scorecam

    classes = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus, "layercam": Layercam, "scorecam": Scorecam}
    if method not in classes:
        raise ValueError(f"Unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}")
    return classes[method](model, clone=False)
