"""One worker of the two-worker test: `python -m tests.multi_worker_task WEIGHTS_OUT key=value ...`.

TF_CONFIG comes from the environment. Trains with `train.train.run` under MultiWorkerMirroredStrategy
and saves this worker's weights (before and after training) to WEIGHTS_OUT (a .npz outside the run
folder) so the test can compare the workers.
"""

from __future__ import annotations

import json
import sys

import keras
import numpy as np
import tensorflow as tf

from train import train as train_module
from train.config import load_config


class SaveFinalWeights(keras.callbacks.Callback):
    """Writes the model's weights before and after training (in order) and its strategy's kind to a .npz."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.initial: list[np.ndarray] = []

    def on_train_begin(self, logs=None):
        self.initial = [np.asarray(w) for w in self.model.get_weights()]

    def on_train_end(self, logs=None):
        final = [np.asarray(w) for w in self.model.get_weights()]
        strategy = self.model.distribute_strategy
        np.savez(self.path, multi_worker=isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
                 replicas=strategy.num_replicas_in_sync,
                 **{f"initial_{i}": w for i, w in enumerate(self.initial)},
                 **{f"final_{i}": w for i, w in enumerate(final)})


def main(argv: list[str]) -> int:
    weights_out, overrides = argv[0], argv[1:]
    result = train_module.run(load_config(None, overrides), extra_callbacks=[SaveFinalWeights(weights_out)])
    print("RESULT " + json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
