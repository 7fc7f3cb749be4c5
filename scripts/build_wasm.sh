#!/usr/bin/env bash
# Builds pkg/ (the committed WebAssembly core and its JS glue) from src/.
#
#   scripts/build_wasm.sh                      rebuild pkg/
#   scripts/build_wasm.sh --check              rebuild into a temp dir and fail if pkg/ differs
#   scripts/build_wasm.sh --test-panic DIR [FUNCTION...]
#                                              a test-only build (cargo feature
#                                              `test-panic`) into DIR, never pkg/
#
# pkg/<function>/ holds each function's own module: the crate built with
# that function's cargo feature alone. A function's import graph, which is
# what it deploys, then carries only its own endpoint's code, which is less
# to ship, decode and compile at start, and leaves each function its own
# size budget (README, "Size").
#
# pkg/ is committed so that users can deploy the functions without a Rust
# toolchain; --check (run by scripts/test.sh) keeps it honest.
#
# The WebAssembly bytes ship inside a JS module (pkg/<function>/
# backup_core_wasm.js, base64), not as a .wasm file: what `supabase functions deploy` uploads is
# each function's import graph, and a file that is read rather than imported
# is not part of it (static_files outside supabase/functions is not deployed,
# and `--use-api` deploys none at all).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
[ -f scripts/env.sh ] && source scripts/env.sh

# The functions, from the default features of Cargo.toml (one per function;
# src/app.rs's tests keep them equal to its FUNCTION_NAMES).
read -r -a functions <<<"$(sed -n 's/^default = \[\(.*\)\]/\1/p' Cargo.toml | tr -d '",')"
[ "${#functions[@]}" -gt 0 ] || { echo "build_wasm: no functions in Cargo.toml's default features" >&2; exit 1; }

