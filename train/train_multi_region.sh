#!/usr/bin/env bash
# Section 5.1 of the method on the Bone Fracture Multi-Region X-ray data: one small member trained and
# evaluated on the published split and on a split without leakage (see docs/section5.md: "Section 5.1").
# Run from the repository root; re-running resumes an interrupted run and skips finished steps.
# Outputs: runs/multi_region/<run>/ (training), runs/multi_region/<run>/weights/report/ (test report),
# runs/multi_region/memory_<split>.json (the memory baseline: each test image labelled like its most alike
# training picture, no training at all).
set -euo pipefail
DATA=runs/data/bone-fracture-multi-region
SHARED=../shared/data/bone-fracture-multi-region
[ -d "$DATA" ] || python "$SHARED/materialize.py" "$DATA"
for variant in published leak_free; do
  memory=runs/multi_region/memory_$variant.json
  if [ ! -f "$memory" ]; then
    python -m train.memory_baseline "$DATA" --format folders --split-file "train/splits/multi_region_$variant.csv" \
      --out "$memory"
  fi
  run=runs/multi_region/multi_region_$variant
  if [ ! -f "$run/val_metrics.json" ]; then
    python -m train.train --config "train/configs/multi_region_mobilenetv2_$variant.yaml"
  fi
  if [ ! -f "$run/weights/report/report.json" ]; then
    python -m train.build_ensemble --runs "$run" --out "$run/weights" --info train/configs/multi_region_model_info.yaml
    python -m train.evaluate --weights "$run/weights" --data "$DATA" --format folders \
      --split-file "train/splits/multi_region_$variant.csv" --split test --out "$run/weights/report" --no-localization
  fi
done
