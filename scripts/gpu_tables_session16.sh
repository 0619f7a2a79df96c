#!/usr/bin/env bash
# Session 16, third GPU call: the table cells that hang on the `sevit` and `student_cnn` shipped from
# scripts/gpu_batch_session16.sh, computed on the H200 into the committed store (cells are keyed by
# model, data and attack, not device; the CPU machine then re-renders them with 0 cells computed).
# Carry: .whl (diffusers, plotly, torchattacks) and .gpudata2 (the X-ray test folder only).
# SIM=1: a CPU dry run on 2 X-rays into a scratch store.
set -u
source scripts/gpu_common.sh
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
T0=$(date +%s); OUTDIR=${OUT:-/tmp/out}; mkdir -p "$OUTDIR"
if [ "${SIM:-0}" = 0 ]; then
  install_wheels .whl; PY=python3; DEV=cuda; LIM1="--limit 32"; LIM2=""; STORE=results/results.sqlite
else
  PY=${PY:-.venv/bin/python}; DEV=cpu; LIM1="--limit 2"; LIM2="--limit 2"; STORE=/tmp/sim16.sqlite
fi
export PURIFYLAB_DATA=$PWD/.gpudata2
TIMELINE=$OUTDIR/timeline.txt
finish() {
  $PY -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.close()" $STORE
  cp $STORE "$OUTDIR/results.sqlite"; tar czf "$OUTDIR/tables16.tgz" -C /tmp tables16 2>/dev/null; log "packed"
}
trap finish EXIT
table() { local name=$1 left=$(( ${END:-100000} - ($(date +%s) - T0) )); shift
  [ $left -gt 10 ] || { log "skip $name"; return; }
  log "table $name ($left s left)"
  timeout $left $PY -m core table $name --device $DEV --no-progress --store $STORE --out-dir /tmp/tables16/$name "$@" > "$OUTDIR/$name.log" 2>&1
  log "done $name rc=$?"; }
table paper-table2 $LIM2
table paper-table1 $LIM1

