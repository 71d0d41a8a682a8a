#!/usr/bin/env bash
# Stops the servers of tests/servers/start.sh (all three, or those named:
# redis, postgres, mysql), and returns once each has exited. A server that is
# not running is fine. Data stays in ${PICOCACHE_SERVERS_DIR:-/tmp/picocache-servers};
# delete that directory for a clean slate.
set -euo pipefail

DIR=${PICOCACHE_SERVERS_DIR:-/tmp/picocache-servers}
REDIS_PORT=${PICOCACHE_REDIS_PORT:-6390}
PG_PORT=${PICOCACHE_PG_PORT:-5440}
MY_PORT=${PICOCACHE_MYSQL_PORT:-3310}
WAIT_SECS=${PICOCACHE_SERVERS_WAIT:-60}

log() { printf '[servers] %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1
as_pg() { if [ $IS_ROOT = 1 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

WANT=("$@")
[ $# -gt 0 ] || WANT=(redis postgres mysql)

# Waits until the process is gone and the port refuses connections; after
# WAIT_SECS, kills the process (a throwaway server) and says so.
wait_gone() { # name pid port
  local name=$1 pid=$2 port=$3 end=$((SECONDS + WAIT_SECS))
  while { [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; } || port_open "$port"; do
    if ((SECONDS >= end)); then
      if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        log "WARNING: $name (pid $pid) still running after ${WAIT_SECS}s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
      fi
      port_open "$port" && { log "ERROR: 127.0.0.1:$port still open"; return 1; }
      return 0
    fi
    sleep 0.1
  done
}

stop_redis() {
  port_open $REDIS_PORT || return 0
  local pid
  pid=$(timeout 5 redis-cli -h 127.0.0.1 -p $REDIS_PORT info server 2>/dev/null | tr -d '\r' |
    sed -n 's/^process_id://p')
  timeout 10 redis-cli -h 127.0.0.1 -p $REDIS_PORT shutdown nosave >/dev/null 2>&1 || true
  wait_gone redis "$pid" $REDIS_PORT
}

stop_postgres() {
  port_open $PG_PORT || return 0
  local pgbin data pid
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  # The data dir of whatever runs on the port (it may be another state dir's).
  data=$(as_pg psql -h 127.0.0.1 -p $PG_PORT -U postgres -d postgres -X -tAq \
    -c 'SHOW data_directory' 2>/dev/null) || data="$DIR/pg"
  pid=$(head -n1 "$data/postmaster.pid" 2>/dev/null) || pid=""
  as_pg "$pgbin/pg_ctl" -D "$data" -m fast -w -t "$WAIT_SECS" stop >/dev/null 2>&1 ||
    { [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null; } || true
  wait_gone postgresql "$pid" $PG_PORT
}

stop_mysql() {
  port_open $MY_PORT || return 0
  local sock="$DIR/mysql.sock" pidfile pid
  if ! mariadb --socket="$sock" -u root -N -B -e 'SELECT 1' >/dev/null 2>&1; then
    # Another state dir's server: ask it where its socket is.
    sock=$(mariadb -h 127.0.0.1 -P $MY_PORT -u picocache -ppicocache -N -B \
      -e 'SELECT @@socket' 2>/dev/null) || sock=""
  fi
  pidfile=$(mariadb --socket="$sock" -u root -N -B -e 'SELECT @@pid_file' 2>/dev/null) ||
    pidfile="$DIR/mysql.pid"
  pid=$(cat "$pidfile" 2>/dev/null) || pid=""
  mariadb-admin --socket="$sock" -u root shutdown >/dev/null 2>&1 ||
    { [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; } || true
  wait_gone mariadb "$pid" $MY_PORT
}

rc=0
for s in "${WANT[@]}"; do
  case $s in
    redis) stop_redis || rc=1 ;;
    postgres | postgresql | pg) stop_postgres || rc=1 ;;
    mysql | mariadb) stop_mysql || rc=1 ;;
    *) log "unknown server '$s' (expected redis, postgres, mysql)"; rc=1 ;;
  esac
done
exit $rc
