#!/usr/bin/env bash
# The long fuzz run: tests/security/test_hypothesis.py under the "long" hypothesis
# profile (20 000 examples per property where CI's "ci" profile runs 150, fresh
# random examples on every run). A failure is stored under ${TMPDIR:-/tmp}/chat-security-fuzz
# and replayed first by the next run; the report shows the minimal failing input
# and a @reproduce_failure line. Each test prints its tally of outcomes.
#
#   bash scripts/fuzz_long.sh                 # everything, roughly an hour
#   bash scripts/fuzz_long.sh -k engine       # extra arguments go to pytest
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
.venv/bin/python -c "import hypothesis" 2>/dev/null || ensure_venv test
export HYPOTHESIS_PROFILE=long
exec .venv/bin/python -m pytest tests/security/test_hypothesis.py -s -q --durations=0 "$@"
