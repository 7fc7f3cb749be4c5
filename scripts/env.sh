# shellcheck shell=bash
# Sourced by the other scripts: `source scripts/env.sh`. Sets ROOT (the repo
# root) and puts the project's tools first on PATH. No other side effects.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT

# Moves (or adds) a directory to the front of PATH, so sourcing twice does
# not grow PATH.
_env_path_front() {
  local p=":${PATH}:"
  while [[ "$p" == *":$1:"* ]]; do p="${p/":$1:"/:}"; done
  p="${p#:}"
  p="${p%:}"
  PATH="$1${p:+:$p}"
}
# The last one moved ends up first: .tools, then cargo, then PostgreSQL.
_env_path_front /usr/lib/postgresql/15/bin
_env_path_front "${HOME:-/root}/.cargo/bin"
_env_path_front "${ROOT}/.tools/node_modules/.bin"
unset -f _env_path_front
export PATH
# `pip install --user` (setup.sh as non-root) puts commands here. On the
# path even before it exists: setup.sh's first run creates it after this
# file was sourced, and then looks for what it installed there.
if [[ ":${PATH}:" != *":${HOME:-/root}/.local/bin:"* ]]; then
  PATH="${PATH}:${HOME:-/root}/.local/bin"
fi
