#!/usr/bin/env bash
# An extra PostgreSQL or MariaDB for one test, with its own port, state dir
# and server options, beside the shared servers of start.sh (which it never
# touches). It runs start.sh and stop.sh with their PICOCACHE_* variables.
#
#   bash tests/servers/instance.sh start postgres DIR PORT [server options...]
#   bash tests/servers/instance.sh start mysql    DIR PORT [server options...]
#   bash tests/servers/instance.sh stop  postgres|mysql DIR PORT
#
# e.g. `instance.sh start postgres /tmp/pg20 5441 -c max_connections=20`, or
# `instance.sh start mysql /tmp/my1m 3311 --max-allowed-packet=1M`. `start`
# prints the picocache user's URL on stdout once the server accepts it. DIR
# is created (and made reachable by the postgres user); delete it after
# `stop`. PORT must be free: a server already there is an error, not reused
# (it would not have these options).
#
# Exit status 77: the server's binaries are not installed (nothing is
# installed here: run start.sh once, as root, for that). A test then skips
# visibly, or fails in CI.
set -euo pipefail

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { printf '[instance] ERROR: %s\n' "$*" >&2; exit 1; }
[ $# -ge 4 ] || die "usage: instance.sh start|stop postgres|mysql DIR PORT [server options...]"
action=$1 kind=$2 dir=$3 port=$4
shift 4
[[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number, not '$port'"
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

case $kind in
  postgres | postgresql | pg)
    kind=postgres
    export PICOCACHE_PG_PORT=$port PICOCACHE_PG_OPTS="$*"
    url="postgresql://picocache:picocache@127.0.0.1:$port/picocache"
    have() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v psql >/dev/null; }
    ;;
  mysql | mariadb)
    kind=mysql
    export PICOCACHE_MYSQL_PORT=$port PICOCACHE_MYSQL_OPTS="$*"
    url="mysql://picocache:picocache@127.0.0.1:$port/picocache"
    have() {
      { [ -x /usr/sbin/mariadbd ] || [ -x /usr/sbin/mysqld ] || command -v mariadbd; } >/dev/null 2>&1 &&
        command -v mariadb-install-db >/dev/null && command -v mariadb >/dev/null
    }
    ;;
  *) die "unknown server '$kind' (expected postgres or mysql)" ;;
esac
export PICOCACHE_SERVERS_DIR=$dir

case $action in
  start)
    if ! have; then
      printf '[instance] %s is not installed (run tests/servers/start.sh as root once)\n' "$kind" >&2
      exit 77
    fi
    port_open "$port" && die "127.0.0.1:$port is taken: pick a free port for an instance with its own options"
    mkdir -p "$dir"
    bash "$SELF_DIR/start.sh" "$kind" >&2
    echo "$url"
    ;;
  stop)
    bash "$SELF_DIR/stop.sh" "$kind" >&2
    ;;
  *) die "unknown action '$action' (expected start or stop)" ;;
esac
