"""Device check for a GPU: the method's training and inference speed, and correctness on the device.

    python benchmarks/gpu_check.py OUT [--budget-s 420] [--images 256] [--size 320]
    python benchmarks/gpu_check.py OUT --smoke        # the same code on CPU, tiny settings, < 2 minutes
    KERAS_BACKEND=jax python benchmarks/gpu_check.py OUT     # on JAX (or torch), without TensorFlow
    python benchmarks/gpu_check.py OUT --only gradcam_device_vs_cpu,predict_study_explain   # chosen checks

It runs on whichever Keras backend `KERAS_BACKEND` names (TensorFlow by default) and records it with
its versions. On a GPU it trains with mixed precision (float16 on TensorFlow, bfloat16 on JAX and
PyTorch). XLA: TensorFlow is timed without and with it; JAX always compiles with XLA; PyTorch runs
without compilation.

Writes `OUT/gpu_check.json` (every figure and check, rewritten after each one, so a run cut short
still leaves what it measured) and `OUT/gpu_check.txt` (a short summary). Each check that fails
records its error and the next one runs. Planned to fit in 8 minutes on one H100:

- training images/s of DenseNet-169 and ResNet-101 with the method's configs (`train/configs/*_m1.yaml`:
  Adam, head, augmentation) at 320 px from the preprocessed cache (`mura_core.pipeline.build_cache`) of
  real FracAtlas radiographs, with mixed precision on a GPU, without and with XLA, and the MURA epoch
  time that implies (36,808 training images); goal for DenseNet-169: >= 1,000 images/s;
- inference images/s of each, and seconds per study of `Ensemble.predict_study(..., explain=True)`
  for the method's four-member ensemble on a 3-image study;
- correctness: a short run's loss falls; a `.keras` checkpoint saves, reloads and predicts the same
  probabilities; `train.train.run` interrupted after an epoch resumes through BackupAndRestore;
  Grad-CAM maps computed on the GPU agree with maps computed on the CPU for the same weights.

ImageNet weights cannot be downloaded on the device, so the models start from random weights: speed
does not depend on the weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mura_core import backend, cam_backends  # noqa: E402
from mura_core.ensemble import Ensemble  # noqa: E402
from mura_core.gradcam import CamExplainer  # noqa: E402
from mura_core.mura_facts import published_totals  # noqa: E402
from mura_core.pipeline import build_cache, make_dataset, open_cache  # noqa: E402
from mura_core.registry import create_model, get_spec  # noqa: E402
from mura_core.vocabulary import level_key  # noqa: E402
from train import train as train_module  # noqa: E402
from train.config import DataSource, TrainConfig, load_config  # noqa: E402

FRACATLAS = ROOT.parent / "shared" / "data" / "fracatlas"
CONFIGS = ROOT / "train" / "configs"
MURA_TRAIN_IMAGES = int(published_totals().loc["train", "images"])
GOAL_DENSENET_IMAGES_PER_S = 1000


@dataclass(frozen=True)
class Settings:
    """What the check runs: full (a GPU) or smoke (CPU, tiny)."""

    out: Path
    data: Path
    models: tuple[str, ...] = ("densenet169", "resnet101")
    size: int = 320
    images: int = 256
    batch: int = 64  # throughput batch (the method trains at 8 per GPU; also timed)
    method_batch: int = 8
    warmup_steps: int = 3
    steps: int = 15
    budget_s: float = 420.0
    smoke: bool = False  # CPU, tiny; on TensorFlow training runs eagerly (no graph tracing, no XLA)
    only: tuple[str, ...] = ()  # run only these checks (e.g. those a run cut short skipped); () = all

    @staticmethod
    def smoke_settings(out: Path, data: Path) -> Settings:
        return Settings(out, data, models=("mobilenetv2",), size=32, images=16, batch=4, method_batch=2,
                        warmup_steps=1, steps=2, budget_s=110.0, smoke=True)


class Check:
    """Runs named checks in order, recording each one's result or error, and writing the JSON after each."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.started = time.perf_counter()
        self.results: dict = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "smoke": settings.smoke,
                              "settings": {k: str(v) if isinstance(v, Path) else v
                                           for k, v in dataclasses.asdict(settings).items()},
                              "device": device_info(), "checks": {}}

    def left(self) -> float:
        return self.settings.budget_s - (time.perf_counter() - self.started)

    def run(self, name: str, fn, *args) -> dict | None:
        if self.settings.only and name not in self.settings.only:
            self.results["checks"][name] = {"ok": None, "skipped": "not among --only"}
            return None
        if self.left() <= 0:
            self.results["checks"][name] = {"ok": None, "skipped": "time budget spent"}
            self.write()
            return None
        print(f"[{time.perf_counter() - self.started:6.1f} s] {name} ...", flush=True)
        start = time.perf_counter()
        try:
            result = fn(*args)
        except Exception as exc:  # a failed check is recorded; the others still run
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc(limit=8)}
        result["seconds"] = round(time.perf_counter() - start, 1)
        keras.mixed_precision.set_global_policy("float32")
        self.results["checks"][name] = result
        self.write()
        print(f"           {summary_line(name, result)}", flush=True)
        return result

    def write(self) -> None:
        out = self.settings.out
        self.results["total_seconds"] = round(time.perf_counter() - self.started, 1)
        (out / "gpu_check.json").write_text(json.dumps(self.results, indent=2, default=str))
        (out / "gpu_check.txt").write_text(summary_text(self.results))


