#!/usr/bin/env bash
# Starts throwaway Redis, PostgreSQL and MariaDB servers on loopback for the
# tests, installing Debian's packages first if they are missing. Idempotent: a
# server already answering on its port is reused. See README.md beside this.
#
#   bash tests/servers/start.sh                 # all three; writes $DIR/env.sh
#   source "${PICOCACHE_SERVERS_DIR:-/tmp/picocache-servers}/env.sh"
#   bash tests/servers/start.sh redis postgres  # only these; no env.sh, quiet
#   source tests/servers/start.sh               # runs it, then sources env.sh
#
# Ports: Redis 6390, PostgreSQL 5440, MariaDB 3310, all on 127.0.0.1 only.
# State (data, sockets, logs) lives under ${PICOCACHE_SERVERS_DIR:-/tmp/picocache-servers}.

# Sourced: run as a child (so `set -e` and the helpers stay out of the
# caller's shell), then bring env.sh into the caller.
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  bash "${BASH_SOURCE[0]}" "$@" &&
    . "${PICOCACHE_SERVERS_DIR:-/tmp/picocache-servers}/env.sh"
  return $?
fi

set -euo pipefail

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${PICOCACHE_SERVERS_DIR:-/tmp/picocache-servers}
# Other ports only for trying the scripts beside a running set; the tests
# read the URLs from env.sh.
REDIS_PORT=${PICOCACHE_REDIS_PORT:-6390}
REDIS_TLS_PORT=${PICOCACHE_REDIS_TLS_PORT:-6391}
PG_PORT=${PICOCACHE_PG_PORT:-5440}
MY_PORT=${PICOCACHE_MYSQL_PORT:-3310}
WAIT_SECS=${PICOCACHE_SERVERS_WAIT:-60}   # per server, to accept connections
# Extra server options, appended to ours (so they win), word-split: e.g.
# PICOCACHE_PG_OPTS='-c max_connections=20', PICOCACHE_MYSQL_OPTS='--max-allowed-packet=1M'.
# Only for a server this run starts (a reused one keeps its own); see instance.sh.
read -r -a PG_OPTS <<<"${PICOCACHE_PG_OPTS:-}"
read -r -a MY_OPTS <<<"${PICOCACHE_MYSQL_OPTS:-}"

log() { printf '[servers] %s\n' "$*" >&2; }
die() { printf '[servers] ERROR: %s\n' "$*" >&2; exit 1; }
show_log() { # file: its tail on stderr, to say why a server did not come up
  [ -f "$1" ] || return 0
  printf '[servers] ---- last lines of %s ----\n' "$1" >&2
  tail -n 30 "$1" >&2 || true
  printf '[servers] ----\n' >&2
}

# ---- which servers --------------------------------------------------------------
FULL=1
WANT=(redis postgres mysql)
if [ $# -gt 0 ]; then
  FULL=0
  WANT=()
  for a in "$@"; do
    case $a in
      redis) WANT+=(redis) ;;
      postgres | postgresql | pg) WANT+=(postgres) ;;
      mysql | mariadb) WANT+=(mysql) ;;
      -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
      *) die "unknown server '$a' (expected redis, postgres, mysql)" ;;
    esac
  done
fi
want() { local w; for w in "${WANT[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }

mkdir -p "$DIR"
# The postgres user must be able to reach its data dir (mktemp -d makes 0700).
chmod 755 "$DIR"
DIR=$(cd "$DIR" && pwd -P)

# One start.sh at a time per state dir (tests may run START commands in
# parallel). Servers are launched with fd 9 closed so they don't hold the lock.
exec 9>"$DIR/.lock"
flock -w 600 9 || die "could not lock $DIR/.lock within 600s"

IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_until() { # secs what command...: polls every 0.2 s, fails loudly
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then
      log "ERROR: $what did not happen within ${secs}s"
      return 1
    fi
    sleep 0.2
  done
}

# ---- packages -------------------------------------------------------------------
pg_bin_dir() { # newest /usr/lib/postgresql/N/bin that has a server
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V |
    while read -r b; do [ -x "$b/initdb" ] && [ -x "$b/pg_ctl" ] && echo "$b"; done | tail -n1)
  echo "$d"
}
mysqld_bin() {
  local c
  for c in /usr/sbin/mariadbd /usr/sbin/mysqld "$(command -v mariadbd 2>/dev/null)" \
    "$(command -v mysqld 2>/dev/null)"; do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return; }
  done
}

