"""Model registry: flat models, scaling inside the model, named layers, save/load round trip."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mura_core.preprocessing import ImageScaling
from mura_core.registry import create_model, get_spec, list_models


def test_unknown_name_lists_known_models():
    with pytest.raises(KeyError) as err:
        get_spec("vgg16")
    for name in ("densenet169", "resnet101", "mobilenetv2", "efficientnetb0"):
        assert name in str(err.value)


def test_method_specs():
    assert get_spec("densenet169").input_size == 320 and get_spec("densenet169").scaling.name == "torch"
    assert get_spec("resnet101").input_size == 320 and get_spec("resnet101").scaling.name == "caffe"
    assert {"densenet169", "resnet101"} <= set(list_models())


# The keras.applications module whose preprocess_input each family's ImageNet weights expect.
KERAS_MODULE = {"densenet": "densenet", "resnet": "resnet", "mobilenet": "mobilenet_v2",
                "efficientnet": "efficientnet"}
# Families whose weights come from elsewhere: the convention their checkpoint was trained with.
CHECKPOINT_SCALING = {"efficientnet_lite": lambda x: (x - 127.0) / 128.0}


@pytest.mark.parametrize("name", list_models())
def test_flat_model_with_named_layers(name):
    model = create_model(name, input_size=32, dense_units=8, lesion_map=True, map_stride=4)  # the whole decoder
    assert model.name == name
    assert model.input_shape == (None, 32, 32, 3)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers), "backbone must not be nested"
    spec = get_spec(name)
    for layer in ("scaling", spec.gradcam_layer, spec.map_layer, spec.fine_layer, spec.finer_layer, "head_pool",
                  "head_dense", "probability", "map_reduce", "map_fine", "map_finer", "lesion_map"):
        model.get_layer(layer)
    assert model.get_layer(spec.fine_layer).output.shape[1] == 32 // 8
    assert model.get_layer(spec.finer_layer).output.shape[1] == 32 // 4
    out = model(np.full((2, 32, 32, 3), 128, np.float32), training=False)  # eager: no graph to trace
    probs, lesions = np.asarray(out["probability"]), np.asarray(out["lesion_map"])
    assert probs.shape == (2, 1) and np.all((probs >= 0) & (probs <= 1))
    assert lesions.shape == (2, 8, 8, 1)  # stride 4


def test_keras_round_trip_and_weights_file(tmp_path):
    keras.utils.set_random_seed(1)
    model = create_model("mobilenetv2", input_size=48, dense_units=8)
    x = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3)).astype(np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), loaded.predict(x, verbose=0), atol=1e-6)
    rebuilt = create_model("mobilenetv2", weights=path, input_size=48, dense_units=8)
    np.testing.assert_allclose(model.predict(x, verbose=0), rebuilt.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("name", list_models())
def test_each_spec_scales_as_its_keras_preprocess_input(name):
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    family = get_spec(name).family  # a new family adds its module (or its checkpoint's scaling) above
    if family in CHECKPOINT_SCALING:
        expected = CHECKPOINT_SCALING[family](x)
    else:
        expected = getattr(keras.applications, KERAS_MODULE[family]).preprocess_input(x.copy())
    layer = get_spec(name).scaling.layer()
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("mode,module", [("torch", "densenet"), ("caffe", "resnet"), ("tf", "mobilenet_v2"),
                                         ("raw", "efficientnet")])
def test_legacy_scaling_layer_still_reads_every_mode(mode, module):
    """Models saved before the specs owned their scaling hold `ImageScaling(mode)` layers (the bundled ones do)."""
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    expected = getattr(keras.applications, module).preprocess_input(x.copy())
    np.testing.assert_allclose(ImageScaling(mode)(x), expected, rtol=1e-5, atol=1e-3)