def device_info() -> dict:
    """The Keras backend and its versions, and the devices it sees (on TensorFlow, the GPUs' compute capability)."""
    info = {**backend.versions(), "cpus": os.cpu_count(), "gpus": backend.gpus()}
    if backend.is_tensorflow():
        import tensorflow as tf

        details = [tf.config.experimental.get_device_details(g) for g in tf.config.list_physical_devices("GPU")]
        info.update(compute_capability=[d.get("compute_capability") for d in details],
                    tensor_float_32=tf.config.experimental.tensor_float_32_execution_enabled())
    return info


def training_policy() -> str:
    """The policy `train.train` uses by default (mixed_precision=auto): mixed precision on a GPU."""
    return backend.mixed_precision_policy("auto")


def compiles_with_xla(settings: Settings, xla: bool) -> bool:
    """Whether a training check compiles with XLA: as asked on TensorFlow, always on JAX (unless eager)."""
    if backend.name() == backend.JAX:
        return True
    return xla and not settings.smoke


def method_config(arch: str, settings: Settings, extra: list[str] | None = None) -> TrainConfig:
    """The method's config for `arch` (`<arch>_m1.yaml`, or densenet169_m1's with `model=arch`), random init."""
    path = CONFIGS / f"{arch}_m1.yaml"
    eager = settings.smoke and backend.is_tensorflow()  # JAX compiles one step faster than it runs op by op
    overrides = ["weights=null", f"input_size={settings.size}", f"run_eagerly={str(eager).lower()}",
                 *(extra or [])]
    if not path.exists():
        path, overrides = CONFIGS / "densenet169_m1.yaml", [f"model={arch}", *overrides]
    return load_config(path, overrides)


def sample_table(settings: Settings) -> pd.DataFrame:
    """The first `settings.images` FracAtlas images, half fractured: columns path, label."""
    table = pd.read_csv(settings.data / "dataset.csv")
    half = settings.images // 2
    rows = pd.concat([table[table["fractured"] == 1].head(half),
                      table[table["fractured"] == 0].head(settings.images - half)])
    return pd.DataFrame({"path": [str(settings.data / "images" / i) for i in rows["image_id"]],
                         "label": rows["fractured"].astype(int).to_numpy()})


def cached_images(table: pd.DataFrame, settings: Settings) -> tuple[Path, np.ndarray]:
    """Build (or reuse) the preprocessed cache of `table` and return (folder, images (n, S, S, 3) float32)."""
    folder = build_cache(table["path"].tolist(), settings.size, settings.out / "cache")
    view = open_cache(folder, settings.size, table["path"].tolist())
    gray = np.stack([view[i] for i in range(len(table))])
    return folder, np.repeat(gray, 3, axis=-1).astype(np.float32)


def full_batches(dataset, batch: int):
    """The batched dataset repeated forever, every batch with exactly `batch` images (`ImageBatches`: the
    sample's image count is a multiple of the batch)."""
    if not backend.is_tensorflow():
        return dataset.repeat()
    import tensorflow as tf

    return dataset.repeat().unbatch().batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def batch_iterator(dataset):
    """Batches as training reads them: `tf.data`'s iterator, or Keras' reader threads over an `ImageBatches`."""
    if backend.is_tensorflow():
        return iter(dataset)
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    return iter(PyDatasetAdapter(dataset).get_numpy_iterator())


