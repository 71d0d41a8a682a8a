#!/usr/bin/env bash
# Stops the servers started by tests/servers/start.sh.
DIR=${PICOCACHE_SERVERS_DIR:-/tmp/picocache-servers}
[ -f "$DIR/env.sh" ] || exit 0
# shellcheck disable=SC1091
source "$DIR/env.sh"
sh -c "$PICOCACHE_REDIS_STOP" >/dev/null 2>&1 || true
sh -c "$PICOCACHE_POSTGRES_STOP" >/dev/null 2>&1 || true
sh -c "$PICOCACHE_MYSQL_STOP" >/dev/null 2>&1 || true
