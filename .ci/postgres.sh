#!/usr/bin/env bash
# A PostgreSQL server on loopback for the distributed-search tests (tests/tuner/test_distributed.py).
# Idempotent; for Debian 12 as root without systemd (uses pg_ctlcluster). Installs PostgreSQL if
# missing, starts the cluster on 127.0.0.1 only, creates role and database `fft`, and prints the
# connection URL on stdout (everything else goes to stderr):
#     export FEATHERFACE_TEST_PG_URL="$(bash .ci/postgres.sh)"
# Port: $FFT_PG_PORT (default 5432).
#     bash .ci/postgres.sh --stop    # stops the cluster again, if this script started it
set -euo pipefail
exec 3>&1 1>&2
STARTED_MARK=/tmp/featherface-tune-postgres.started

if [ "${1:-}" = "--stop" ]; then
  if [ -f "$STARTED_MARK" ]; then
    pg_ctlcluster "$(cat "$STARTED_MARK")" main stop </dev/null 3>&- || true
    rm -f "$STARTED_MARK"
  fi
  exit 0
fi

PORT="${FFT_PG_PORT:-5432}"
ROLE=fft
PASSWORD=fft
DB=fft

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "installing postgresql..."
  # fd 3 closed and output to a log: a service that a package script might start must not hold the
  # caller's pipes (Docker-style images forbid such starts with policy-rc.d; others may not)
  LOG="$(mktemp)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } \
      </dev/null >"$LOG" 2>&1 3>&-; then
    tail -n 20 "$LOG"
    exit 1
  fi
  rm -f "$LOG"
fi

VER="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$VER main"; then
  pg_createcluster "$VER" main --port "$PORT" >/dev/null
fi

STATUS="$(pg_lsclusters -h | awk -v v="$VER" '$1==v && $2=="main" {print $4}')"
if [ "$STATUS" != "online" ]; then
  # loopback only; password logins over TCP (pg_hba's default host rules use scram-sha-256)
  CONF="/etc/postgresql/$VER/main/conf.d"
  mkdir -p "$CONF"
  printf "listen_addresses = '127.0.0.1'\nport = %s\nmax_connections = 200\n" "$PORT" > "$CONF/featherface-tune.conf"
  chown -R postgres:postgres "$CONF"
  mkdir -p /var/run/postgresql && chown postgres:postgres /var/run/postgresql
  # The server is a daemon: it must not inherit this script's descriptors. fd 3 is the pipe of the
  # caller's "$(...)", and a daemon holding it open makes that substitution wait forever (CI hung
  # there once). python3's subprocess closes every descriptor above 2 by default.
  LOG="$(mktemp)"
  if ! python3 -c 'import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=subprocess.STDOUT))' \
      pg_ctlcluster "$VER" main start >"$LOG" 3>&-; then
    cat "$LOG"
    exit 1
  fi
  rm -f "$LOG"
  echo "$VER" > "$STARTED_MARK"
fi
PORT="$(pg_lsclusters -h | awk -v v="$VER" '$1==v && $2=="main" {print $3}')"

for _ in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p "$PORT" && break
  sleep 1
done
pg_isready -h 127.0.0.1 -p "$PORT"

psql_as_postgres() { su postgres -s /bin/sh -c "psql -X -q -v ON_ERROR_STOP=1 -p $PORT -h /var/run/postgresql $*"; }
psql_as_postgres "-d postgres" <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') THEN
    CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD';
  END IF;
END
\$\$;
SQL
if ! psql_as_postgres "-d postgres -tA -c \"SELECT 1 FROM pg_database WHERE datname = '$DB'\"" | grep -q 1; then
  psql_as_postgres "-d postgres -c \"CREATE DATABASE $DB OWNER $ROLE\""
fi

echo "postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB" >&3