mode="${1:-build}"
extra=""
case "$mode" in
  build | --check) ;;
  --test-panic)
    [ $# -ge 2 ] || { echo "build_wasm: --test-panic needs an output directory" >&2; exit 2; }
    test_dir="$2"
    shift 2
    [ $# -eq 0 ] || functions=("$@")
    extra=",test-panic"
    ;;
  *) echo "build_wasm: unknown option $mode" >&2; exit 2 ;;
esac
WBG_VERSION="$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)"/\1/p' Cargo.toml)"
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WBG_VERSION" ]; then
  echo "build_wasm: wasm-bindgen $WBG_VERSION is required (run scripts/setup.sh)" >&2
  exit 1
fi
command -v wasm-opt >/dev/null || { echo "build_wasm: wasm-opt (npm binaryen) missing (run scripts/setup.sh)" >&2; exit 1; }

# The same bytes on every machine, and fewer of them: panic locations name
# files relative to the crate or the registry (whose directory name depends
# on the registry's URL), not by absolute path. Later flags win.
RUSTFLAGS="--remap-path-prefix=$ROOT/="
for registry in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/; do
  RUSTFLAGS="$RUSTFLAGS --remap-path-prefix=$registry="
done
export RUSTFLAGS
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# One module per function: the crate built with that function's feature
# alone, so each function ships only its own endpoint's code.
build_function() {
  local fn="$1" dir="$out/$1"
  mkdir -p "$dir"
  cargo build --quiet --release --locked --target wasm32-unknown-unknown --lib \
    --no-default-features --features "$fn$extra"
  # The release build before wasm-opt, kept for `deno task bench size`'s
  # breakdown by crate (it needs the name section).
  mkdir -p target/wasm-functions
  cp target/wasm32-unknown-unknown/release/backup_core.wasm "target/wasm-functions/$fn$extra.wasm"
  # --target web + initSync: the host compiles the embedded bytes itself, at
  # module top level, so no file is read and nothing is fetched.
  wasm-bindgen --target web --omit-default-module-path --experimental-reset-state-function --out-dir "$dir" --out-name backup_core \
    target/wasm32-unknown-unknown/release/backup_core.wasm
  # -ocimfs 0: no inlining of functions into their only caller. With it,
  # wasm-opt folds a request's whole path into a few huge functions (the
  # finalize handler grew to 40 KB), which V8 must compile whole on first
  # call; without it the first request compiles only what it runs (about 2 ms
  # less on a cold start) and the module gzips 9 KB smaller.
  # -O3, not -Oz: rustc has already sized the code (opt-level "z"); here the
  # speed passes gzip no larger (finalize-backup 152,245 against 152,420
  # bytes) and the mixed throughput cell measured 3% faster side by side
  # (bench/README.md, "What made the difference").
  wasm-opt -O3 -ocimfs 0 --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-reference-types --enable-multivalue --enable-mutable-globals \
    "$dir/backup_core_bg.wasm" -o "$dir/backup_core_bg.opt.wasm"
  mv "$dir/backup_core_bg.opt.wasm" "$dir/backup_core_bg.wasm"

  # The bytes as an importable module (the way wasmbuild's --inline does it).
  # Uint8Array.fromBase64 decodes natively (a tenth of a millisecond, against
  # several for a JS loop run once, cold); atob is the fallback for runtimes
  # without it.
  {
    echo '/* @ts-self-types="./backup_core_wasm.d.ts" */'
    echo "// The WebAssembly core of $fn (backup_core_bg.wasm after wasm-opt), base64."
    printf 'const BASE64 =\n  "%s";\n' "$(base64 -w0 "$dir/backup_core_bg.wasm")"
    cat <<'JS'
function decode(text) {
  if (typeof Uint8Array.fromBase64 === "function") {
    return Uint8Array.fromBase64(text);
  }
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
/** The module's bytes, decoded once when this module is first imported. */
export const wasmBytes = decode(BASE64);
/** The compiled module. Compilation starts here, as soon as this module is
 * evaluated, and runs on the engine's background threads while the modules
 * imported after it (the database driver) load. */
export const wasmModule = WebAssembly.compile(wasmBytes);
JS
  } >"$dir/backup_core_wasm.js"
  cat >"$dir/backup_core_wasm.d.ts" <<'TS'
/** The WebAssembly core's bytes (wasm-opt output), embedded in this module. */
export const wasmBytes: Uint8Array;
/** The core, compiled from `wasmBytes` in the background. */
export const wasmModule: Promise<WebAssembly.Module>;
TS
  sizes+=("$fn $(wc -c <"$dir/backup_core_bg.wasm") $(cat "$dir/backup_core_bg.wasm" "$dir/backup_core.js" | gzip -9 | wc -c)")
  # Only the embedded copy ships; the raw file would be a second, unused copy.
  rm -f "$dir/backup_core_bg.wasm" "$dir/backup_core_bg.wasm.d.ts" "$dir/package.json" "$dir/.gitignore"
}
sizes=()
for fn in "${functions[@]}"; do build_function "$fn"; done

# The hash of everything the output is made from.
hash="$( (cat Cargo.toml Cargo.lock build.rs; find src -type f | LC_ALL=C sort | xargs cat; echo "$WBG_VERSION"; rustc --version) | sha256sum | cut -c1-16)"
for f in "$out"/*/*.js "$out"/*/*.d.ts; do
  { echo "// Generated by scripts/build_wasm.sh from src/ — do not edit. source-hash: $hash"
    echo "// deno-lint-ignore-file"
    echo "// deno-fmt-ignore-file"
    cat "$f"; } > "$f.tmp"
  mv "$f.tmp" "$f"
done

if [ "$mode" = "--test-panic" ]; then
  mkdir -p "$test_dir"
  rm -rf "${test_dir:?}"/*
  cp -r "$out"/* "$test_dir"/
  echo "build_wasm: test-only cores (feature test-panic) of ${functions[*]} in $test_dir"
elif [ "$mode" = "--check" ]; then
  if diff -r "$out" pkg >/dev/null; then
    echo "build_wasm: pkg/ matches a rebuild from src/ (source-hash $hash)"
  else
    echo "build_wasm: pkg/ is out of date with src/; run scripts/build_wasm.sh and commit pkg/" >&2
    diff -r --brief "$out" pkg >&2 || true
    exit 1
  fi
else
  rm -rf pkg
  mkdir -p pkg
  cp -r "$out"/* pkg/
  echo "build_wasm: pkg/ rebuilt (source-hash $hash), one module per function:"
  for entry in "${sizes[@]}"; do
    read -r fn bytes gzipped <<<"$entry"
    printf '  %-18s %7d bytes wasm, %7d bytes gzipped with its glue\n' "$fn" "$bytes" "$gzipped"
  done
fi
