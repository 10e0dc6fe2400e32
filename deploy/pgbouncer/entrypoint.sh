#!/bin/sh
# Render the template from the environment, write the auth file, run PgBouncer in the
# foreground (it is PID 1: SIGINT is its "safe shutdown", SIGTERM its immediate one).
set -eu
: "${PGBOUNCER_AUTH_FILE:=/tmp/pgbouncer-users.txt}"
export PGBOUNCER_AUTH_FILE
if [ -n "${PGBOUNCER_USER:-}" ]; then
  printf '"%s" "%s"\n' "$PGBOUNCER_USER" "${PGBOUNCER_PASSWORD:-}" > "$PGBOUNCER_AUTH_FILE"
fi
envsubst < /etc/pgbouncer/pgbouncer.ini.template > /tmp/pgbouncer.ini
exec pgbouncer /tmp/pgbouncer.ini
