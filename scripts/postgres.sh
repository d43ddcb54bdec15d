#!/usr/bin/env bash
# PostgreSQL for the tests, at their default DIALTONE_TEST_POSTGRES_URL,
# postgres://postgres@127.0.0.1:5432/test. Run after scripts/setup.sh (psql), as root.
#
# A server already answering on 127.0.0.1:5432 is left as it is. Where none answers, Debian's
# PostgreSQL is installed (scripts/setup.sh) and its cluster on port 5432 started with
# pg_ctlcluster (no systemd needed), after letting the postgres role into the test database from
# 127.0.0.1 without a password. Either way the test database is created if missing, and the
# script fails unless the URL then answers. With DIALTONE_TEST_POSTGRES_URL set, the tests use
# that database and nothing is done here.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${DIALTONE_TEST_POSTGRES_URL:-}" ]; then
  echo "postgres: the tests use DIALTONE_TEST_POSTGRES_URL; nothing to set up"
  exit 0
fi

url=postgres://postgres@127.0.0.1:5432/test
port=5432

answers() { (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; }

# As the postgres user, over the cluster's Unix socket (Debian's peer authentication).
as_postgres() { (cd / && runuser -u postgres -- "$@"); }

start_cluster() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "postgres: no PostgreSQL answers on 127.0.0.1:$port; run as root to set one up" >&2
    exit 1
  fi
  scripts/setup.sh postgresql
  local cluster version name
  cluster=$(pg_lsclusters --no-header | awk -v port="$port" '$3 == port { print $1, $2; exit }')
  if [ -z "$cluster" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    echo "postgres: creating cluster $version/main on port $port"
    pg_createcluster "$version" main --port "$port"
    cluster="$version main"
  fi
  read -r version name <<< "$cluster"
  local hba="/etc/postgresql/$version/$name/pg_hba.conf"
  local rule="host test postgres 127.0.0.1/32 trust"
  if ! grep -qxF "$rule" "$hba"; then
    # The first matching line decides: ahead of Debian's host lines, which want a password.
    echo "postgres: $hba: $rule"
    sed -i "1i # scripts/postgres.sh: the tests' database, from this machine only\\n$rule" "$hba"
  fi
  echo "postgres: starting cluster $version/$name"
  pg_ctlcluster "$version" "$name" start
  for _ in $(seq 60); do
    if answers; then
      return
    fi
    sleep 0.5
  done
  echo "postgres: cluster $version/$name does not answer on 127.0.0.1:$port" >&2
  exit 1
}

if answers; then
  echo "postgres: a server answers on 127.0.0.1:$port; leaving it as it is"
else
  start_cluster
fi

if ! psql "$url" -Atqc 'SELECT 1' > /dev/null 2>&1; then
  exists=$(as_postgres psql -p "$port" -d postgres -Atqc \
    "SELECT 1 FROM pg_database WHERE datname = 'test'" || true)
  if [ "$exists" != 1 ]; then
    echo "postgres: creating the test database"
    as_postgres createdb -p "$port" test || true
  fi
fi
if ! why=$(psql "$url" -Atqc 'SELECT 1' 2>&1); then
  echo "postgres: $url does not answer: $why" >&2
  echo "postgres: set DIALTONE_TEST_POSTGRES_URL to a database the tests may use" >&2
  exit 1
fi
echo "postgres: $url answers"
