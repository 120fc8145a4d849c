"""Reading a PyTorch checkpoint as numpy arrays, without PyTorch and without running foreign code.

A `.pth` file in PyTorch's legacy (pre-zip) serialisation is a sequence of pickles: a magic number,
the protocol version, system information, the state dict (tensors appear as persistent ids that name
a storage, rebuilt by `torch._utils._rebuild_tensor_v2`), the list of storage keys; then each storage's
raw little-endian bytes, preceded by its element count as an int64. A pickle can name any global and so
run any code: `read_state_dict` unpickles with an allow-list (an ordered dict, the tensor rebuild and
the storage types, each mapped to a function of ours) and refuses every other global before it is
looked up. Nothing from the file is imported or called.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
from dataclasses import dataclass

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# PyTorch storage types -> numpy dtypes (little-endian, as written on every platform torch supports).
STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint's pickle asks for a global outside the allow-list; nothing was run."""


class CheckpointFormatError(ValueError):
    """The file is not a PyTorch legacy checkpoint, or its storages do not match its tensors."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


@dataclass(frozen=True)
class _TensorRef:
    """A tensor waiting for its storage's bytes: (key, offset, shape, strides in elements)."""

    key: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    """Our stand-in for `torch._utils._rebuild_tensor_v2`: records where the tensor's numbers are."""
    if not isinstance(storage, str):
        raise CheckpointFormatError("a tensor is rebuilt from something that is not a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data, an OrderedDict and tensors; every other global is refused unlooked-up."""

    def __init__(self, file, path: str, storages: dict | None = None):
        super().__init__(file)
        self._path = path
        self._storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if self._storages is not None:
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return _rebuild_tensor_v2
            if module == "torch" and name in STORAGE_DTYPES:
                return _StorageType(name)
        raise UnsafeCheckpointError(
            f"{self._path}: the checkpoint asks for {module}.{name}, which a weights file never needs; "
            "refused without running it")

    def persistent_load(self, pid):
        if self._storages is None or not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointFormatError(f"{self._path}: unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError(f"{self._path}: storage {key!r} has no known type")
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointFormatError(f"{self._path}: storage views are not supported")
        previous = self._storages.setdefault(str(key), (storage_type, int(numel)))
        if previous != (storage_type, int(numel)):
            raise CheckpointFormatError(f"{self._path}: storage {key!r} is declared twice, differently")
        return str(key)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch legacy `.pth` file, by name, as numpy arrays (copies, C-ordered).

    Args:
        path: the checkpoint file.

    Returns:
        An ordered dict name -> array, in the file's order.

    Raises:
        UnsafeCheckpointError: a pickle names a global outside the allow-list (nothing is run).
        CheckpointFormatError: not a legacy checkpoint, a zip-format one, or storages that do not add up.
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        data = file.read()
    if data[:2] == b"PK":
        raise CheckpointFormatError(f"{path}: a zip-format PyTorch checkpoint; only the legacy format is read")
    stream = io.BytesIO(data)

    def plain_pickle():
        try:
            return _RestrictedUnpickler(stream, path).load()
        except (EOFError, pickle.UnpicklingError, struct.error, ValueError) as error:
            if isinstance(error, UnsafeCheckpointError):
                raise
            raise CheckpointFormatError(f"{path}: not a PyTorch legacy checkpoint ({error})") from None

    if plain_pickle() != MAGIC_NUMBER:
        raise CheckpointFormatError(f"{path}: not a PyTorch legacy checkpoint (wrong magic number)")
    if plain_pickle() != PROTOCOL_VERSION:
        raise CheckpointFormatError(f"{path}: unsupported PyTorch protocol version")
    system = plain_pickle()
    if isinstance(system, dict) and not system.get("little_endian", True):
        raise CheckpointFormatError(f"{path}: written on a big-endian machine")
    storages: dict[str, tuple[_StorageType, int]] = {}
    try:
        state = _RestrictedUnpickler(stream, path, storages).load()
    except (EOFError, struct.error) as error:
        raise CheckpointFormatError(f"{path}: truncated state dict ({error})") from None
    if not isinstance(state, dict):
        raise CheckpointFormatError(f"{path}: the checkpoint holds {type(state).__name__}, not a state dict")
    keys = plain_pickle()
    buffers = {}
    for key in keys:
        if key not in storages:
            raise CheckpointFormatError(f"{path}: storage {key!r} is listed but no tensor uses it")
        storage_type, numel = storages[key]
        header = stream.read(8)
        if len(header) < 8:
            raise CheckpointFormatError(f"{path}: truncated before storage {key!r}")
        (count,) = struct.unpack("<q", header)
        if count != numel:
            raise CheckpointFormatError(f"{path}: storage {key!r} holds {count} numbers, {numel} declared")
        raw = stream.read(count * storage_type.dtype.itemsize)
        if len(raw) < count * storage_type.dtype.itemsize:
            raise CheckpointFormatError(f"{path}: storage {key!r} is truncated")
        buffers[key] = np.frombuffer(raw, storage_type.dtype)
    tensors: dict[str, np.ndarray] = collections.OrderedDict()
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            continue  # e.g. a scalar entry; weights are tensors
        if ref.key not in buffers:
            raise CheckpointFormatError(f"{path}: tensor {name!r} refers to missing storage {ref.key!r}")
        buffer = buffers[ref.key]
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride))  # the highest element read
        if ref.offset < 0 or (all(ref.shape) and last >= buffer.size):
            raise CheckpointFormatError(f"{path}: tensor {name!r} reaches outside its storage")
        item = buffer.itemsize
        view = np.lib.stride_tricks.as_strided(buffer[ref.offset:], ref.shape, [s * item for s in ref.stride],
                                               writeable=False)
        tensors[str(name)] = np.array(view, dtype=buffer.dtype.newbyteorder("="), order="C")  # one native copy
    return tensors
