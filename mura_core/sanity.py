"""Sanity checks for explanations: the cascading model-randomization test.

Adebayo et al., "Sanity Checks for Saliency Maps" (NeurIPS 2018): re-initialise a model's weights
from the top down (the head, then more and more of the backbone's top layers) and measure how far
its heatmaps move from the trained model's, as the Spearman rank correlation per image. A heatmap
that barely changes when the weights that made the decision are random shows edges, not the model's
reasons. `train.evaluate` writes the result into the report; the Evaluation page shows it.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from scipy.stats import spearmanr

from .gradcam import CamExplainer

DEFAULT_FRACTIONS = (0.1, 0.25, 0.5)
"""Cumulative shares of the backbone's weighted layers re-initialised after the head, top first."""


def randomization_stages(model: keras.Model, layer_name: str,
                         fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[tuple[str, list[str]]]:
    """The cascade of layers to re-initialise: the head, then the top `fractions` of the backbone.

    Args:
        model: a flat model from `create_model`.
        layer_name: the heatmap's layer (the spec's `gradcam_layer`); layers after it are the head.
        fractions: cumulative shares of the backbone's weighted layers (up to `layer_name`).

    Returns:
        (stage name, names of the weighted layers re-initialised so far) per stage, cumulative.
    """
    names = [layer.name for layer in model.layers]
    cut = names.index(layer_name)
    weighted = [layer.name for layer in model.layers if layer.weights]
    head = [n for n in weighted if names.index(n) > cut]
    backbone = [n for n in weighted if names.index(n) <= cut]
    stages = [("head", head)]
    for fraction in fractions:
        count = max(1, round(fraction * len(backbone)))
        stages.append((f"head + top {fraction:.0%} of the backbone ({count} layers)", head + backbone[-count:]))
    return stages


def _initializer(layer: keras.layers.Layer, variable) -> keras.initializers.Initializer:
    name = variable.name.split("/")[-1]
    if isinstance(layer, keras.layers.DepthwiseConv2D) and name == "kernel":
        found = getattr(layer, "depthwise_initializer", None)
    else:
        found = getattr(layer, f"{name}_initializer", None)
    if found is None:
        found = "glorot_uniform" if len(variable.shape) >= 2 else "zeros"
    config = keras.initializers.serialize(keras.initializers.get(found))
    return keras.initializers.deserialize(config)  # a fresh instance: new random values


def randomized_copy(model: keras.Model, layer_names: Sequence[str], seed: int = 0) -> keras.Model:
    """A copy of `model` whose `layer_names` are re-initialised with their own initializers.

    Args:
        model: the trained model (left unchanged).
        layer_names: weighted layers to re-initialise.
        seed: random seed for the new weights.
    """
    keras.utils.set_random_seed(seed)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for name in layer_names:
        layer = copy.get_layer(name)
        for variable in layer.weights:
            variable.assign(_initializer(layer, variable)(variable.shape, dtype=variable.dtype))
    return copy


def rank_correlations(reference: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Spearman rank correlation per image of two stacks of maps (n, h, w); NaN where a map is constant."""
    out = np.full(len(reference), np.nan)
    for i, (a, b) in enumerate(zip(reference, maps)):
        a, b = np.ravel(a), np.ravel(b)
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            out[i] = spearmanr(a, b).statistic
    return out


def model_randomization(model: keras.Model, layer_name: str, images: np.ndarray, method: str = "gradcam",
                        fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0) -> list[dict]:
    """The cascading randomization test of one model's heatmaps.

    Args:
        model: a trained flat model from `create_model`.
        layer_name: the heatmap's layer (the spec's or manifest's `gradcam_layer`).
        images: (n, S, S, 3) raw images in [0, 255].
        method: the heatmap method (`gradcam.CAM_METHODS`).
        fractions: see `randomization_stages`.
        seed: random seed of the re-initialisation.

    Returns:
        One dict per stage: "stage", "layers" (how many re-initialised), "spearman" (mean over the
        images), "spearman_abs" (mean of its absolute value) and "undefined" (images whose map
        became constant, left out of the means). JSON-ready.
    """
    _, trained = CamExplainer(model, layer_name).explain(images, method)
    rows = []
    for stage, names in randomization_stages(model, layer_name, fractions):
        _, maps = CamExplainer(randomized_copy(model, names, seed), layer_name).explain(images, method)
        rho = rank_correlations(trained, maps)
        defined = rho[~np.isnan(rho)]
        rows.append({"stage": stage, "layers": len(names),
                     "spearman": float(defined.mean()) if defined.size else None,
                     "spearman_abs": float(np.abs(defined).mean()) if defined.size else None,
                     "undefined": int(np.isnan(rho).sum())})
    return rows