class StepTimer(keras.callbacks.Callback):
    """Wall time at the end of each training batch (reading the loss waits for the device)."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []
        self.losses: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))
        self.times.append(time.perf_counter())


def check_training_speed(arch: str, xla: bool, batch: int, table, cache, settings: Settings) -> dict:
    """Training images/s of `arch` with the method's config, from the cache, augmented, as `train.train` does."""
    policy = training_policy()
    keras.mixed_precision.set_global_policy(policy)
    config = method_config(arch, settings, [f"batch_size={batch}", f"jit_compile={str(xla).lower()}"])
    model = create_model(config.model, None, settings.size, config.dense_units, config.dropout)
    train_module.compile_model(model, config)
    dataset = full_batches(make_dataset(table, settings.size, batch, True, config.augmentation, cache=cache), batch)
    timer = StepTimer()
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=settings.warmup_steps + settings.steps, callbacks=[timer],
              verbose=0)
    first_step = timer.times[0] - start
    timed = timer.times[settings.warmup_steps - 1:]
    per_s = batch * settings.steps / (timed[-1] - timed[0])
    result = {"ok": True, "model": arch, "policy": policy, "xla": compiles_with_xla(settings, xla),
              "batch": batch, "size": settings.size,
              "images_per_s": round(per_s, 1), "first_step_s": round(first_step, 1),
              "mura_epoch_s": round(MURA_TRAIN_IMAGES / per_s, 1)}
    if arch == "densenet169" and not settings.smoke:
        result["goal_images_per_s"] = GOAL_DENSENET_IMAGES_PER_S
        result["meets_goal"] = per_s >= GOAL_DENSENET_IMAGES_PER_S
    return result


def check_input_pipeline(table, cache, settings: Settings) -> dict:
    """Images/s the augmented input pipeline delivers from the cache alone (no model)."""
    config = method_config(settings.models[0], settings)
    dataset = full_batches(make_dataset(table, settings.size, settings.batch, True, config.augmentation, cache=cache),
                           settings.batch)
    iterator = batch_iterator(dataset)
    for _ in range(settings.warmup_steps):
        next(iterator)
    start = time.perf_counter()
    for _ in range(settings.steps * 2):
        next(iterator)
    return {"ok": True, "images_per_s": round(settings.batch * settings.steps * 2 / (time.perf_counter() - start), 1)}


def check_inference_speed(arch: str, images: np.ndarray, settings: Settings) -> dict:
    """Inference images/s (a compiled forward pass) in the training policy and in float32 (as the app loads)."""
    out = {"ok": True, "model": arch, "batch": settings.batch}
    batch = keras.ops.convert_to_tensor(np.resize(images, (settings.batch, *images.shape[1:])))  # on the device
    for policy in dict.fromkeys((training_policy(), "float32")):
        keras.mixed_precision.set_global_policy(policy)
        model = create_model(arch, None, settings.size)
        forward = cam_backends.forward(model)
        cam_backends.to_numpy(forward(batch))
        start = time.perf_counter()
        for _ in range(settings.steps):
            result = forward(batch)
        cam_backends.to_numpy(result)  # waits for the device
        out[f"images_per_s_{policy}"] = round(settings.batch * settings.steps / (time.perf_counter() - start), 1)
    return out


def check_predict_study(table, settings: Settings) -> dict:
    """Seconds per 3-image study of `predict_study(..., explain=True)` for the method's four members (float32)."""
    members = {f"{arch}_m{k}": arch for arch in settings.models for k in (1, 2)}
    ensemble = Ensemble({n: create_model(a, None, settings.size) for n, a in members.items()},
                        architectures=members)
    study = table["path"].tolist()[:3]
    start = time.perf_counter()
    ensemble.predict_study(study, explain=True)
    first = time.perf_counter() - start
    times = []
    for _ in range(5 if not settings.smoke else 2):
        start = time.perf_counter()
        result = ensemble.predict_study(study, explain=True)
        times.append(time.perf_counter() - start)
    heat = result.images[0].heatmaps["ensemble"]  # the fused map, at the members' input side
    return {"ok": bool(result.verdict) and heat.shape == (settings.size, settings.size),
            "members": list(members.values()), "study_images": len(study),
            "seconds_per_study": round(statistics.median(times), 3), "first_study_s": round(first, 1)}


