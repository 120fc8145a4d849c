"""Class activation maps: a compiled one-pass Grad-CAM, tf-keras-vis alternatives, pure map helpers.

`CamExplainer` is built once per model and reused: its Grad-CAM returns the model's probabilities
and the heatmaps from one forward pass (the gradient only flows from the output back to the last
convolutional block, through the head), traced once for any batch size. It computes what
`tf_keras_vis.gradcam.Gradcam` computes (the tests check that they agree); Grad-CAM++, LayerCAM and
Score-CAM go through tf-keras-vis visualizers made once per model (no clone per call).

Heatmaps are float32 arrays in [0, 1]; resizing, fusing and drawing them are pure functions in
`heatmaps` (no TensorFlow), re-exported here.
"""

from __future__ import annotations

import threading

import keras
import numpy as np
import tensorflow as tf

from .heatmaps import fuse_heatmaps, normalize_heatmap, overlay, resize_heatmap  # noqa: F401  (re-exported)
from .vocabulary import CAM_METHODS, LESION_MAP  # noqa: F401  (re-exported)


def _score(output):
    """The score every CAM explains: the probability of 'abnormal'."""
    return output[:, 0]


class CamExplainer:
    """Predictions and CAMs for one model, with everything compiled or built once.

    Args:
        model: a flat functional model from `create_model` (one sigmoid output).
        layer_name: the convolutional layer to read (the spec's `gradcam_layer`).
        jit_compile: compile the Grad-CAM function with XLA.
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
        spec = tf.TensorSpec([None, self.input_size, self.input_size, 3], tf.float32)
        self._predict_fn = tf.function(self._predict, input_signature=[spec], jit_compile=jit_compile)
        self._gradcam_fn = tf.function(self._gradcam, input_signature=[spec], jit_compile=jit_compile)
        if self.has_lesion_map:
            self._map_model = keras.Model(model.inputs, [probability, model.get_layer(LESION_MAP).output])
            self._map_fn = tf.function(self._lesion_map, input_signature=[spec], jit_compile=jit_compile)
        self._visualizers: dict[str, object] = {}
        self._lock = threading.Lock()

    @property
    def methods(self) -> list[str]:
        """The heatmap methods this model offers (`CAM_METHODS`; the lesion map only if it has one)."""
        return [m for m in CAM_METHODS if m != LESION_MAP or self.has_lesion_map]

    def _predict(self, images):
        return self._classifier(images, training=False)[:, 0]

    def _lesion_map(self, images):
        probs, maps = self._map_model(images, training=False)
        return probs[:, 0], maps[..., 0]

    def _gradcam(self, images):
        with tf.GradientTape() as tape:
            features, probs = self._cam_model(images, training=False)
            score = _score(probs)
        grads = tape.gradient(score, features)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(features * weights, axis=-1))
        return score, cams

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (n,) for a batch of raw images (n, S, S, 3) in [0, 255]."""
        return self._predict_fn(tf.convert_to_tensor(images, tf.float32)).numpy()

    def explain(self, images: np.ndarray, method: str = "gradcam") -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (n,) and heatmaps (n, S, S) in [0, 1] for a batch of raw images.

        Args:
            images: (n, S, S, 3) raw pixel values in [0, 255].
            method: one of `CAM_METHODS`.
        """
        batch = tf.convert_to_tensor(images, tf.float32)
        size = (self.input_size, self.input_size)
        if method == LESION_MAP:
            if not self.has_lesion_map:
                raise ValueError(f"{self.model.name} has no lesion map; its methods: {', '.join(self.methods)}")
            probs, maps = self._map_fn(batch)  # probabilities of a lesion per cell: not rescaled
            return probs.numpy(), np.stack([resize_heatmap(m, size) for m in maps.numpy()])
        if method == "gradcam":
            probs, cams = self._gradcam_fn(batch)
            cams = cams.numpy()
        else:
            probs = self._predict_fn(batch)
            cams = self._visualizer(method)(_score, batch, penultimate_layer=self.layer_name,
                                            seek_penultimate_conv_layer=False,
                                            expand_cam=False, normalize_cam=False)
            cams = np.asarray(cams)
        maps = np.stack([normalize_heatmap(resize_heatmap(cam, size)) for cam in cams])
        return probs.numpy(), maps

    def _visualizer(self, method: str):
        with self._lock:
            if method not in self._visualizers:
                self._visualizers[method] = _make_visualizer(method, self._classifier)
            return self._visualizers[method]


def _make_visualizer(method: str, model: keras.Model):
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.scorecam import Scorecam

    classes = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus, "layercam": Layercam, "scorecam": Scorecam}
    if method not in classes:
        raise ValueError(f"Unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}")
    return classes[method](model, clone=False)