need=()
if want redis; then
  { command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || need+=(redis-server redis-tools)
fi
if want postgres; then
  { [ -n "$(pg_bin_dir)" ] && command -v psql; } >/dev/null 2>&1 || need+=(postgresql)
fi
if want mysql; then
  { [ -n "$(mysqld_bin)" ] && command -v mariadb-install-db; } >/dev/null 2>&1 || need+=(mariadb-server)
  { command -v mariadb && command -v mariadb-admin; } >/dev/null 2>&1 || need+=(mariadb-client)
fi
if [ ${#need[@]} -gt 0 ]; then
  [ $IS_ROOT = 1 ] || die "missing ${need[*]}: run as root to install them"
  t0=$SECONDS
  log "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Don't let the packages start their own services (on the default ports):
  # ours run on other ports from their own data dirs.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  : >"$DIR/apt.log"
  if [ "${PICOCACHE_APT_UPDATED:-0}" != 1 ]; then # .ci/run may have just done it
    apt-get update -q >>"$DIR/apt.log" 2>&1 || { show_log "$DIR/apt.log"; die "apt-get update failed"; }
  fi
  apt-get install -y -q --no-install-recommends "${need[@]}" >>"$DIR/apt.log" 2>&1 ||
    { show_log "$DIR/apt.log"; die "apt-get install ${need[*]} failed"; }
  rm -f /usr/sbin/policy-rc.d
  trap - EXIT
  log "installed in $((SECONDS - t0))s"
fi

# ---- Redis ----------------------------------------------------------------------
redis_cli() { redis-cli -h 127.0.0.1 -p $REDIS_PORT "$@"; }
redis_up() { [ "$(timeout 5 redis-cli -h 127.0.0.1 -p $REDIS_PORT ping 2>/dev/null)" = PONG ]; }
ensure_redis() {
  local t0=$SECONDS
  if redis_up; then
    log "redis: reusing the server on 127.0.0.1:$REDIS_PORT"
    return
  fi
  if port_open $REDIS_PORT; then # starting up (or loading): give it time
    wait_until "$WAIT_SECS" "redis answering PING on $REDIS_PORT" redis_up ||
      die "something listens on 127.0.0.1:$REDIS_PORT but is not a working Redis"
    return
  fi
  mkdir -p "$DIR/redis"
  # TLS as well, on REDIS_TLS_PORT, with a throwaway self-signed certificate
  # (for rediss:// URLs), when this redis-server and openssl can do it.
  local tls=()
  # (ldd's output is captured first: `ldd | grep -q` under pipefail fails
  # whenever grep exits before ldd has written everything, and then Redis
  # came up without TLS now and then.)
  local libs
  libs=$(ldd "$(command -v redis-server)" 2>/dev/null || true)
  if command -v openssl >/dev/null 2>&1 && [[ $libs == *libssl* ]]; then
    if [ ! -s "$DIR/redis/tls.crt" ]; then
      openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj /CN=localhost \
        -keyout "$DIR/redis/tls.key" -out "$DIR/redis/tls.crt" >"$DIR/redis/openssl.log" 2>&1 || true
    fi
    [ -s "$DIR/redis/tls.crt" ] && tls=(--tls-port $REDIS_TLS_PORT --tls-cert-file "$DIR/redis/tls.crt"
      --tls-key-file "$DIR/redis/tls.key" --tls-ca-cert-file "$DIR/redis/tls.crt" --tls-auth-clients no)
  fi
  redis-server --bind 127.0.0.1 --port $REDIS_PORT --save '' --appendonly no \
    --daemonize yes --dir "$DIR/redis" --logfile "$DIR/redis/redis.log" \
    --pidfile "$DIR/redis/redis.pid" --unixsocket "$DIR/redis/redis.sock" --unixsocketperm 700 \
    "${tls[@]}" 9>&- </dev/null ||
    { show_log "$DIR/redis/redis.log"; die "redis-server failed to start"; }
  wait_until "$WAIT_SECS" "redis answering PING on $REDIS_PORT" redis_up ||
    { show_log "$DIR/redis/redis.log"; die "redis did not come up"; }
  log "redis: started on 127.0.0.1:$REDIS_PORT in $((SECONDS - t0))s"
}

# ---- PostgreSQL -----------------------------------------------------------------
PGBIN=""
PGDATA="$DIR/pg"
PGRUN="$DIR/pgsock" # socket and log, owned by postgres
as_pg() { if [ $IS_ROOT = 1 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
# The superuser over TCP (trusted from 127.0.0.1 by the pg_hba.conf below).
psql_su() { as_pg psql -h 127.0.0.1 -p $PG_PORT -U postgres -d postgres -X -tAq -v ON_ERROR_STOP=1 "$@"; }
pg_up() { "$PGBIN/pg_isready" -h 127.0.0.1 -p $PG_PORT -q; }
PG_HBA="# Written by tests/servers/start.sh (throwaway test server).
local all all                trust
host  all postgres 127.0.0.1/32 trust
host  all all      127.0.0.1/32 scram-sha-256
host  all all      ::1/128      scram-sha-256"
ensure_postgres() {
  local t0=$SECONDS
  PGBIN=$(pg_bin_dir)
  [ -n "$PGBIN" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
  if [ $IS_ROOT = 1 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent postgres
  fi
  if pg_up; then
    log "postgresql: reusing the server on 127.0.0.1:$PG_PORT"
  elif port_open $PG_PORT; then
    wait_until "$WAIT_SECS" "postgresql accepting connections on $PG_PORT" pg_up ||
      die "something listens on 127.0.0.1:$PG_PORT but is not a working PostgreSQL"
  else
    mkdir -p "$PGRUN"
    [ $IS_ROOT = 1 ] && chown postgres: "$PGRUN"
    if [ ! -f "$PGDATA/PG_VERSION" ]; then
      rm -rf "$PGDATA"
      mkdir -p "$PGDATA"
      [ $IS_ROOT = 1 ] && chown postgres: "$PGDATA"
      chmod 700 "$PGDATA"
      as_pg test -w "$PGDATA" ||
        die "user postgres cannot write $PGDATA (is a parent directory private?)"
      as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 --no-sync --no-instructions \
        >"$PGRUN/initdb.log" 2>&1 || { show_log "$PGRUN/initdb.log"; die "initdb failed"; }
    fi
    printf '%s\n' "$PG_HBA" >"$PGDATA/pg_hba.conf"
    [ $IS_ROOT = 1 ] && chown postgres: "$PGDATA/pg_hba.conf"
    # A postmaster killed with SIGKILL leaves postmaster.pid behind and, until
    # its parent reaps it, a zombie with that pid, which PostgreSQL takes for
    # a running server ("lock file already exists"): such a file is removed.
    # Its orphaned backends exit on their own; until they have, pg_ctl fails
    # ("shared memory block still in use"), so it is tried a few times.
    local oldpid state tries=0
    if [ -f "$PGDATA/postmaster.pid" ]; then
      oldpid=$(head -n 1 "$PGDATA/postmaster.pid")
      state=$(awk '{print $3}' "/proc/$oldpid/stat" 2>/dev/null || true)
      if [ -z "$state" ] || [ "$state" = Z ]; then
        rm -f "$PGDATA/postmaster.pid"
      fi
    fi
    # pg_ctl runs the postmaster in its own session, so it outlives us.
    until as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGRUN/pg.log" -w -t "$WAIT_SECS" \
      -o "-h 127.0.0.1 -p $PG_PORT -k $PGRUN -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 ${PG_OPTS[*]}" \
      start >/dev/null 9>&- </dev/null; do
      tries=$((tries + 1))
      [ $tries -lt 5 ] || { show_log "$PGRUN/pg.log"; die "pg_ctl start failed"; }
      sleep 1
    done
    wait_until "$WAIT_SECS" "postgresql accepting connections on $PG_PORT" pg_up ||
      { show_log "$PGRUN/pg.log"; die "postgresql did not come up"; }
    log "postgresql: started on 127.0.0.1:$PG_PORT in $((SECONDS - t0))s"
  fi
  psql_su -c 'SELECT 1' >/dev/null ||
    die "cannot log in as postgres over 127.0.0.1:$PG_PORT (a server this script did not set up?)"
  PG_ACTUAL_DATA=$(psql_su -c 'SHOW data_directory')
  # Bring an older cluster of ours to the same authentication rules.
  if [ -w "$PG_ACTUAL_DATA/pg_hba.conf" ] &&
    [ "$(cat "$PG_ACTUAL_DATA/pg_hba.conf")" != "$PG_HBA" ]; then
    printf '%s\n' "$PG_HBA" >"$PG_ACTUAL_DATA/pg_hba.conf"
    psql_su -c 'SELECT pg_reload_conf()' >/dev/null
  fi
  if [ "$(psql_su -c "SELECT 1 FROM pg_roles WHERE rolname='picocache'")" != 1 ]; then
    psql_su -c "CREATE ROLE picocache LOGIN PASSWORD 'picocache'"
  else
    psql_su -c "ALTER ROLE picocache LOGIN PASSWORD 'picocache'"
  fi
  if [ "$(psql_su -c "SELECT 1 FROM pg_database WHERE datname='picocache'")" != 1 ]; then
    psql_su -c "CREATE DATABASE picocache OWNER picocache"
  fi
  PGPASSWORD=picocache psql "postgresql://picocache@127.0.0.1:$PG_PORT/picocache" -X -tAq \
    -c 'SELECT 1' >/dev/null || die "postgresql: picocache cannot log in with its password"
}

# ---- MariaDB --------------------------------------------------------------------
MYDATA="$DIR/mysql"
MYSOCK="$DIR/mysql.sock"
MYPID="$DIR/mysql.pid"
MYLOG="$DIR/mysql.log"
my_user() { mariadb -h 127.0.0.1 -P $MY_PORT -u picocache -ppicocache --connect-timeout=5 -N -B "$@"; }
my_up() { my_user -e 'SELECT 1' picocache; }
my_root() { mariadb --socket="$1" -u root --connect-timeout=5 -N -B "${@:2}"; }
my_initialised() { [ -e "$MYDATA/.initialised" ] || [ -e "$MYDATA/mysql/global_priv.frm" ]; }
my_setup() { # socket: creates the database and the user, idempotently
  my_root "$1" -e "
    CREATE DATABASE IF NOT EXISTS picocache CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
    ALTER DATABASE picocache CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
    CREATE USER IF NOT EXISTS 'picocache'@'127.0.0.1' IDENTIFIED BY 'picocache';
    CREATE USER IF NOT EXISTS 'picocache'@'localhost' IDENTIFIED BY 'picocache';
    CREATE USER IF NOT EXISTS 'picocache'@'::1' IDENTIFIED BY 'picocache';
    ALTER USER 'picocache'@'127.0.0.1' IDENTIFIED BY 'picocache';
    ALTER USER 'picocache'@'localhost' IDENTIFIED BY 'picocache';
    ALTER USER 'picocache'@'::1' IDENTIFIED BY 'picocache';
    GRANT ALL ON picocache.* TO 'picocache'@'127.0.0.1';
    GRANT ALL ON picocache.* TO 'picocache'@'localhost';
    GRANT ALL ON picocache.* TO 'picocache'@'::1';
    FLUSH PRIVILEGES;"
}
ensure_mysql() {
  local t0=$SECONDS mysqld
  if my_up >/dev/null 2>&1; then
    log "mariadb: reusing the server on 127.0.0.1:$MY_PORT"
    return
  fi
  if port_open $MY_PORT; then
    # Up (or starting) without our user: set it up through our socket.
    wait_until "$WAIT_SECS" "mariadb answering on $MY_PORT" my_root "$MYSOCK" -e 'SELECT 1' ||
      die "something listens on 127.0.0.1:$MY_PORT, and root cannot log in through $MYSOCK"
  else
    mysqld=$(mysqld_bin)
    [ -n "$mysqld" ] || die "no mariadbd/mysqld binary"
    if ! my_initialised; then
      rm -rf "$MYDATA"
      mkdir -p "$MYDATA"
      local as_user=()
      [ $IS_ROOT = 1 ] && as_user=(--user=root)
      mariadb-install-db --no-defaults "${as_user[@]}" --datadir="$MYDATA" \
        --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
        >"$DIR/mysql-install.log" 2>&1 ||
        { show_log "$DIR/mysql-install.log"; die "mariadb-install-db failed"; }
      touch "$MYDATA/.initialised"
    fi
    local as_user=()
    [ $IS_ROOT = 1 ] && as_user=(--user=root)
    # setsid: its own session, so that killing the caller's process group
    # (a test harness, a shell tool) does not take the server down with it.
    setsid -f "$mysqld" --no-defaults "${as_user[@]}" --datadir="$MYDATA" \
      --bind-address=127.0.0.1 --port=$MY_PORT --socket="$MYSOCK" --pid-file="$MYPID" \
      --log-error="$MYLOG" --skip-name-resolve --skip-log-bin \
      --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
      --innodb-flush-log-at-trx-commit=0 --max-connections=300 ${MY_OPTS[@]+"${MY_OPTS[@]}"} \
      </dev/null >>"$DIR/mysql.out" 2>&1 9>&-
    wait_until "$WAIT_SECS" "mariadb answering on $MYSOCK" my_root "$MYSOCK" -e 'SELECT 1' ||
      { show_log "$MYLOG"; show_log "$DIR/mysql.out"; die "mariadb did not come up"; }
    log "mariadb: started on 127.0.0.1:$MY_PORT in $((SECONDS - t0))s"
  fi
  my_setup "$MYSOCK" || die "mariadb: could not create the picocache database and user"
  wait_until "$WAIT_SECS" "mariadb login as picocache over 127.0.0.1:$MY_PORT" my_up ||
    die "mariadb: picocache cannot log in over TCP with its password"
}

want redis && ensure_redis
want postgres && ensure_postgres
want mysql && ensure_mysql

[ $FULL = 1 ] || exit 0

# ---- env file -------------------------------------------------------------------
# A reused server may live in another state dir: its stop/start commands then
# point there, so that a restart keeps its data.
state_dir_of() { # data dir, expected basename
  local d=${1%/}
  if [ "$(basename "$d")" = "$2" ]; then dirname "$d"; else echo "$DIR"; fi
}
PG_DIR=$(state_dir_of "$PG_ACTUAL_DATA" pg)
MY_DIR=$(state_dir_of "$(my_user -e 'SELECT @@datadir')" mysql)
for d in "$PG_DIR" "$MY_DIR"; do
  [ "$d" = "$DIR" ] || log "note: a reused server keeps its state in $d, not $DIR"
done
cmd() { # state dir, script, server -> a command line for sh -c
  printf 'PICOCACHE_SERVERS_DIR=%q ' "$1"
  [ "$REDIS_PORT" = 6390 ] || printf 'PICOCACHE_REDIS_PORT=%s ' "$REDIS_PORT"
  [ "$REDIS_TLS_PORT" = 6391 ] || printf 'PICOCACHE_REDIS_TLS_PORT=%s ' "$REDIS_TLS_PORT"
  [ "$PG_PORT" = 5440 ] || printf 'PICOCACHE_PG_PORT=%s ' "$PG_PORT"
  [ "$MY_PORT" = 3310 ] || printf 'PICOCACHE_MYSQL_PORT=%s ' "$MY_PORT"
  printf 'bash %q %s' "$SELF_DIR/$2" "$3"
}
sq() { local q="'\\''"; printf "'%s'" "${1//\'/$q}"; } # single-quoted for sh
tmp=$(mktemp "$DIR/env.sh.XXXXXX")
{
  echo "# Written by tests/servers/start.sh; source it."
  echo "export PICOCACHE_SERVERS_DIR=$(sq "$DIR")"
  echo "export PICOCACHE_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
  # (The certificate is self-signed: #insecure skips its verification.)
  if [ -S "$DIR/redis/redis.sock" ]; then
    echo "export PICOCACHE_REDIS_SOCKET_URL=$(sq "unix://$DIR/redis/redis.sock")"
  fi
  if port_open $REDIS_TLS_PORT; then
    echo "export PICOCACHE_REDIS_TLS_URL='rediss://127.0.0.1:$REDIS_TLS_PORT/0#insecure'"
  fi
  echo "export PICOCACHE_POSTGRES_URL=postgresql://picocache:picocache@127.0.0.1:$PG_PORT/picocache"
  echo "export PICOCACHE_MYSQL_URL=mysql://picocache:picocache@127.0.0.1:$MY_PORT/picocache"
  echo "# Each STOP returns once the server has exited; each START once it accepts"
  echo "# connections again. Run them with: sh -c \"\$PICOCACHE_REDIS_STOP\""
  echo "export PICOCACHE_REDIS_STOP=$(sq "$(cmd "$DIR" stop.sh redis)")"
  echo "export PICOCACHE_REDIS_START=$(sq "$(cmd "$DIR" start.sh redis)")"
  echo "export PICOCACHE_POSTGRES_STOP=$(sq "$(cmd "$PG_DIR" stop.sh postgres)")"
  echo "export PICOCACHE_POSTGRES_START=$(sq "$(cmd "$PG_DIR" start.sh postgres)")"
  echo "export PICOCACHE_MYSQL_STOP=$(sq "$(cmd "$MY_DIR" stop.sh mysql)")"
  echo "export PICOCACHE_MYSQL_START=$(sq "$(cmd "$MY_DIR" start.sh mysql)")"
} >"$tmp"
chmod 644 "$tmp"
mv -f "$tmp" "$DIR/env.sh"

echo "redis      $(redis_cli info server | tr -d '\r' | sed -n 's/^redis_version://p') on 127.0.0.1:$REDIS_PORT"
echo "postgresql $(psql_su -c 'SHOW server_version') on 127.0.0.1:$PG_PORT"
echo "mariadb    $(my_user -e 'SELECT VERSION()') on 127.0.0.1:$MY_PORT"
echo "env:       source $DIR/env.sh"
