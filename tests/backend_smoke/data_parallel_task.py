"""One `train.train` run in a process of its own, for the data-parallel test (the devices are set by XLA_FLAGS
before JAX starts): python tests/backend_smoke/data_parallel_task.py DATA SPLIT_FILE OUT"""

from __future__ import annotations

import dataclasses
import json
import sys

import keras

from train import train as train_module
from train.config import DataSource, load_config


def main(data: str, split_file: str, out: str) -> None:
    config = load_config(None, ["name=data_parallel", "model=mobilenetv2", "weights=null", "input_size=32",
                                "batch_size=3", "epochs=1", "dense_units=8",
                                "train_split=train", "val_split=val", f"out_dir={out}", "input_workers=1"])
    config = dataclasses.replace(config, data=(DataSource(data, "fracatlas", split_file),))
    seen = {}

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            distribution = keras.distribution.distribution()
            seen["devices"] = len(distribution.device_mesh.devices.ravel()) if distribution else 1

    result = train_module.run(config, extra_callbacks=[Record()])
    print(json.dumps({"devices": seen.get("devices"), "epochs_run": result["epochs_run"]}))


if __name__ == "__main__":
    main(*sys.argv[1:])
