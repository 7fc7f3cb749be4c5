#!/usr/bin/env bash
# The README's "run the local stack" command: installs what is missing
# (scripts/setup.sh), then runs `deno task dev` (scripts/dev.ts).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# shellcheck source=scripts/env.sh
source scripts/env.sh
exec deno task dev "$@"
