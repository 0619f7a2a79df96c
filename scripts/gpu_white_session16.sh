#!/usr/bin/env bash
# Session 16, last GPU call: `at_one_shot` (resnet_at behind one-shot DDPM t* = 0.16) white-box on all
# 301 test X-rays, the run docs/ADAPTIVE.md had left for a GPU (on the CPU about 4 hours per row).
# PGD-20, EOT 8, worst of 5 purifier draws; 8/255 first, then 2/255 with the time left.
# Carry: .whl (diffusers, torchattacks) and .gpudata2 (the X-ray test folder only).
set -u
export PYTHONUNBUFFERED=1
source scripts/gpu_common.sh
install_wheels .whl
export PURIFYLAB_DATA=$PWD/.gpudata2
T0=$(date +%s); END=${END:-180}
for eps in 0.03137 0.00784; do
  left=$(( END - ($(date +%s) - T0) )); [ $left -gt 20 ] || break
  echo "[$(( $(date +%s) - T0 ))s] eps $eps, $left s left"
  timeout $left python3 -m core evaluate --data .gpudata2/chest_xray_pneumonia/test --defense at_one_shot \
    --attack pgd --eps $eps --steps 20 --threat white --eot 8 --redraws 5 --device cuda \
    --json "$OUT/at_one_shot_white_$eps.json" > "$OUT/at_one_shot_white_$eps.log" 2>&1
  echo "[$(( $(date +%s) - T0 ))s] rc=$?"; tail -n 6 "$OUT/at_one_shot_white_$eps.log"
done
