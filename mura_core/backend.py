"""The Keras backend this process runs on (TensorFlow, JAX or PyTorch): its devices, versions and policies.

Keras 3 runs the same models on TensorFlow, JAX and PyTorch; `KERAS_BACKEND` chooses one before
Keras is imported (TensorFlow by default). Everything that depends on the backend asks here, and
nothing here imports TensorFlow, JAX or PyTorch before the backend in use is known:

- `name()` / `is_tensorflow()`: which one runs (the training input uses `tf.data` on TensorFlow only);
- `gpus()`, `versions()`: the accelerators it sees and what is installed (the device check's report);
- `mixed_precision_policy()`: the training policy on a GPU (float16 with loss scaling on TensorFlow, as
  before; bfloat16 on JAX and PyTorch, which needs no loss scaling);
- `hide_gpus()`: CPU only (the device check's `--smoke`);
- `data_parallel()`: several devices (and processes) on JAX through `keras.distribution.DataParallel`.
"""

from __future__ import annotations

import logging
import os
import platform

import keras

log = logging.getLogger(__name__)

TENSORFLOW, JAX, TORCH = "tensorflow", "jax", "torch"


def name() -> str:
    """The Keras backend in use: "tensorflow", "jax" or "torch"."""
    return keras.backend.backend()


def is_tensorflow() -> bool:
    """Whether Keras runs on TensorFlow (then `tf.data`, tf-keras-vis and TensorFlow's strategies are used)."""
    return name() == TENSORFLOW


def gpus() -> list[str]:
    """Names of the GPUs the backend sees (empty on CPU)."""
    backend = name()
    if backend == TENSORFLOW:
        import tensorflow as tf

        found = tf.config.list_physical_devices("GPU")
        return [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in found]
    if backend == JAX:
        import jax

        return [getattr(d, "device_kind", str(d)) for d in jax.devices() if d.platform == "gpu"]
    if backend == TORCH:
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def versions() -> dict:
    """The backend, its version(s), Keras' and Python's: what a report should record."""
    backend = name()
    found = {"backend": backend, "keras": keras.__version__, "python": platform.python_version()}
    if backend == TENSORFLOW:
        import tensorflow as tf

        found["tensorflow"] = tf.__version__
    elif backend == JAX:
        import jax
        import jaxlib

        found.update(jax=jax.__version__, jaxlib=jaxlib.__version__)
    elif backend == TORCH:
        import torch

        found.update(torch=torch.__version__, cuda=torch.version.cuda)
    return found


def mixed_precision_policy(setting: str = "auto") -> str:
    """The Keras dtype policy for training: `setting` "on", "off" or "auto" (on when a GPU is present).

    On TensorFlow mixed precision is float16 (as this project always trained); on JAX and PyTorch it is
    bfloat16, which current GPUs run as fast and which needs no loss scaling.
    """
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"mixed_precision: expected auto, on or off, got {setting!r}")
    if setting == "off" or (setting == "auto" and not gpus()):
        return "float32"
    return "mixed_float16" if is_tensorflow() else "mixed_bfloat16"


def hide_gpus() -> None:
    """Run on the CPU only. Call it before the backend first touches a device."""
    backend = name()
    if backend == TENSORFLOW:
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")
    elif backend == JAX:
        import jax

        jax.config.update("jax_platforms", "cpu")
    elif backend == TORCH:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def data_parallel() -> keras.distribution.Distribution | None:
    """Data parallelism on JAX: the batch split over every device, and over processes on several machines.

    Several processes (one per machine) join when `KERAS_DISTRIBUTION_JOB_ADDRESSES` (the coordinator's
    "host:port" first, comma-separated), `KERAS_DISTRIBUTION_NUM_PROCESSES` and `KERAS_DISTRIBUTION_PROCESS_ID`
    are set: `keras.distribution.initialize()` reads them. Each process then reads its own share of the
    data (`process()`), so the distribution does not shard the input itself.

    Returns:
        The distribution, already set for Keras, or None (one device, or a backend other than JAX:
        TensorFlow keeps its `tf.distribute` strategies, PyTorch trains on one device here).
    """
    if name() != JAX:
        return None
    if os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES"):
        keras.distribution.initialize()
    devices = keras.distribution.list_devices()
    if len(devices) < 2:
        return None
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    log.info("data parallel over %d devices (%d processes)", len(devices), process()[1])
    return distribution


def process() -> tuple[int, int]:
    """(this process's index, the number of processes) of a multi-process JAX run; (0, 1) otherwise."""
    if name() != JAX:
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()
