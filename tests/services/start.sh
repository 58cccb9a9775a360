#!/usr/bin/env bash
# Starts the real servers the PostgreSQL and S3 tests run against, on loopback, and
# writes their addresses as shell assignments to DIR/env (default /tmp/berth-services):
#
#   BERTH_TEST_POSTGRES_URL  a PostgreSQL 15 superuser URL (tests create a database each)
#   BERTH_TEST_POSTGRES_BIN  PostgreSQL's bin directory (the outage tests run a private
#                            server, since they stop it)
#   BERTH_TEST_S3_*          a single-node Garage S3 endpoint with one bucket and key
#                            (tests use a key prefix each)
#
# Idempotent: servers already running from DIR are kept. `tests/services/stop.sh DIR`
# stops them. PostgreSQL comes from Debian (tests/e2e/install.sh installs it), Garage
# from crates.io (built once into ~/.cache/berth-ci/tools by install.sh).
set -euo pipefail
dir=${1:-/tmp/berth-services}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pg_port=${BERTH_TEST_PG_PORT:-55432}
s3_port=${BERTH_TEST_S3_PORT:-39000}
rpc_port=$((s3_port + 1))
garage=${GARAGE_BIN:-$(command -v garage || echo "$HOME/.cache/berth-ci/tools/bin/garage")}

listening() { ss -ltn 2>/dev/null | awk -v a="127.0.0.1:$1" '$4 == a {found = 1} END {exit !found}'; }

# --- PostgreSQL: initdb and pg_ctl as the `postgres` user (initdb refuses root) ---
# A server another DIR started on the same port is used as it is (one machine, several
# worktrees); BERTH_TEST_SKIP_PG=1 leaves PostgreSQL out altogether.
pgdata=$dir/pg
if [ "${BERTH_TEST_SKIP_PG:-}" = 1 ]; then
  pg_mode=skip
elif [ ! -f "$pgdata/PG_VERSION" ] && listening "$pg_port"; then
  pg_mode=shared
  echo "start.sh: PostgreSQL already listening on 127.0.0.1:$pg_port (another DIR); using it" >&2
else
  pg_mode=own
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "$pg_mode" = own ]; then
[ -x "$pgbin/initdb" ] || { echo "start.sh: PostgreSQL server not installed (apt-get install postgresql)" >&2; exit 1; }
if [ ! -f "$pgdata/PG_VERSION" ]; then
  mkdir -p "$pgdata"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir" "$pgdata"
  as_pg "$pgbin/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log"
  # Tests are many short-lived servers, each with a pool: allow plenty of connections.
  # fsync stays on: the durability tests mean what they say.
  cat >>"$pgdata/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$dir'
max_connections = 400
shared_buffers = 128MB
CONF
fi
if ! as_pg "$pgbin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
  as_pg "$pgbin/pg_ctl" -D "$pgdata" -l "$dir/postgres.log" -w -t 60 start >/dev/null
fi
as_pg "$pgbin/psql" -h "$dir" -p "$pg_port" -U postgres -qtAc \
  "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'berth') THEN CREATE ROLE berth LOGIN SUPERUSER PASSWORD 'berth'; END IF; END\$\$;"
[ "$(as_pg "$pgbin/psql" -h "$dir" -p "$pg_port" -U postgres -qtAc "SELECT 1 FROM pg_database WHERE datname = 'berth'")" = 1 ] \
  || as_pg "$pgbin/createdb" -h "$dir" -p "$pg_port" -U postgres -O berth berth
fi

# --- Garage: one node, replication factor 1, SQLite metadata ---
[ -x "$garage" ] || { echo "start.sh: garage not found (tests/e2e/install.sh builds it)" >&2; exit 1; }
gdir=$dir/garage
mkdir -p "$gdir/meta" "$gdir/data"
cat >"$gdir/garage.toml" <<CONF
metadata_dir = "$gdir/meta"
data_dir = "$gdir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(printf '%064d' 0 | tr 0 b)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"
CONF
g() { "$garage" -c "$gdir/garage.toml" "$@"; }
if ! { [ -f "$gdir/pid" ] && kill -0 "$(cat "$gdir/pid")" 2>/dev/null; }; then
  RUST_LOG=warn nohup "$garage" -c "$gdir/garage.toml" server >"$gdir/garage.log" 2>&1 &
  echo $! >"$gdir/pid"
fi
for _ in $(seq 1 100); do g status >/dev/null 2>&1 && break; sleep 0.2; done
node=$(g node id -q 2>/dev/null | cut -d@ -f1)
[ -n "$node" ] || { echo "start.sh: garage did not start; $gdir/garage.log:" >&2; tail -20 "$gdir/garage.log" >&2; exit 1; }
# (Captured first: with pipefail, `grep -q` closing the pipe early fails the pipeline.)
layout=$(g layout show 2>/dev/null || true)
if grep -q "No nodes currently have a role" <<<"$layout"; then
  g layout assign -z dc1 -c 10G "$node" >/dev/null
  g layout apply --version 1 >/dev/null
fi
key_id=GK$(printf '%024d' 0 | tr 0 a)
secret=$(printf '%064d' 0 | tr 0 c)
g key info "$key_id" >/dev/null 2>&1 || g key import --yes -n berth-test "$key_id" "$secret" >/dev/null
g bucket info berth-test >/dev/null 2>&1 || g bucket create berth-test >/dev/null
g bucket allow --read --write --owner berth-test --key "$key_id" >/dev/null

{
[ "$pg_mode" = skip ] || echo "export BERTH_TEST_POSTGRES_URL=postgres://berth:berth@127.0.0.1:$pg_port/berth"
[ "$pg_mode" = skip ] || echo "export BERTH_TEST_POSTGRES_BIN=$pgbin"
cat <<ENV
export BERTH_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port
export BERTH_TEST_S3_REGION=garage
export BERTH_TEST_S3_BUCKET=berth-test
export BERTH_TEST_S3_ACCESS_KEY_ID=$key_id
export BERTH_TEST_S3_SECRET_ACCESS_KEY=$secret
ENV
} >"$dir/env"
echo "services: PostgreSQL on 127.0.0.1:$pg_port, Garage S3 on 127.0.0.1:$s3_port ($dir/env)"
