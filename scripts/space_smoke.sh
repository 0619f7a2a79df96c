#!/usr/bin/env bash
# Start the app as a Space would: a clean copy of the committed tree, a fresh venv, the headless
# server, then /_stcore/health. (Docker itself cannot run on the CI machine; this is the same
# install the Dockerfile does, minus the CPU-wheel index.)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
port="${PORT:-8597}"
# Only a server this script started is stopped (`kill 0` would stop the caller's whole process group).
trap 'if [ -n "${server:-}" ]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
git clone -q "$repo" "$work/app"
cd "$work/app"
bash scripts/install.sh
# The Dockerfile's ENTRYPOINT options, on a local address.
PURIFYLAB_DATA="$work/no-data" .venv/bin/python app.py "--server.port=$port" --server.address=127.0.0.1 \
  --server.headless=true > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 90); do
  if [ "$(curl -s "http://127.0.0.1:$port/_stcore/health")" = "ok" ]; then
    echo "space smoke test: healthy on a fresh install with no data set"; exit 0
  fi
  sleep 1
done
echo "space smoke test: no healthy answer within 90 s"; tail -20 "$work/server.log"; exit 1
