#!/usr/bin/env bash
# Throwaway PostgreSQL 15 clusters for development and tests.
#
#   pg_cluster.sh start DIR PORT   create (if absent) and start a cluster in DIR
#                                  on 127.0.0.1:PORT; prints its superuser URL
#   pg_cluster.sh stop DIR         stop it at once (-m immediate)
#   pg_cluster.sh free-port        print a free TCP port on 127.0.0.1
#
# A new cluster preloads pg_cron (for the `postgres` database) when it is
# installed; PG_CLUSTER_CRON=off leaves it out, for tests of a server where
# pg_cron cannot be enabled.
#
# Trust authentication on loopback only, the socket inside DIR, fsync off:
# never use this for data you want to keep. As root, DIR is handed to the
# `postgres` user, since PostgreSQL refuses to run as root.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

PG_BIN=/usr/lib/postgresql/15/bin

die() {
  printf 'pg_cluster: error: %s\n' "$*" >&2
  exit 1
}
usage() {
  sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

# Runs a command as the cluster's owner: `postgres` when we are root.
as_owner() {
  if [[ "$(id -u)" -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

cmd_start() {
  [[ $# -eq 2 ]] || usage
  local dir="$1" port="$2"
  [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
  [[ -x "$PG_BIN/postgres" ]] || die "PostgreSQL 15 is not installed (run scripts/setup.sh)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  local data="$dir/data" log="$dir/postgres.log"
  # The owner may not be allowed into the caller's working directory.
  cd "$dir"

  if [[ "$(id -u)" -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' user to run the cluster as"
    chown postgres:postgres "$dir"
    [[ ! -d "$data" ]] || chown -R postgres:postgres "$data"
    runuser -u postgres -- test -x "$dir" ||
      die "user postgres cannot reach $dir (a parent directory is not searchable)"
  fi

  if [[ ! -f "$data/PG_VERSION" ]]; then
    as_owner "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust \
      --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
      {
        cat "$dir/initdb.log" >&2
        die "initdb failed"
      }
    {
      echo
      echo "# Added by scripts/pg_cluster.sh: a throwaway cluster."
      echo "listen_addresses = '127.0.0.1'"
      echo "unix_socket_directories = '$dir'"
      echo "max_connections = 200"
      echo "fsync = off"
      echo "synchronous_commit = off"
      echo "full_page_writes = off"
      echo "shared_buffers = 64MB"
      if [[ "${PG_CLUSTER_CRON:-on}" != off && -f /usr/lib/postgresql/15/lib/pg_cron.so ]]; then
        echo "shared_preload_libraries = 'pg_cron'"
        echo "cron.database_name = 'postgres'"
      fi
    } | as_owner tee -a "$data/postgresql.conf" >/dev/null
  fi

  if as_owner "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    # Line 4 of postmaster.pid is the port the running server listens on.
    local running_port
    running_port="$(sed -n 4p "$data/postmaster.pid" 2>/dev/null || true)"
    [[ "$running_port" == "$port" ]] ||
      die "a cluster is already running in $dir on port ${running_port:-?} (stop it first)"
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    return 0
  fi
  as_owner touch "$log"
  if ! as_owner "$PG_BIN/pg_ctl" -D "$data" -l "$log" -w -t 60 \
    -o "-p $port" start >/dev/null; then
    tail -n 20 "$log" >&2 || true
    die "PostgreSQL did not start in $dir on port $port"
  fi
  local i
  for ((i = 0; i < 100; i++)); do
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; then
      echo "postgres://postgres@127.0.0.1:$port/postgres"
      return 0
    fi
    sleep 0.1
  done
  tail -n 20 "$log" >&2 || true
  die "PostgreSQL in $dir does not answer on 127.0.0.1:$port"
}

cmd_stop() {
  [[ $# -eq 1 ]] || usage
  [[ -f "$1/data/PG_VERSION" ]] || return 0
  local data
  data="$(cd "$1" && pwd)/data"
  cd "$1"
  if as_owner "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_owner "$PG_BIN/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null
  fi
}

[[ $# -ge 1 ]] || usage
sub="$1"
shift
case "$sub" in
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  free-port) free_port ;;
  *) usage ;;
esac
