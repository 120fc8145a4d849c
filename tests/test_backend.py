"""The backend module on the default backend (TensorFlow); tests/backend_smoke runs JAX without TensorFlow."""

from __future__ import annotations

import pytest

from mura_core import backend, cam_backends
from mura_core.vocabulary import CAM_METHODS


def test_default_backend_is_tensorflow_with_its_versions_and_policies():
    assert backend.name() == "tensorflow" and backend.is_tensorflow()
    found = backend.versions()
    assert found["backend"] == "tensorflow" and found["tensorflow"] and found["keras"]
    assert backend.mixed_precision_policy("off") == "float32"
    assert backend.mixed_precision_policy("on") == "mixed_float16"  # TensorFlow keeps float16 with loss scaling
    assert backend.mixed_precision_policy("auto") == ("mixed_float16" if backend.gpus() else "float32")
    with pytest.raises(ValueError, match="auto, on or off"):
        backend.mixed_precision_policy("bf16")
    assert backend.data_parallel() is None and backend.process() == (0, 1)


def test_tensorflow_offers_every_heatmap_method():
    assert cam_backends.methods() == list(CAM_METHODS)
    assert set(cam_backends.GRADIENT_METHODS_ANY_BACKEND) <= set(CAM_METHODS)
