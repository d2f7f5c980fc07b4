#!/usr/bin/env bash
# Served requests per second: chat_security's middleware against an unguarded
# endpoint and DRF + simplejwt, each under gunicorn (2 sync workers) on 127.0.0.1.
#
#   bash benchmarks/run_served.sh [--seconds 15] [--connections 8] [--rounds 7]
#
# One small Django project (benchmarks/served/, SQLite, HS256 everywhere, ~760-byte
# tokens with userData/agentData) serves one JSON endpoint five ways, each by its own
# gunicorn: unguarded; guarded by ChatSecurityMiddleware with the same token repeated;
# guarded with a fresh token per request (wrk's served/fresh.lua, pre-signed list);
# DRF + simplejwt JWTStatelessUserAuthentication; DRF + simplejwt JWTAuthentication
# (loads the user from the database). wrk (2 threads, --connections, --latency) runs
# each variant once per round, paired with an unguarded run just before or after it;
# --seconds (per variant) is split over the rounds. The table gives medians over the
# rounds and, for ratios, the median of the per-round paired ratios. Any non-2xx
# answer, socket error or re-sent "fresh" token fails the run. About 2.5 minutes.
#
# Benchmark-only packages go into benchmarks/.venv-served (made when missing): this
# checkout (editable), djangorestframework, djangorestframework-simplejwt, gunicorn.
# Debian's wrk is installed when missing. PYTHON (default python3) makes the venv.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHECKOUT=$(cd "$HERE/.." && pwd)
SECONDS_TOTAL=15
CONNECTIONS=8
ROUNDS=7
THREADS=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) SECONDS_TOTAL=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    *) echo "usage: $0 [--seconds S] [--connections C] [--rounds R]" >&2; exit 2 ;;
  esac
done
for value in "$SECONDS_TOTAL" "$CONNECTIONS" "$ROUNDS"; do
  [[ $value =~ ^[1-9][0-9]*$ ]] || { echo "not a positive integer: $value" >&2; exit 2; }
done
RUN_SECONDS=$(( SECONDS_TOTAL / ROUNDS ))
(( RUN_SECONDS >= 2 )) || RUN_SECONDS=2
(( CONNECTIONS >= THREADS )) || { echo "--connections must be at least $THREADS" >&2; exit 2; }

# shellcheck source=../scripts/setup.sh
source "$CHECKOUT/scripts/setup.sh"  # ensure_apt
command -v wrk >/dev/null || ensure_apt wrk

VENV=$HERE/.venv-served
PY=$VENV/bin/python
if [[ ! -x $PY ]]; then
  "${PYTHON:-python3}" -m venv "$VENV" || { ensure_apt python3-venv; "${PYTHON:-python3}" -m venv "$VENV"; }
fi
if ! "$PY" -c 'import chat_security, rest_framework, rest_framework_simplejwt, gunicorn' 2>/dev/null; then
  echo "installing into $VENV: this checkout, djangorestframework, djangorestframework-simplejwt, gunicorn"
  pip_log=$(mktemp "${TMPDIR:-/tmp}/served-pip.XXXXXX")
  if ! "$PY" -m pip install -q --disable-pip-version-check -e "$CHECKOUT" \
    'djangorestframework>=3.15' 'djangorestframework-simplejwt>=5.3' 'gunicorn>=22' >"$pip_log" 2>&1; then
    cat "$pip_log" >&2; rm -f "$pip_log"; exit 1
  fi
  rm -f "$pip_log"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/chat-served.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done  # <= 10 s
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Fresh tokens: enough for 5000 req/s (2 sync workers served ~2500 at most here).
"$PY" "$HERE/served/bench.py" prepare --work "$WORK" --rounds "$ROUNDS" \
  --per-round $(( RUN_SECONDS * 5000 )) --warm 6000

