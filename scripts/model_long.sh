#!/usr/bin/env bash
# The long run of the stateful model test (tests/test_model.py): 2 000 fresh random
# sequences of up to 80 steps per topology, where CI's bounded, derandomized profile
# runs 200 of up to 60. A failure is stored under ${TMPDIR:-/tmp}/chat-security-model
# and replayed first by the next run; the report shows the shrunk failing sequence.
#
#   bash scripts/model_long.sh              # every topology, roughly 10 minutes
#   bash scripts/model_long.sh -k shared    # extra arguments go to pytest
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
.venv/bin/python -c "import hypothesis" 2>/dev/null || ensure_venv test
export HYPOTHESIS_PROFILE=long
exec .venv/bin/python -m pytest tests/test_model.py -s -q --durations=0 "$@"
