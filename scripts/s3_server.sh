#!/usr/bin/env bash
# A local S3 (moto) for development and tests.
#
#   s3_server.sh start PORT   run moto_server on 127.0.0.1:PORT in the
#                             background; prints its endpoint URL
#   s3_server.sh stop [PORT]  stop the one on PORT (all started here if none)
#
# State (pid and log per port) lives in $S3_SERVER_DIR, by default .local/s3/.
# Any access key works; tests use AWS_ACCESS_KEY_ID=test.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

STATE="${S3_SERVER_DIR:-$ROOT/.local/s3}"

die() {
  printf 's3_server: error: %s\n' "$*" >&2
  exit 1
}
usage() {
  sed -n '2,6s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

# True when PID is alive and is a moto_server.
is_moto() {
  [[ -r "/proc/$1/cmdline" ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q moto_server
}

answers() {
  python3 - "$1" <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen("http://127.0.0.1:%s/" % sys.argv[1], timeout=1).read()
except Exception:
    sys.exit(1)
EOF
}

cmd_start() {
  [[ $# -eq 1 && "$1" =~ ^[0-9]+$ ]] || usage
  local port="$1" pidfile="$STATE/moto-$1.pid" log="$STATE/moto-$1.log"
  command -v moto_server >/dev/null 2>&1 || die "moto_server not found (run scripts/setup.sh)"
  mkdir -p "$STATE"
  if [[ -f "$pidfile" ]] && is_moto "$(cat "$pidfile")"; then
    die "moto_server already running on port $port (pid $(cat "$pidfile"))"
  fi
  nohup moto_server -H 127.0.0.1 -p "$port" >"$log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$pidfile"
  local i
  for ((i = 0; i < 300; i++)); do
    if answers "$port"; then
      echo "http://127.0.0.1:$port"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log" >&2 || true
      rm -f "$pidfile"
      die "moto_server exited while starting on port $port"
    fi
    sleep 0.1
  done
  tail -n 20 "$log" >&2 || true
  stop_one "$pidfile"
  die "moto_server does not answer on 127.0.0.1:$port"
}

stop_one() {
  local pidfile="$1" pid i
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if is_moto "$pid"; then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      is_moto "$pid" || break
      sleep 0.1
    done
    if is_moto "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$pidfile" "${pidfile%.pid}.log"
}

cmd_stop() {
  if [[ $# -eq 1 ]]; then
    [[ "$1" =~ ^[0-9]+$ ]] || usage
    stop_one "$STATE/moto-$1.pid"
  elif [[ $# -eq 0 ]]; then
    local f
    for f in "$STATE"/moto-*.pid; do
      [[ -e "$f" ]] && stop_one "$f"
    done
  else
    usage
  fi
  return 0
}

[[ $# -ge 1 ]] || usage
sub="$1"
shift
case "$sub" in
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  *) usage ;;
esac
