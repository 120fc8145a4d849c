"""Training on several machines (MultiWorkerMirroredStrategy with TF_CONFIG): who writes, and the Keras fixes.

Every worker runs the same `train.train` command. Only the chief (the task of type "chief", or
worker 0 when the cluster has none) writes the run folder; the others write their checkpoints,
backup and log to a scratch folder of their own, removed when their training ends (the pattern of
TensorFlow's "Multi-worker training with Keras" tutorial).

Keras 3's `Model.fit` does not run under MultiWorkerMirroredStrategy as released (keras-team/keras#20585,
tensorflow/tensorflow#72388): it reduces the first data batch across workers to build the model's
state, and it reduces scalar logs with `axis=0`. `prepare_fit` works around both; the two-worker
test (`tests/test_multi_worker.py`) checks that the workers end with identical weights. BatchNormalization's
moving statistics are not synchronized by the strategy; `AverageBatchNormStatistics` averages them
across workers after every epoch.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer as tf_trainer


def worker_role(strategy: tf.distribute.Strategy) -> tuple[bool, str]:
    """Whether this process is the chief, and a short name for it ("chief", "worker1", ...).

    Args:
        strategy: the training strategy; without a cluster (one machine) the process is the chief.

    Returns:
        (is_chief, role name).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if resolver is None or not task_type:
        return True, "chief"
    task_id = int(resolver.task_id or 0)
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return chief, "chief" if chief else f"{task_type}{task_id}"


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` trains across machines (MultiWorkerMirroredStrategy)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _reduce_per_replica(values, strategy, reduction):
    """Keras' reduction of step outputs, with the mean of scalar logs across workers taken over replicas
    (`axis=None`) where Keras asks for `axis=0`, which fails on scalars."""
    if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
        return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
    return _keras_reduce_per_replica(values, strategy, reduction)


_keras_reduce_per_replica = tf_trainer.reduce_per_replica


class AverageBatchNormStatistics(keras.callbacks.Callback):
    """Averages every BatchNormalization layer's moving mean and variance across workers after each epoch.

    Under a multi-worker strategy the gradients, hence the trainable weights, are synchronized, but the
    moving statistics are updated by each worker from its own shard of the data. Averaging them before
    the checkpoints are written gives every worker (and the chief's saved model) the same statistics,
    estimated from all the data. It must come before ModelCheckpoint and BackupAndRestore.

    Args:
        strategy: the training strategy; every worker runs this callback (it is a collective step).
    """

    def __init__(self, strategy: tf.distribute.Strategy):
        super().__init__()
        self.strategy = strategy

    def on_epoch_end(self, epoch, logs=None):
        variables = [v for layer in self.model.layers if isinstance(layer, keras.layers.BatchNormalization)
                     for v in (layer.moving_mean, layer.moving_variance)]
        if not variables:
            return
        flat = self.strategy.run(lambda: tf.concat([tf.reshape(tf.cast(v.value, tf.float32), [-1])
                                                    for v in variables], axis=0))
        mean = self.strategy.reduce("MEAN", flat, axis=None)
        start = 0
        for v in variables:
            size = int(np.prod(v.shape))
            v.assign(tf.cast(tf.reshape(mean[start:start + size], v.shape), v.dtype))
            start += size


def prepare_fit(model: keras.Model, strategy: tf.distribute.Strategy, size: int) -> None:
    """Make `model.fit` work under MultiWorkerMirroredStrategy (a no-op under any other strategy).

    Builds the compiled metrics, loss and optimizer from the input's shape in the strategy's scope
    (instead of from a first batch reduced across workers, which Keras 3 gets wrong), skips that
    first-batch step for this model, and fixes the reduction of scalar logs across workers.

    Args:
        model: a compiled model created in `strategy.scope()`.
        strategy: the training strategy.
        size: the square input side.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    image = tf.TensorSpec((None, size, size, 3), tf.float32)
    label = tf.TensorSpec((None,), tf.float32)
    with strategy.scope():
        model._symbolic_build(data_batch=(image, label))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    tf_trainer.reduce_per_replica = _reduce_per_replica
