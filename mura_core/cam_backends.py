"""Compiled forward passes and the Grad-CAM gradient on each Keras backend.

`gradcam.CamExplainer` asks here for three functions of a batch of raw images, each compiled once:
the probability, the probability with the Grad-CAM map, and the probability with the lesion map.

- TensorFlow: `tf.function` (XLA with `jit_compile`), traced once for any batch size, and
  `tf.GradientTape` for the gradient of the score with respect to the CAM layer's output.
- JAX: `jax.jit` of the models' `stateless_call` (XLA always; the weights are passed in, read at
  each call), and `jax.grad` of the score with respect to the CAM layer's output, through the head
  (a sub-model from that layer to the probability).
- PyTorch: the models called under `torch.no_grad`, and `torch.autograd.grad` through the head.

Grad-CAM and the lesion map run on every backend. Grad-CAM++, LayerCAM and Score-CAM come from
tf-keras-vis, so they are offered on TensorFlow only (`methods`).
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np

from . import backend
from .vocabulary import CAM_METHODS, LESION_MAP

GRADIENT_METHODS_ANY_BACKEND = ("gradcam", LESION_MAP)
"""Heatmap methods this project computes itself, on any backend (the others are tf-keras-vis')."""


def methods() -> list[str]:
    """The heatmap methods the running backend offers (`CAM_METHODS` on TensorFlow)."""
    if backend.is_tensorflow():
        return list(CAM_METHODS)
    return [m for m in CAM_METHODS if m in GRADIENT_METHODS_ANY_BACKEND]


def _score(probabilities):
    """The score every CAM explains: the probability of 'abnormal'."""
    return probabilities[:, 0]


class ModelFunctions:
    """The compiled functions of one model: backend tensors (n, S, S, 3) in, backend tensors out.

    Args:
        classifier: the model's probability alone (the model itself, or its classifier branch).
        cam_model: inputs -> [CAM layer output, probability], or None (no Grad-CAM).
        map_model: inputs -> [probability, lesion map], or None.
        size: the square input side.
        jit_compile: XLA on TensorFlow (JAX always compiles; PyTorch runs eagerly).
    """

    def __init__(self, classifier: keras.Model, cam_model: keras.Model | None, map_model: keras.Model | None,
                 size: int, jit_compile: bool = False):
        builder = {backend.TENSORFLOW: _tensorflow, backend.JAX: _jax, backend.TORCH: _torch}[backend.name()]
        self.predict, self.gradcam, self.lesion_map = builder(classifier, cam_model, map_model, size, jit_compile)


def _head(cam_model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(inputs -> CAM layer output, CAM layer output -> probability): the gradient runs through the second."""
    features, probability = cam_model.outputs
    return keras.Model(cam_model.inputs, features), keras.Model(features, probability)


def _tensorflow(classifier, cam_model, map_model, size, jit_compile):
    import tensorflow as tf

    spec = tf.TensorSpec([None, size, size, 3], tf.float32)

    def predict(images):
        return _score(classifier(images, training=False))

    def gradcam(images):
        with tf.GradientTape() as tape:
            features, probs = cam_model(images, training=False)
            score = _score(probs)
        grads = tape.gradient(score, features)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        return score, tf.nn.relu(tf.reduce_sum(features * weights, axis=-1))

    def lesion_map(images):
        probs, maps, *boxes = map_model(images, training=False)
        return (_score(probs), maps[..., 0], *boxes)

    def compiled(fn):
        return tf.function(fn, input_signature=[spec], jit_compile=jit_compile)

    return (compiled(predict), compiled(gradcam) if cam_model is not None else None,
            compiled(lesion_map) if map_model is not None else None)


def _state(model: keras.Model) -> tuple[list, list]:
    return [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables]


def _jax(classifier, cam_model, map_model, size, jit_compile):
    import jax
    import jax.numpy as jnp

    features_model, head = _head(cam_model) if cam_model is not None else (None, None)

    @jax.jit
    def predict_state(state, images):
        probs, _ = classifier.stateless_call(*state, images, training=False)
        return _score(probs)

    @jax.jit
    def gradcam_state(feature_state, head_state, images):
        features, _ = features_model.stateless_call(*feature_state, images, training=False)

        def score(f):
            probs, _ = head.stateless_call(*head_state, f, training=False)
            return jnp.sum(_score(probs)), _score(probs)

        grads, probs = jax.grad(score, has_aux=True)(features)
        weights = jnp.mean(grads, axis=(1, 2), keepdims=True)
        return probs, jax.nn.relu(jnp.sum(features * weights, axis=-1))

    @jax.jit
    def map_state(state, images):
        (probs, maps, *boxes), _ = map_model.stateless_call(*state, images, training=False)
        return (_score(probs), maps[..., 0], *boxes)

    def predict(images):
        return predict_state(_state(classifier), images)

    def gradcam(images):
        return gradcam_state(_state(features_model), _state(head), images)

    def lesion_map(images):
        return map_state(_state(map_model), images)

    return predict, gradcam if cam_model is not None else None, lesion_map if map_model is not None else None


def _torch(classifier, cam_model, map_model, size, jit_compile):
    import torch

    features_model, head = _head(cam_model) if cam_model is not None else (None, None)

    def predict(images):
        with torch.no_grad():
            return _score(classifier(images, training=False))

    def gradcam(images):
        with torch.no_grad():
            features = features_model(images, training=False)
        features = features.detach().requires_grad_(True)
        with torch.enable_grad():
            probs = _score(head(features, training=False))
            (grads,) = torch.autograd.grad(probs.sum(), features)
        weights = grads.mean(dim=(1, 2), keepdim=True)
        return probs.detach(), torch.relu((features * weights).sum(dim=-1)).detach()

    def lesion_map(images):
        with torch.no_grad():
            probs, maps, *boxes = map_model(images, training=False)
        return (_score(probs), maps[..., 0], *boxes)

    return predict, gradcam if cam_model is not None else None, lesion_map if map_model is not None else None


def forward(model: keras.Model, jit_compile: bool = False) -> Callable:
    """The model's compiled forward pass (probabilities (n,)), for speed measurements: backend tensors in and out."""
    size = int(model.input_shape[1])
    classifier = model if len(model.outputs) == 1 else keras.Model(model.inputs, model.get_layer("probability").output)
    return ModelFunctions(classifier, None, None, size, jit_compile).predict


def to_numpy(value) -> np.ndarray:
    """A backend tensor (or nested ones) as NumPy."""
    return keras.ops.convert_to_numpy(value)
