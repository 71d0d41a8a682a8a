#!/usr/bin/env bash
# Builds the Python package (picocache/python) into .venv and runs its pytest
# suite against the servers of tests/servers/start.sh (URLs from
# /tmp/picocache-servers/env.sh or $PICOCACHE_SERVERS_DIR/env.sh if present).
set -euo pipefail
cd "$(dirname "$0")/.."
for env in "${PICOCACHE_SERVERS_DIR:-/nonexistent}/env.sh" /tmp/picocache-servers/env.sh; do
  if [ -f "$env" ]; then
    # shellcheck disable=SC1090
    source "$env"
    break
  fi
done
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r tests/requirements.txt
fi
export VIRTUAL_ENV="$PWD/.venv"
echo "[python-test] building picocache (maturin develop --release)"
(cd picocache/python && ../../.venv/bin/maturin develop --release -q)
echo "[python-test] redis=${PICOCACHE_REDIS_URL:-UNSET} postgres=${PICOCACHE_POSTGRES_URL:+set} mysql=${PICOCACHE_MYSQL_URL:+set}"
cd picocache/python
exec ../../.venv/bin/python -m pytest -rs -q tests "$@"
