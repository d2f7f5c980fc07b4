#!/usr/bin/env bash
# Installs everything the test suite needs (venv, Debian chromium, PostgreSQL,
# Redis, Node clients), lints once, then runs the whole suite in two lanes.
# Extra args go to pytest in both lanes.
#
#   lane 1: SQLite in memory, local-memory cache, in-memory channel layer (tests.settings)
#   lane 2: PostgreSQL, Redis as cache and channel layer (tests.settings_pg), on private
#           instances that scripts/services.sh starts on free ports and stops afterwards
#
# Each lane deselects only what is named below, with the reason; nothing else is skipped.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
ensure_apt chromium openssl openssh-client postgresql redis-server
ensure_venv test
ensure_node_modules
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy -p chat_security  # type-checks the package (config: pyproject.toml)
# The documentation site (docs/), warnings as errors: a broken link or page fails here.
.venv/bin/sphinx-build -W --keep-going -q -b html docs build/docs

# Lane 1 deselects:
#   postgres  - races that are about PostgreSQL (tests/test_races_pg.py); they fail on SQLite.
LANE1=(-m "not postgres")
# Lane 2 deselects:
#   packaging - builds the wheel into a fresh venv with its own SQLite project: nothing in
#               it depends on the lane, and it is the slowest module.
#   browser   - Chromium drives the same pages in lane 1 (about a minute); the WebSocket,
#               process and identity-provider tests still run here. Taken out when the
#               identity-provider tests brought CI past its time budget.
LANE2=(-m "not packaging and not browser")

# The two lanes run side by side (each mostly waits on one core, or on pip and the
# servers it starts); LANES=serial runs them one after the other. Each lane's output
# goes to build/lane<N>.log and is printed whole when the lane ends.
mkdir -p build
run_lane1() {
  .venv/bin/python -m pytest "${LANE1[@]}" --durations=15 "$@"
}
run_lane2() {
  DJANGO_SETTINGS_MODULE=tests.settings_pg \
    bash scripts/services.sh .venv/bin/python -m pytest "${LANE2[@]}" --durations=15 "$@"
}
timed() {  # timed N: run lane N into its log; its exit code and seconds into build/
  local n=$1 started=$SECONDS rc=0
  shift
  "run_lane$n" "$@" >"build/lane$n.log" 2>&1 || rc=$?
  echo "$rc $((SECONDS - started))" >"build/lane$n.result"
}

rm -f build/lane1.result build/lane2.result
if [ "${LANES:-side-by-side}" = serial ]; then
  timed 1 "$@"
  timed 2 "$@"
else
  timed 1 "$@" &
  lane1_pid=$!
  timed 2 "$@"
  wait "$lane1_pid" || true
fi
echo "== lane 1: SQLite + local memory"
cat build/lane1.log
echo "== lane 2: PostgreSQL + Redis"
cat build/lane2.log
read -r lane1 lane1_seconds <build/lane1.result
read -r lane2 lane2_seconds <build/lane2.result
echo "lane 1 (SQLite + local memory): exit $lane1 in ${lane1_seconds}s;" \
  "lane 2 (PostgreSQL + Redis): exit $lane2 in ${lane2_seconds}s"
[ "$lane1" -eq 0 ] && [ "$lane2" -eq 0 ]
