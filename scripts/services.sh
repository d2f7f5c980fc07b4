#!/usr/bin/env bash
# Private PostgreSQL and Redis for one command:
#
#   bash scripts/services.sh COMMAND [ARGS...]
#
# Installs both from Debian's packages when they are missing, starts one instance
# of each on 127.0.0.1 on free ports with its data in a temporary folder, runs
# COMMAND with DATABASE_URL, CACHE_URL and REDIS_URL pointing at them, then stops
# both and deletes the folder, whatever way COMMAND ends (also on failure or Ctrl-C).
# It never uses the machine's own instances, their ports (5432, 6379) or their data.
# The exit status is COMMAND's.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

if [ $# -eq 0 ]; then
  echo "usage: bash scripts/services.sh COMMAND [ARGS...]" >&2
  exit 2
fi

WAIT_SECONDS=60  # for each server to accept connections; a loaded CI machine is slow
DB_NAME=chat_security
DB_USER=chat_security

ensure_apt postgresql redis-server
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -x "$PG_BIN/initdb" ] || { echo "no initdb under /usr/lib/postgresql/*/bin" >&2; exit 1; }

free_port() {  # a port nobody listens on now (the kernel's ephemeral range, never 5432/6379)
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

random_password() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/chat-security-services.XXXXXX")"
chmod 711 "$WORK"  # PostgreSQL's own user must reach its folder inside
PG_DIR="$WORK/postgres"
REDIS_DIR="$WORK/redis"
mkdir -m 700 "$PG_DIR" "$REDIS_DIR"
REDIS_PID=

# PostgreSQL refuses to run as root: as root, it runs as Debian's `postgres` user.
if [ "$(id -u)" -eq 0 ]; then
  chown postgres: "$PG_DIR"
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

stop_services() {
  local status=$?
  trap - EXIT INT TERM HUP
  if [ -n "$REDIS_PID" ]; then
    kill "$REDIS_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$REDIS_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$REDIS_PID" 2>/dev/null || true
  fi
  if [ -f "$PG_DIR/data/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      kill -9 "$(head -n 1 "$PG_DIR/data/postmaster.pid")" 2>/dev/null || true
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap stop_services EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

start_postgres() {
  PG_PASSWORD="$(random_password)"
  printf '%s\n' "$PG_PASSWORD" > "$PG_DIR/pwfile"
  [ "$(id -u)" -ne 0 ] || chown postgres: "$PG_DIR/pwfile"
  as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U "$DB_USER" --pwfile="$PG_DIR/pwfile" \
    --auth=scram-sha-256 -E UTF8 --no-locale --no-sync >"$WORK/initdb.log" 2>&1 ||
    { cat "$WORK/initdb.log" >&2; return 1; }
  rm -f "$PG_DIR/pwfile"
  # TCP on the loopback only, no Unix socket; durability is not needed for a
  # throwaway instance, speed is.
  cat >> "$PG_DIR/data/postgresql.conf" <<'EOF'
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  for _ in 1 2 3; do  # a free port can be taken between choosing and binding it
    PG_PORT="$(free_port)"
    if as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -o "-p $PG_PORT" \
      -w -t "$WAIT_SECONDS" start >/dev/null; then
      PGPASSWORD="$PG_PASSWORD" "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" \
        "$DB_NAME"
      return 0
    fi
  done
  echo "PostgreSQL did not start:" >&2
  cat "$PG_DIR/server.log" >&2
  return 1
}

start_redis() {
  REDIS_PASSWORD="$(random_password)"
  for _ in 1 2 3; do
    REDIS_PORT="$(free_port)"
    cat > "$REDIS_DIR/redis.conf" <<EOF
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
requirepass $REDIS_PASSWORD
dir $REDIS_DIR
save ""
appendonly no
logfile $REDIS_DIR/redis.log
EOF
    redis-server "$REDIS_DIR/redis.conf" </dev/null &
    REDIS_PID=$!
    for _ in $(seq $((WAIT_SECONDS * 10))); do
      if [ "$(REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping \
        2>/dev/null)" = PONG ]; then
        return 0
      fi
      kill -0 "$REDIS_PID" 2>/dev/null || break  # exited: the port was taken, try another
      sleep 0.1
    done
    kill -9 "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=
  done
  echo "Redis did not start:" >&2
  cat "$REDIS_DIR/redis.log" >&2
  return 1
}

start_postgres
start_redis
export DATABASE_URL="postgres://$DB_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$DB_NAME"
export REDIS_URL="redis://default:$REDIS_PASSWORD@127.0.0.1:$REDIS_PORT/0"
export CACHE_URL="redis://default:$REDIS_PASSWORD@127.0.0.1:$REDIS_PORT/1"
echo "services: PostgreSQL on 127.0.0.1:$PG_PORT (database $DB_NAME)," \
  "Redis on 127.0.0.1:$REDIS_PORT, data in $WORK"

# In the background, so that a signal sent to this script alone stops the command and
# the services at once (bash runs traps only between commands); with the terminal's
# stdin and the default SIGINT, which bash would otherwise ignore in a background job.
set +e
( trap - INT QUIT; exec "$@" ) <&0 &
COMMAND_PID=$!
for signal in HUP INT TERM; do
  trap "kill -$signal \$COMMAND_PID 2>/dev/null" "$signal"
done
wait "$COMMAND_PID"
status=$?
while kill -0 "$COMMAND_PID" 2>/dev/null; do  # a trapped signal interrupted the wait
  wait "$COMMAND_PID"
  status=$?
done
exit "$status"