def check_loss_falls_and_checkpoint(images: np.ndarray, labels: np.ndarray, settings: Settings) -> dict:
    """A short run on a fixed set lowers the loss; its `.keras` checkpoint reloads and predicts the same.

    The method's model and optimizer, fitting a few images as one batch (no dropout, learning rate 1e-3,
    so that the loss has to fall within a few steps whatever the device).
    """
    policy = training_policy()
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    n = min(len(images), 2 * settings.method_batch)
    config = method_config(settings.models[0], settings, [f"batch_size={n}", "learning_rate=0.001", "dropout=0"])
    model = create_model(config.model, None, settings.size, config.dense_units, config.dropout)
    train_module.compile_model(model, config)
    x, y = images[:n], labels[:n].astype(np.float32)
    history = model.fit(x, y, batch_size=n, epochs=12, verbose=0, shuffle=False)
    losses = [round(v, 4) for v in history.history["loss"]]
    before = model.predict(x, verbose=0)[:, 0]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "check.keras"
        model.save(path)
        reloaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    after = reloaded.predict(x, verbose=0)[:, 0]
    diff = float(np.abs(before.astype(np.float64) - after).max())
    # Batch statistics make single steps noisy (tiny smoke images above all): compare the first and last thirds.
    falls = float(np.mean(losses[-4:])) < float(np.mean(losses[:4]))
    return {"ok": falls and diff <= 1e-3, "policy": policy, "images": n, "epoch_losses": losses,
            "loss_falls": falls, "reload_max_abs_diff": diff, "reload_tolerance": 1e-3}


def check_backup_and_restore(table: pd.DataFrame, settings: Settings) -> dict:
    """`train.train.run` interrupted after epoch 1 resumes at epoch 2 (the sample images, one in four held out
    for validation, through the preprocessed cache)."""

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt("simulated interruption")

    config = method_config(settings.models[0], settings, [
        "name=backup_check", f"out_dir={settings.out / 'runs'}", f"batch_size={settings.method_batch}",
        "epochs=2", f"steps_per_epoch={settings.steps}", "validation_steps=1", "train_split=train",
        "val_split=val", f"cache_dir={settings.out / 'cache_runs'}"])
    split_file = settings.out / "backup_check_split.csv"
    pd.DataFrame({"path_key": ["images/" + Path(p).name for p in table["path"]],
                  "split": ["val" if i % 4 == 3 else "train" for i in range(len(table))]}).to_csv(split_file,
                                                                                              index=False)
    config = dataclasses.replace(config, data=(DataSource(str(settings.data), "fracatlas", str(split_file)),))
    interrupted = False
    try:
        train_module.run(config, extra_callbacks=[Interrupt()])
    except KeyboardInterrupt:
        interrupted = True
    backup_left = (config.run_dir / "backup").is_dir()
    keras.mixed_precision.set_global_policy("float32")
    result = train_module.run(config)
    epochs = pd.read_csv(config.run_dir / "history.csv")["epoch"].tolist()
    ok = interrupted and backup_left and epochs == [0, 1] and not (config.run_dir / "backup").exists()
    return {"ok": ok, "interrupted": interrupted, "backup_after_interruption": backup_left,
            "history_epochs": epochs, "validation_auc": result[level_key("image")].get("auc")}


def check_gradcam_device_vs_cpu(images: np.ndarray, settings: Settings) -> dict:
    """Grad-CAM maps and probabilities on the default device (the GPU) against the CPU, same weights
    (a copy of the model built on the CPU: JAX and PyTorch keep weights where they were made)."""
    arch = settings.models[0]
    model = create_model(arch, None, settings.size)
    batch = images[:4]
    probs_device, maps_device = CamExplainer(model, get_spec(arch).gradcam_layer).explain(batch)
    with keras.device("cpu:0"):
        on_cpu = create_model(arch, None, settings.size)
        on_cpu.set_weights(model.get_weights())
        probs_cpu, maps_cpu = CamExplainer(on_cpu, get_spec(arch).gradcam_layer).explain(batch)
    map_diff = float(np.abs(maps_device - maps_cpu).max())
    prob_diff = float(np.abs(probs_device - probs_cpu).max())
    on_gpu = bool(backend.gpus())
    return {"ok": map_diff <= 0.05 and prob_diff <= 1e-3, "compared": "GPU vs CPU" if on_gpu else "CPU vs CPU",
            "model": arch, "max_abs_heatmap_diff": map_diff, "max_abs_probability_diff": prob_diff,
            "tolerance": {"heatmap": 0.05, "probability": 1e-3}}


def summary_line(name: str, result: dict) -> str:
    status = {True: "ok", False: "FAILED", None: "skipped"}[result.get("ok")]
    keys = ("images_per_s", "mura_epoch_s", "images_per_s_mixed_float16", "images_per_s_float32",
            "seconds_per_study", "epoch_losses", "reload_max_abs_diff", "history_epochs",
            "max_abs_heatmap_diff", "error", "skipped")
    figures = ", ".join(f"{k} {result[k]}" for k in keys if k in result)
    return f"{name}: {status} ({figures}; {result.get('seconds', 0)} s)"


