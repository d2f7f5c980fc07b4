#!/usr/bin/env bash
# Bounded load test of the chat API against gunicorn (WSGI, 2 sync workers) on 127.0.0.1.
# Optionally with the metrics on, checking that their scrape adds up (METRICS=1, below).
#
#   bash benchmarks/run_load.sh [load.py options, e.g. --seconds 60 --connections 8]
#
# Starts the demo site (demo_site.wsgi) on a free port, with DEBUG off, a
# fresh database and signing secret (manage.py migrate, security on,
# rotate-secret), runs benchmarks/load.py against /chat/api/messages, then
# stops gunicorn and removes its files. Exit status: load.py's (1 on any
# wrong answer or error).
#
# Database and cache: SQLite in a temporary folder and the local-memory cache
# by default. Set DATABASE_URL (postgres://user:pass@127.0.0.1:5432/name) and
# CACHE_URL (rediscache://127.0.0.1:6379/0) to run on PostgreSQL + Redis: use a
# throwaway database, since the run migrates it, turns security on and makes
# a new active secret (the previous one keeps its grace period). Production
# keeps database connections open: add ?conn_max_age=60&conn_health_checks=true
# to DATABASE_URL for that (without it every request opens a connection, which
# measured 2.4x slower on PostgreSQL). Private instances for one run:
#   bash scripts/services.sh bash benchmarks/run_load.sh --seconds 60
#
# METRICS=1 also switches the demo's Prometheus metrics on, in multi-process
# mode (CHAT_SECURITY_METRICS=true, PROMETHEUS_MULTIPROC_DIR a fresh folder,
# gunicorn -c benchmarks/gunicorn_metrics.py), scrapes /metrics before and
# after the load and checks with benchmarks/check_scrape.py that
# chat_security_verifications_total grew by exactly the answers load.py saw,
# by outcome and code; it prints "scrape adds up: yes" or "no" (then exit
# status 1). The check of issue 20, 4 workers:
#   WORKERS=4 METRICS=1 bash benchmarks/run_load.sh --seconds 20
#
# Benchmark-only packages are pip-installed into the interpreter's
# environment when missing: gunicorn, psycopg[binary] for PostgreSQL and,
# with METRICS=1, prometheus_client.
# PYTHON (default .venv/bin/python), WORKERS (default 2) and METRICS (default
# 0) may be set.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-$ROOT/.venv/bin/python}
WORKERS=${WORKERS:-2}
METRICS=${METRICS:-0}

need() { # module, pip requirement
  "$PY" -c "import $1" 2>/dev/null || "$PY" -m pip install --quiet "$2"
}
need gunicorn 'gunicorn>=22'
case "${DATABASE_URL:-}" in postgres* | pgsql*) need psycopg 'psycopg[binary]>=3.1' ;; esac
case "${CACHE_URL:-}" in redis* | rediss*) need redis 'redis>=5' ;; esac
if [[ $METRICS == 1 ]]; then need prometheus_client 'prometheus_client>=0.20'; fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/chat-load.XXXXXX")
GUNICORN_PID=
cleanup() {
  if [[ -n $GUNICORN_PID ]] && kill -0 "$GUNICORN_PID" 2>/dev/null; then
    kill -TERM "$GUNICORN_PID"
    wait "$GUNICORN_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

export DJANGO_SETTINGS_MODULE=demo_site.settings
export DEBUG=False
export ALLOWED_HOSTS=127.0.0.1,localhost
export DATABASE_URL=${DATABASE_URL:-sqlite:///$WORK/load.sqlite3}
export CACHE_URL=${CACHE_URL:-locmemcache://}
SECRET_KEY=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(50))')
export SECRET_KEY
if [[ -z ${CHAT_SECURITY_ENCRYPTION_KEYS:-} ]]; then
  CHAT_SECURITY_ENCRYPTION_KEYS=$("$PY" manage.py chat_security generate-encryption-key)
  export CHAT_SECURITY_ENCRYPTION_KEYS
fi

"$PY" manage.py migrate --noinput -v 0
"$PY" manage.py chat_security security on >/dev/null
# The secret goes to load.py through the environment, never on a command line (ps).
created=$("$PY" manage.py chat_security rotate-secret)
CHAT_LOAD_SECRET=$(printf '%s' "$created" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["secret"])')
KID=$(printf '%s' "$created" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["kid"])')
export CHAT_LOAD_SECRET
unset created

PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Metrics for gunicorn only: each worker counts into files in an empty folder of
# this run, and the master marks an exited worker's files dead (child_exit).
server_env=()
server_args=()
if [[ $METRICS == 1 ]]; then
  mkdir "$WORK/prometheus"
  server_env=(PROMETHEUS_MULTIPROC_DIR="$WORK/prometheus" CHAT_SECURITY_METRICS=true)
  server_args=(-c "$ROOT/benchmarks/gunicorn_metrics.py")
fi
env "${server_env[@]}" "$PY" -m gunicorn "${server_args[@]}" demo_site.wsgi:application \
  --workers "$WORKERS" --bind "127.0.0.1:$PORT" \
  --error-logfile "$WORK/gunicorn.log" --log-level warning &
GUNICORN_PID=$!
URL="http://127.0.0.1:$PORT/chat/api/messages"

# Ready when the chat API answers (401 without a token); at most 30 s.
"$PY" - "$PORT" "$GUNICORN_PID" <<'EOF'
import http.client, os, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("gunicorn exited before it answered")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/chat/api/messages")
        if conn.getresponse().status == 401:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit("gunicorn did not answer within 30 s")
EOF

db=${DATABASE_URL%%:*}
cache=${CACHE_URL%%:*}
metrics=off
SCRAPE="http://127.0.0.1:$PORT/metrics"
if [[ $METRICS == 1 ]]; then
  metrics="on (multi-process)"
  # The scrape before the load: the readiness check above counted (a missing_token).
  "$PY" benchmarks/check_scrape.py --url "$SCRAPE" --save "$WORK/before.txt"
fi
echo "gunicorn: $WORKERS sync workers, demo_site.wsgi, database $db, cache $cache, metrics $metrics"
status=0
"$PY" benchmarks/load.py --url "$URL" --kid "$KID" --json-out "$WORK/load.json" "$@" || status=$?
if [[ $METRICS == 1 ]]; then
  if [[ -s $WORK/load.json ]]; then
    "$PY" benchmarks/check_scrape.py --url "$SCRAPE" --before "$WORK/before.txt" \
      --load "$WORK/load.json" || status=1
  else
    echo "scrape adds up: not checked (load.py wrote no $WORK/load.json)"
    status=1
  fi
fi
if [[ -s $WORK/gunicorn.log ]]; then
  echo "--- gunicorn log (warnings and errors) ---"
  tail -n 40 "$WORK/gunicorn.log"
fi
exit "$status"
