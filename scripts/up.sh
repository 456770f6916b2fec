#!/usr/bin/env bash
# Start the whole stack on this machine: Redis (when none responds), one worker and the API.
#
#   scripts/up.sh                     API on http://127.0.0.1:8000, Swagger UI at /docs
#   RSIR_PORT=8080 scripts/up.sh      another port
#
# Settings come from RSIR_* environment variables (see app/core/config.py); Redis is
# RSIR_REDIS_URL, default redis://127.0.0.1:6379/0. The worker logs to runs/worker.log.
# Ctrl+C stops the API, then the worker, then a Redis server this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

export RSIR_REDIS_URL=${RSIR_REDIS_URL:-redis://127.0.0.1:6379/0}
HOST=${RSIR_HOST:-127.0.0.1}
PORT=${RSIR_PORT:-8000}

# 1. Python environment.
if [ ! -x .venv/bin/rsir ]; then
    if [ -x scripts/setup.sh ]; then
        scripts/setup.sh
    else
        python3 -m venv .venv
        .venv/bin/pip install -e ".[dev]"
    fi
fi
PYTHON=.venv/bin/python

redis_answers() {
    "$PYTHON" - "$RSIR_REDIS_URL" <<'PY'
import sys

import redis

try:
    redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1, socket_timeout=1).ping()
except redis.exceptions.RedisError:
    sys.exit(1)
PY
}

# Prints "<host> <port>" of a redis:// URL on this machine; prints nothing for other URLs.
local_redis_address() {
    "$PYTHON" - "$RSIR_REDIS_URL" <<'PY'
import sys
from urllib.parse import urlsplit

url = urlsplit(sys.argv[1])
if url.scheme == "redis" and (url.hostname or "127.0.0.1") in ("127.0.0.1", "localhost", "::1"):
    print(url.hostname or "127.0.0.1", url.port or 6379)
PY
}

# 2. Redis: use the one at RSIR_REDIS_URL, or start a local one without persistence.
STARTED_REDIS_PORT=""
if ! redis_answers; then
    read -r REDIS_HOST REDIS_PORT <<<"$(local_redis_address)" || true
    if [ -n "${REDIS_PORT:-}" ] && command -v redis-server >/dev/null 2>&1; then
        echo "rsir: no Redis server responds at $RSIR_REDIS_URL; starting redis-server on port $REDIS_PORT (no data kept on disk)"
        redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no >/dev/null
        STARTED_REDIS_PORT=$REDIS_PORT
        for _ in $(seq 50); do
            redis_answers && break
            sleep 0.1
        done
        if ! redis_answers; then
            echo "rsir: redis-server did not respond to PING on port $REDIS_PORT within 5 s" >&2
            exit 1
        fi
    else
        echo "rsir: no Redis server responds at $RSIR_REDIS_URL." >&2
        echo "      Install Redis (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis)" >&2
        echo "      and run this script again, or set RSIR_REDIS_URL to a running server, e.g." >&2
        echo "      RSIR_REDIS_URL=redis://redis.example.internal:6379/0 scripts/up.sh" >&2
        exit 1
    fi
fi

# 3. One worker in the background.
mkdir -p runs
.venv/bin/rsir worker >>runs/worker.log 2>&1 &
WORKER_PID=$!

stop_process() {
    # Send TERM, then (after 10 s each) TERM again and KILL, until the process is gone.
    local pid=$1
    for signal in TERM TERM KILL; do
        kill -0 "$pid" 2>/dev/null || return 0
        kill "-$signal" "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || return 0
            sleep 0.1
        done
    done
}

API_PID=""
stop_all() {
    if [ -n "$API_PID" ] && kill -0 "$API_PID" 2>/dev/null; then
        echo "rsir: stopping the API"
        stop_process "$API_PID"
    fi
    # A warm shutdown lets the worker finish its job. After 10 s a second signal stops it
    # cold, and the job then resumes from its last finished round when a worker runs again.
    if kill -0 "$WORKER_PID" 2>/dev/null; then
        echo "rsir: stopping worker $WORKER_PID"
        stop_process "$WORKER_PID"
    fi
    if [ -n "$STARTED_REDIS_PORT" ]; then
        echo "rsir: stopping the redis-server this script started on port $STARTED_REDIS_PORT"
        "$PYTHON" -c "import redis, sys; redis.Redis(port=int(sys.argv[1])).shutdown(nosave=True)" "$STARTED_REDIS_PORT" 2>/dev/null || true
    fi
}
trap stop_all EXIT

# 4. The API, waited for in the foreground. It runs as a child so that a TERM or INT sent
# to this script alone still reaches it through the trap below.
echo "rsir: worker $WORKER_PID logs to runs/worker.log"
echo "rsir: Swagger UI at http://$HOST:$PORT/docs"
.venv/bin/rsir serve --host "$HOST" --port "$PORT" &
API_PID=$!
trap 'exit 130' INT
trap 'exit 143' TERM
wait "$API_PID"