def summary_text(results: dict) -> str:
    device = results["device"]
    name = device.get("backend", "tensorflow")
    lines = [f"gpu_check {'--smoke ' if results['smoke'] else ''}{results['created']}: Keras {device['keras']} on "
             f"{name} {device.get(name, '')}, GPUs {device['gpus'] or 'none'}, {device['cpus']} CPUs, "
             f"{results.get('total_seconds')} s"]
    lines += [summary_line(name, r) for name, r in results["checks"].items()]
    failed = [n for n, r in results["checks"].items() if r.get("ok") is False]
    lines.append(f"failed: {', '.join(failed)}" if failed else "no check failed")
    return "\n".join(lines) + "\n"


def xla_skip_reason(settings: Settings) -> str:
    """Why the separate XLA training checks do not run ("" when they do)."""
    if backend.name() == backend.JAX:
        return "JAX always compiles with XLA: the check without the suffix is the XLA figure"
    if backend.name() == backend.TORCH:
        return "PyTorch: no XLA (torch.compile is not timed)"
    return "smoke mode trains eagerly" if settings.smoke else ""


def run_checks(settings: Settings) -> dict:
    """Run every check within `settings.budget_s` and return the results (also written to OUT)."""
    settings.out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    check = Check(settings)
    table = sample_table(settings)
    cache, images = cached_images(table, settings)
    labels = table["label"].to_numpy()
    first, *others = settings.models
    check.run(f"train_{first}_batch{settings.batch}", check_training_speed, first, False, settings.batch,
              table, cache, settings)
    check.run("loss_falls_and_checkpoint", check_loss_falls_and_checkpoint, images, labels, settings)
    check.run("backup_and_restore", check_backup_and_restore, table, settings)
    check.run("gradcam_device_vs_cpu", check_gradcam_device_vs_cpu, images, settings)
    check.run("predict_study_explain", check_predict_study, table, settings)
    xla_skipped = xla_skip_reason(settings)
    if xla_skipped:
        check.results["checks"][f"train_{first}_batch{settings.batch}_xla"] = {"ok": None, "skipped": xla_skipped}
    else:
        check.run(f"train_{first}_batch{settings.batch}_xla", check_training_speed, first, True,
                  settings.batch, table, cache, settings)
    check.run("input_pipeline_from_cache", check_input_pipeline, table, cache, settings)
    for arch in settings.models:
        check.run(f"inference_{arch}", check_inference_speed, arch, images, settings)
    for arch in others:
        check.run(f"train_{arch}_batch{settings.batch}", check_training_speed, arch, False, settings.batch,
                  table, cache, settings)
        if not xla_skipped:
            check.run(f"train_{arch}_batch{settings.batch}_xla", check_training_speed, arch, True, settings.batch,
                      table, cache, settings)
    for arch in settings.models:
        check.run(f"train_{arch}_batch{settings.method_batch}", check_training_speed, arch, False,
                  settings.method_batch, table, cache, settings)
    check.write()
    return check.results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for gpu_check.json and gpu_check.txt")
    parser.add_argument("--smoke", action="store_true", help="tiny settings on CPU (tests), under 2 minutes")
    parser.add_argument("--data", default=str(FRACATLAS), help="FracAtlas folder (dataset.csv, images/)")
    parser.add_argument("--images", type=int, help="radiographs to cache and train on (default 256)")
    parser.add_argument("--size", type=int, help="input side (default 320)")
    parser.add_argument("--budget-s", type=float, help="stop starting checks after this many seconds (420)")
    parser.add_argument("--only", help="comma-separated check names to run (the others are recorded as skipped)")
    args = parser.parse_args(argv)
    out, data = Path(args.out), Path(args.data)
    if not (data / "dataset.csv").is_file():
        print(f"error: {data / 'dataset.csv'}: not found (pass --data /path/to/fracatlas)", file=sys.stderr)
        return 2
    if args.smoke:
        backend.hide_gpus()
        settings = Settings.smoke_settings(out, data)
    else:
        settings = Settings(out, data)
    only = tuple(n.strip() for n in args.only.split(",")) if args.only else None
    changes = {k: v for k, v in {"images": args.images, "size": args.size, "budget_s": args.budget_s,
                                 "only": only}.items() if v is not None}
    settings = dataclasses.replace(settings, **changes)
    results = run_checks(settings)
    print(summary_text(results), end="")
    return 0 if all(r.get("ok") is not False for r in results["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
