# shellcheck source=/dev/null
source "$RUNNER_TEMP/backup/lib.sh"
bk_phase dump
# The URL itself is a masked secret; mask its password on its own too.
if [[ $BACKUP_DATABASE_URL =~ ^[^:]+://[^:@/]*:([^@/]+)@ ]]; then
  echo "::add-mask::${BASH_REMATCH[1]}"
fi

server_num=$(psql -X -A -t -w -v ON_ERROR_STOP=1 --dbname="$BACKUP_DATABASE_URL" \
  -c 'show server_version_num') || bk_fail "Cannot connect to the database (see the error above)."
server_num=${server_num//[[:space:]]/}
[[ $server_num =~ ^[0-9]+$ ]] || bk_fail "Unexpected server_version_num from the database."
major=$((server_num / 10000))
echo "Server is PostgreSQL $major"

# pg_dump must be at least as new as the server.
# Newest installed first (/usr/lib/postgresql/N/bin), then PATH's.
pg_dump_bin=""
mapfile -t candidates < <(printf '%s\n' /usr/lib/postgresql/*/bin/pg_dump | sort -t/ -k5,5nr)
candidates+=("$(command -v pg_dump || true)")
for candidate in "${candidates[@]}"; do
  [[ -n $candidate && -x $candidate ]] || continue
  v=$("$candidate" --version | sed -nE 's/^pg_dump \(PostgreSQL\) ([0-9]+).*/\1/p' | head -n1)
  if [[ -n $v && $v -ge $major ]]; then pg_dump_bin=$candidate; break; fi
done
if [[ -z $pg_dump_bin ]]; then
  echo "Installing postgresql-client-$major from the PostgreSQL (PGDG) apt repository"
  command -v apt-get > /dev/null || bk_fail "pg_dump $major+ is needed and apt-get is not available."
  # The logs are ours to write: only the commands need root.
  # shellcheck disable=SC2024
  if [[ -x /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh ]]; then
    sudo /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y > "$BK_DIR/apt.log" 2>&1 \
      || { tail -n 20 "$BK_DIR/apt.log" >&2; bk_fail "Adding the PGDG apt repository failed."; }
  else
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:?}")
    sudo install -d /usr/share/postgresql-common/pgdg
    sudo curl -fsSL --max-time 60 -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
      https://www.postgresql.org/media/keys/ACCC4CF8.asc
    echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt $codename-pgdg main" \
      | sudo tee /etc/apt/sources.list.d/pgdg.list > /dev/null
    # shellcheck disable=SC2024
    sudo apt-get update -qq > "$BK_DIR/apt.log" 2>&1 \
      || { tail -n 20 "$BK_DIR/apt.log" >&2; bk_fail "apt-get update failed."; }
  fi
  # shellcheck disable=SC2024
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "postgresql-client-$major" > "$BK_DIR/apt.log" 2>&1 \
    || { tail -n 20 "$BK_DIR/apt.log" >&2; bk_fail "Installing postgresql-client-$major failed."; }
  pg_dump_bin=/usr/lib/postgresql/$major/bin/pg_dump
  [[ -x $pg_dump_bin ]] || bk_fail "pg_dump $major was not found after installing postgresql-client-$major."
fi
echo "Using $("$pg_dump_bin" --version)"

extra=()
if [[ -n ${BACKUP_PG_DUMP_EXTRA_ARGS:-} ]]; then
  read -r -a extra <<< "$BACKUP_PG_DUMP_EXTRA_ARGS"
fi
started_at=$(date -u +%Y%m%dT%H%M%SZ)
dump_file="$BK_DIR/$started_at.dump"
"$pg_dump_bin" --format=custom --no-password --dbname="$BACKUP_DATABASE_URL" \
  --file="$dump_file" "${extra[@]}" || bk_fail "pg_dump failed (see the error above)."
"${pg_dump_bin%/pg_dump}/pg_restore" --list "$dump_file" > /dev/null \
  || bk_fail "The dump file is not readable by pg_restore."

size_bytes=$(stat -c %s "$dump_file")
sha256=$(sha256sum "$dump_file" | cut -d' ' -f1)
jq -n -c --arg file "$dump_file" --arg started_at "$started_at" --argjson size_bytes "$size_bytes" \
  --arg sha256 "$sha256" --argjson server_major "$major" \
  '{file: $file, started_at: $started_at, size_bytes: $size_bytes, sha256: $sha256, server_major: $server_major}' \
  > "$BK_DIR/dump.json"
echo "Dumped $size_bytes bytes, sha256 $sha256"
bk_progress dumped "{\"size_bytes\":$size_bytes}"
