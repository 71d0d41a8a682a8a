#!/usr/bin/env bash
# Starts throwaway Redis, PostgreSQL and MariaDB servers on loopback for the
# tests, installing Debian's packages first if they are missing. Idempotent: a
# server already answering on its port is reused.
#
#   bash tests/servers/start.sh          # start, print versions
#   source "$PICOCACHE_SERVERS_DIR/env.sh"   # then: URLs and stop/start commands
#
# Ports: Redis 6390, PostgreSQL 5440, MariaDB 3310. Data lives under
# ${PICOCACHE_SERVERS_DIR:-/tmp/picocache-servers}.
set -euo pipefail

DIR=${PICOCACHE_SERVERS_DIR:-/tmp/picocache-servers}
REDIS_PORT=6390
PG_PORT=5440
MY_PORT=3310
mkdir -p "$DIR"
log() { printf '[servers] %s\n' "$*" >&2; }

need=()
command -v redis-server >/dev/null || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v mariadbd >/dev/null || command -v mysqld >/dev/null || need+=(mariadb-server)
command -v mariadb >/dev/null || need+=(mariadb-client)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts the packaged services on install; ours run on other ports.
fi

PGBIN=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)")
MYSQLD=$(command -v mariadbd || command -v mysqld || ls /usr/sbin/mariadbd 2>/dev/null || echo /usr/sbin/mysqld)
[ -x "$MYSQLD" ] || MYSQLD=/usr/sbin/mariadbd
id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres

wait_for() { # name, command
  local name=$1; shift
  for _ in $(seq 1 150); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "ERROR: $name did not come up"; return 1
}

# ---- Redis -------------------------------------------------------------------
redis_up() { redis-cli -h 127.0.0.1 -p $REDIS_PORT ping | grep -q PONG; }
redis_start() {
  mkdir -p "$DIR/redis"
  redis-server --bind 127.0.0.1 --port $REDIS_PORT --save '' --appendonly no \
    --daemonize yes --dir "$DIR/redis" --logfile "$DIR/redis/redis.log" \
    --pidfile "$DIR/redis/redis.pid"
  wait_for redis redis_up
}
redis_up >/dev/null 2>&1 || redis_start

# ---- PostgreSQL --------------------------------------------------------------
PGDATA="$DIR/pg"
pg_up() { runuser -u postgres -- "$PGBIN/pg_isready" -h 127.0.0.1 -p $PG_PORT -q; }
if ! pg_up; then
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"; chown postgres "$PGDATA"; chmod 700 "$PGDATA"
    runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres >/dev/null
  fi
  mkdir -p "$DIR/pgsock"; chown postgres "$DIR/pgsock"
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$DIR/pgsock/pg.log" -w \
    -o "-h 127.0.0.1 -p $PG_PORT -k $DIR/pgsock -c fsync=off -c max_connections=200" start >/dev/null
  wait_for postgresql pg_up
fi
psql_root() { runuser -u postgres -- psql -h 127.0.0.1 -p $PG_PORT -U postgres -tAq "$@"; }
psql_root -c "SELECT 1 FROM pg_roles WHERE rolname='picocache'" | grep -q 1 ||
  psql_root -c "CREATE ROLE picocache LOGIN PASSWORD 'picocache'"
psql_root -c "SELECT 1 FROM pg_database WHERE datname='picocache'" | grep -q 1 ||
  psql_root -c "CREATE DATABASE picocache OWNER picocache"

# ---- MariaDB -----------------------------------------------------------------
MYDATA="$DIR/mysql"
my_up() { mariadb -h 127.0.0.1 -P $MY_PORT -u picocache -ppicocache -e 'SELECT 1' picocache; }
my_root_up() { mariadb --socket="$DIR/mysql.sock" -u root -e 'SELECT 1'; }
my_start() {
  if [ ! -d "$MYDATA/mysql" ]; then
    mkdir -p "$MYDATA"
    mariadb-install-db --user=root --datadir="$MYDATA" --auth-root-authentication-method=normal \
      --skip-test-db >"$DIR/mysql-install.log" 2>&1
  fi
  nohup "$MYSQLD" --no-defaults --user=root --datadir="$MYDATA" --bind-address=127.0.0.1 \
    --port=$MY_PORT --socket="$DIR/mysql.sock" --pid-file="$DIR/mysql.pid" \
    --innodb-flush-log-at-trx-commit=0 --skip-log-bin --max-connections=300 \
    >"$DIR/mysql.log" 2>&1 &
  wait_for mariadb my_root_up
  mariadb --socket="$DIR/mysql.sock" -u root -e "
    CREATE DATABASE IF NOT EXISTS picocache;
    CREATE USER IF NOT EXISTS 'picocache'@'127.0.0.1' IDENTIFIED BY 'picocache';
    CREATE USER IF NOT EXISTS 'picocache'@'localhost' IDENTIFIED BY 'picocache';
    GRANT ALL ON picocache.* TO 'picocache'@'127.0.0.1';
    GRANT ALL ON picocache.* TO 'picocache'@'localhost';
    FLUSH PRIVILEGES;"
  wait_for mariadb my_up
}
my_up >/dev/null 2>&1 || my_start

# ---- env file ----------------------------------------------------------------
self=$(readlink -f "$0")
cat >"$DIR/env.sh" <<ENV
export PICOCACHE_SERVERS_DIR='$DIR'
export PICOCACHE_REDIS_URL='redis://127.0.0.1:$REDIS_PORT/0'
export PICOCACHE_POSTGRES_URL='postgresql://picocache:picocache@127.0.0.1:$PG_PORT/picocache'
export PICOCACHE_MYSQL_URL='mysql://picocache:picocache@127.0.0.1:$MY_PORT/picocache'
export PICOCACHE_REDIS_STOP='redis-cli -h 127.0.0.1 -p $REDIS_PORT shutdown nosave'
export PICOCACHE_REDIS_START='bash $self >/dev/null'
export PICOCACHE_POSTGRES_STOP='runuser -u postgres -- $PGBIN/pg_ctl -D $PGDATA -m fast -w stop'
export PICOCACHE_POSTGRES_START='bash $self >/dev/null'
export PICOCACHE_MYSQL_STOP='mariadb-admin --socket=$DIR/mysql.sock -u root shutdown'
export PICOCACHE_MYSQL_START='bash $self >/dev/null'
ENV

log "redis $(redis-server --version | grep -o 'v=[0-9.]*') on 127.0.0.1:$REDIS_PORT"
log "postgresql $(psql_root -c 'SHOW server_version') on 127.0.0.1:$PG_PORT"
log "mariadb $(mariadb -h 127.0.0.1 -P $MY_PORT -u picocache -ppicocache -N -e 'SELECT VERSION()') on 127.0.0.1:$MY_PORT"
log "env: source $DIR/env.sh"