# The variants, in served/bench.py's VARIANTS order: stack, path, token, what to expect.
STACKS=(plain chat chat drf drf)
PATHS=(/chat/api/whoami /chat/api/whoami /chat/api/whoami /drf/stateless /drf/db-user)
TOKENS=(chat.token chat.token fresh simplejwt.token simplejwt.token)
EXPECT=(any verified verified user user)
NAMES=("unguarded" "guarded, repeated" "guarded, fresh" "simplejwt stateless" "simplejwt DB user")
read -r -a PORTS <<<"$("$PY" - <<'PYEOF'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PYEOF
)"

# Recent gunicorn opens a control socket at one fixed path; five servers would fight over it.
NO_CONTROL_SOCKET=
if "$VENV/bin/gunicorn" --help | grep -q -- --no-control-socket; then
  NO_CONTROL_SOCKET=--no-control-socket
fi
for i in "${!STACKS[@]}"; do
  SERVED_WORK=$WORK SERVED_STACK=${STACKS[$i]} DJANGO_SETTINGS_MODULE=served.settings \
    "$VENV/bin/gunicorn" served.wsgi:application --pythonpath "$HERE" \
    --workers 2 --worker-class sync --bind "127.0.0.1:${PORTS[$i]}" \
    --error-logfile "$WORK/gunicorn-$i.log" --log-level warning $NO_CONTROL_SOCKET &
  PIDS+=($!)
done

url() { echo "http://127.0.0.1:${PORTS[$1]}${PATHS[$1]}"; }

# wrk_run INDEX SECONDS OUTPUT [TOKENS_FILE for the fresh variant]
wrk_run() {
  local i=$1 seconds=$2 output=$3 fresh=${4:-}
  if [[ ${TOKENS[$i]} == fresh ]]; then
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" --latency -s "$HERE/served/fresh.lua" \
      "$(url "$i")" -- "$fresh" "$THREADS" >"$output"
  else
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" --latency \
      -H "Authorization: Bearer $(cat "$WORK/${TOKENS[$i]}")" "$(url "$i")" >"$output"
  fi
  "$PY" "$HERE/served/bench.py" check "$output"
}

for i in "${!STACKS[@]}"; do
  token_file=$WORK/${TOKENS[$i]}
  [[ ${TOKENS[$i]} == fresh ]] && token_file=$WORK/fresh-warm.txt
  "$PY" "$HERE/served/bench.py" wait "$(url "$i")" --token-file "$token_file" \
    --pid "${PIDS[$i]}" --expect "${EXPECT[$i]}"
done
echo "gunicorn: 2 sync workers per variant; wrk: $THREADS threads, $CONNECTIONS connections," \
  "$ROUNDS rounds of ${RUN_SECONDS}s per variant, each paired with an unguarded run" \
  "(after a 2 s warm-up of every server)"

for i in "${!STACKS[@]}"; do
  wrk_run "$i" 2 "$WORK/warm-$i.txt" "$WORK/fresh-warm.txt"
done
# Each round runs every guarded/simplejwt variant once, next to an unguarded run of its
# own (before it in odd rounds, after it in even ones), so every ratio compares two runs
# made seconds apart; the variants' order rotates from round to round.
VARIANT_COUNT=$(( ${#STACKS[@]} - 1 ))
for round in $(seq "$ROUNDS"); do
  for step in $(seq 0 $(( VARIANT_COUNT - 1 ))); do
    v=$(( 1 + (step + round - 1) % VARIANT_COUNT ))
    if (( round % 2 )); then pair=(0 "$v"); else pair=("$v" 0); fi
    echo "round $round/$ROUNDS: ${NAMES[$v]} (and unguarded)"
    for i in "${pair[@]}"; do
      output=$WORK/wrk-$i-$round.txt
      (( i == 0 )) && output=$WORK/wrk-0-$round-$v.txt
      wrk_run "$i" "$RUN_SECONDS" "$output" "$WORK/fresh-$round.txt"
    done
  done
done

"$PY" "$HERE/served/bench.py" report --work "$WORK" --rounds "$ROUNDS"
for i in "${!STACKS[@]}"; do
  if [[ -s $WORK/gunicorn-$i.log ]]; then
    echo "--- gunicorn log of ${NAMES[$i]} (warnings and errors) ---"
    tail -n 20 "$WORK/gunicorn-$i.log"
  fi
done
