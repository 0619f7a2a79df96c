# Sourced by the scripts/gpu_*.sh records of the device-tool runs: what every call there does the same
# way. Set T0 (the start, `date +%s`) and TIMELINE (a file) before calling `log`.

# The wheels the GPU image lacks (diffusers, torchattacks, ...), carried in $1, installed aside.
install_wheels() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$1"/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PWD
}

log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$TIMELINE"; }

# A run folder $1 (under the repository root) into $OUTDIR as $2_weights.tgz (the safetensors, less
# checkpoints, samples and best-epoch copies) and $2_logs.tgz (the rest), with its timeline.
pack_runs() {
  local runs=$1 tag=$2
  log "packing"
  nvidia-smi --query-gpu=name,memory.used --format=csv > "$runs/nvidia-smi.txt" 2>&1
  find "$runs" \( -name checkpoint -o -name samples \) -type d -prune -exec rm -rf {} + 2>/dev/null
  rm -f "$runs"/*/selected.safetensors "$runs"/*/best.safetensors
  (cd "$PWD" && find "$(basename "$runs")" -name '*.safetensors' | tar czf "$OUTDIR/${tag}_weights.tgz" -T -)
  tar czf "$OUTDIR/${tag}_logs.tgz" --exclude='*.safetensors' -C "$PWD" "$(basename "$runs")"
  cp "$runs/timeline.txt" "$OUTDIR/timeline.txt"
  ls -la "$OUTDIR"
}
