#!/usr/bin/env bash
# Installs the demo site, prepares its SQLite database (demo logins, a signing
# secret, a service key pair) and serves it on http://127.0.0.1:8000/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
ensure_venv demo
.venv/bin/python manage.py migrate --noinput -v0 --skip-checks  # runserver runs them once
ADDR="${DEMO_ADDR:-127.0.0.1:8000}"
.venv/bin/python manage.py demo_setup --addr "$ADDR"
exec .venv/bin/python manage.py runserver "$ADDR"
