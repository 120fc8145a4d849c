#!/usr/bin/env bash
# Train the bundled demo ensemble on FracAtlas on CPU, install it in weights/, evaluate it on the test split.
# Run from the repository root; about 2 hours on 2 cores. Re-running resumes an interrupted member.
set -euo pipefail
for member in mobilenetv2 efficientnetb0; do
  if [ ! -f "runs/demo_$member/val_metrics.json" ]; then
    python -m train.train --config "train/configs/demo_fracatlas_$member.yaml"
  fi
done
python -m train.build_ensemble --runs runs/demo_mobilenetv2 runs/demo_efficientnetb0 \
  --sensitivity 0.8 --info train/configs/demo_model_info.yaml --out weights
python -m train.evaluate --weights weights --data ../shared/data/fracatlas --format fracatlas \
  --split-file train/splits/fracatlas.csv --split test --out weights/report
python -m train.model_card --weights weights --report weights/report/report.json --out weights/MODEL_CARD.md
