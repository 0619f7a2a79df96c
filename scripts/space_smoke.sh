#!/usr/bin/env bash
# Start the app as a Space would: a clean copy of the committed tree, a fresh venv, the headless
# server, then /_stcore/health. (Docker itself cannot run on the CI machine; this is the same
# install the Dockerfile does, minus the CPU-wheel index.)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
port="${PORT:-8597}"
trap 'kill "${server:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
git clone -q "$repo" "$work/app"
cd "$work/app"
bash scripts/install.sh
PURIFYLAB_DATA="$work/no-data" .venv/bin/python app.py --server.headless true \
  --server.address 127.0.0.1 --server.port "$port" > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 90); do
  if [ "$(curl -s "http://127.0.0.1:$port/_stcore/health")" = "ok" ]; then
    echo "space smoke test: healthy on a fresh install with no data set"; exit 0
  fi
  sleep 1
done
echo "space smoke test: no healthy answer within 90 s"; tail -20 "$work/server.log"; exit 1
