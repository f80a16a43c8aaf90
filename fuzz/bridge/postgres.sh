#!/usr/bin/env bash
# A throwaway Postgres for the bridge fuzz targets.
#   postgres.sh start DIR   initdb (if DIR has no cluster) and start on a free loopback port;
#                           prints the DATABASE_URL to use
#   postgres.sh stop DIR    stop it (delete DIR yourself)
# initdb refuses root: as root the cluster runs as the unprivileged user meshlite-pg (the test
# harness's user, created here if missing). Needs initdb/pg_ctl of Postgres 14+ on PATH (or
# PG_BIN); `apt-get install postgresql-15` has them under /usr/lib/postgresql/15/bin.
set -euo pipefail
cmd=${1:?usage: postgres.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: postgres.sh start|stop DIR}")
bin=${PG_BIN:-$(dirname "$(command -v initdb || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")}
as_pg=()
if [ "$(id -u)" = 0 ]; then
  id meshlite-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin meshlite-pg
  as_pg=(setpriv --reuid="$(id -u meshlite-pg)" --regid="$(id -g meshlite-pg)" --clear-groups --)
fi
case $cmd in
  start)
    mkdir -p "$dir"
    [ ${#as_pg[@]} -eq 0 ] || chown meshlite-pg: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      "${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C >/dev/null
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "${as_pg[@]}" "$bin/pg_ctl" start -D "$dir/data" -l "$dir/postgres.log" -w -o \
      "-p $port -c listen_addresses=127.0.0.1 -k $dir -c fsync=off -c full_page_writes=off" >/dev/null
    echo "postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
    ;;
  stop)
    "${as_pg[@]}" "$bin/pg_ctl" stop -D "$dir/data" -m fast >/dev/null
    ;;
  *) echo "usage: postgres.sh start|stop DIR" >&2; exit 2 ;;
esac
