#!/usr/bin/env bash
# Stops what tests/services/start.sh DIR started.
set -uo pipefail
dir=${1:-/tmp/berth-services}
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -f "$dir/pg/PG_VERSION" ]; then
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/pg" -m fast stop >/dev/null 2>&1
  else "$pgbin/pg_ctl" -D "$dir/pg" -m fast stop >/dev/null 2>&1; fi
fi
[ -f "$dir/garage/pid" ] && kill "$(cat "$dir/garage/pid")" 2>/dev/null
true
