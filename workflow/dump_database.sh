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
format=${BACKUP_FORMAT:-supabase}
started_at=$(date -u +%Y%m%dT%H%M%SZ)

if [[ $format == custom ]]; then
  # One pg_dump archive of the whole database, for plain PostgreSQL,
  # streamed to S3 as pg_dump writes it: no local copy, so the runner's
  # disk does not cap the database's size, and the upload overlaps the
  # dump. Whether pg_restore can read it is checked by the upload step on
  # the stored object.
  bk_s3_target custom "$started_at"
  snapshot=()
  if [[ ${BACKUP_VERIFY:-list} == restore ]]; then
    # The restore check compares each table's rows with counts taken in
    # the dump's own snapshot: this session exports it, pg_dump reads in
    # it, and the session counts in it afterwards, so the two agree by
    # construction whatever is written meanwhile.
    coproc SNAP { psql -X -A -t -q -w -v ON_ERROR_STOP=1 --dbname="$BACKUP_DATABASE_URL" 2>&1; }
    printf '%s\n' 'begin isolation level repeatable read read only;' \
      'select pg_export_snapshot();' >&"${SNAP[1]}"
    read -r -t 120 snapshot_id <&"${SNAP[0]}" || bk_fail "Exporting the dump's snapshot timed out."
    [[ $snapshot_id =~ ^[0-9A-F-]+$ ]] || bk_fail "Exporting the dump's snapshot failed: $snapshot_id"
    snapshot=(--snapshot="$snapshot_id")
  fi
  bk_stream_to_s3 "$pg_dump_bin" --format=custom --no-password \
    --dbname="$BACKUP_DATABASE_URL" "${snapshot[@]}" "${extra[@]}"
  if (( ${#snapshot[@]} )); then
    printf '%s\n' "\\o $BK_DIR/source-counts.txt" "$(bk_count_rows_sql)" '\o' \
      '\echo counted' 'commit;' '\q' >&"${SNAP[1]}"
    read -r -t 3600 counted <&"${SNAP[0]}" || counted="timed out"
    [[ $counted == counted ]] || bk_fail "Counting rows in the dump's snapshot failed: $counted"
    wait "$SNAP_PID" || true
  fi
  jq -n -c --arg s3_key "$BK_S3_KEY" --arg started_at "$started_at" \
    --argjson size_bytes "$BK_STREAM_SIZE" --arg sha256 "$BK_STREAM_SHA256" \
    --argjson server_major "$major" --arg pg_restore "${pg_dump_bin%/pg_dump}/pg_restore" \
    '{s3_key: $s3_key, streamed: true, started_at: $started_at, size_bytes: $size_bytes,
      sha256: $sha256, server_major: $server_major, format: "custom", pg_restore: $pg_restore}' \
    > "$BK_DIR/dump.json"
  # Stored; the upload step checks the stored object before it counts.
  bk_s3_keep
  echo "Dumped and streamed $BK_STREAM_SIZE bytes (custom format) to s3://$BACKUP_S3_BUCKET/$BK_S3_KEY, sha256 $BK_STREAM_SHA256"
  bk_progress dumped "{\"size_bytes\":$BK_STREAM_SIZE}"
  exit 0
else
  # The three parts `supabase db dump` writes, so that the backup restores
  # into a new Supabase project the way Supabase's guide "Backup and
  # Restore using the CLI" restores (psql, session_replication_role =
  # replica for the data). The platform's schemas and roles already exist
  # there, owned by roles the project's postgres user cannot be, so they
  # are left out, and the statements a non-superuser cannot run are
  # commented out. Lists and rewrites follow supabase/cli at commit
  # 8c9553c84c59e532223dc23a4bdd7f5a0cfdb3ad: pkg/migration/dump.go
  # (InternalSchemas, excludedSchemas, reservedRoles, allowedConfigs) and
  # pkg/migration/scripts/dump_role.sh, dump_schema.sh, dump_data.sh.
  # Two differences: no `--role postgres` (the CLI logs in as a temporary
  # cli_login_* role; we log in as the URL's user), and each pg_dump also
  # gets BACKUP_PG_DUMP_EXTRA_ARGS.
  platform_schemas='information_schema|pg_*|_analytics|_realtime|_supavisor|auth|etl|extensions|pgbouncer|realtime|storage|supabase_functions|supabase_migrations|cron|dbdev|graphql|graphql_public|net|pgmq|pgsodium|pgsodium_masks|pgtle|repack|tiger|tiger_data|timescaledb_*|_timescaledb_*|topology|vault'
  # The data part keeps auth, storage, supabase_functions, cron, net and
  # pgmq: their rows (users, object metadata, jobs) are the project's.
  data_excluded_schemas='information_schema|pg_*|graphql|graphql_public|pgsodium|pgsodium_masks|pgtle|repack|tiger|tiger_data|timescaledb_*|_timescaledb_*|topology|vault|etl|extensions|pgbouncer|realtime|supabase_migrations|_analytics|_realtime|_supavisor'
  reserved_roles='anon|authenticated|authenticator|cli_login_.*|dashboard_user|pgbouncer|postgres|service_role|supabase_.*|pgsodium_keyholder|pgsodium_keyiduser|pgsodium_keymaker|pgtle_admin'
  allowed_configs='pgaudit.*|pgrst.*|session_replication_role|statement_timeout|track_io_timing'
  [[ -x ${pg_dump_bin%/pg_dump}/pg_dumpall ]] || bk_fail "pg_dumpall is not installed next to $pg_dump_bin."
  parts="$BK_DIR/parts"
  rm -rf "$parts"; mkdir -p "$parts"

  # Roles: a new project has the platform's roles already (supautils
  # forbids touching them); keep only the role settings it allows, and
  # drop the attributes only a superuser may state.
  printf '%s\n' \
    's/^\\(un)?restrict .*$/-- &/' \
    "s/^CREATE ROLE \"($reserved_roles)\"/-- &/" \
    "s/^ALTER ROLE \"($reserved_roles)\"/-- &/" \
    's/ (NOSUPERUSER|NOREPLICATION)//g' \
    "s/^-- (.* SET \"($allowed_configs)\" .*)/\\1/" \
    "s/GRANT \".*\" TO \"($reserved_roles)\"/-- &/" \
    '/^--/d' \
    > "$BK_DIR/roles.sed"
  "${pg_dump_bin%/pg_dump}/pg_dumpall" --roles-only --quote-all-identifiers \
    --no-role-passwords --no-comments --no-password --dbname="$BACKUP_DATABASE_URL" \
    | sed -E -f "$BK_DIR/roles.sed" | uniq > "$parts/roles.sql" \
    || bk_fail "pg_dumpall --roles-only failed (see the error above)."
  echo 'RESET ALL;' >> "$parts/roles.sql"

  # Schema: everything outside the platform's schemas, re-runnable over
  # what a new project has, without the statements only the platform may
  # run (event triggers, its publication, its default privileges).
  printf '%s\n' \
    's/^CREATE SCHEMA "/CREATE SCHEMA IF NOT EXISTS "/' \
    's/^CREATE TABLE "/CREATE TABLE IF NOT EXISTS "/' \
    's/^CREATE SEQUENCE "/CREATE SEQUENCE IF NOT EXISTS "/' \
    's/^CREATE VIEW "/CREATE OR REPLACE VIEW "/' \
    's/^CREATE FUNCTION "/CREATE OR REPLACE FUNCTION "/' \
    's/^CREATE TRIGGER "/CREATE OR REPLACE TRIGGER "/' \
    's/^CREATE PUBLICATION "supabase_realtime/-- &/' \
    's/^CREATE EVENT TRIGGER /-- &/' \
    's/^         WHEN TAG IN /-- &/' \
    's/^   EXECUTE FUNCTION /-- &/' \
    's/^ALTER EVENT TRIGGER /-- &/' \
    's/^ALTER PUBLICATION "supabase_realtime_/-- &/' \
    's/^ALTER FOREIGN DATA WRAPPER (.+) OWNER TO /-- &/' \
    's/^ALTER DEFAULT PRIVILEGES FOR ROLE "supabase_admin"/-- &/' \
    "s/^GRANT (.+) ON (.+) \"($platform_schemas)\"/-- &/" \
    "s/^REVOKE (.+) ON (.+) \"($platform_schemas)\"/-- &/" \
    's/^(CREATE EXTENSION IF NOT EXISTS "pg_tle").+/\1;/' \
    's/^(CREATE EXTENSION IF NOT EXISTS "pgsodium").+/\1;/' \
    's/^COMMENT ON EXTENSION (.+)/-- &/' \
    's/^CREATE POLICY "cron_job_/-- &/' \
    's/^ALTER TABLE "cron"/-- &/' \
    's/^SET transaction_timeout = 0;/-- &/' \
    '/^--/d' \
    > "$BK_DIR/schema.sed"
  # One addition of ours, found by the restore drill: a new project gives
  # the restoring role (postgres) default privileges in public (all to anon,
  # authenticated, service_role), which every object this file creates would
  # get on top of its dumped grants, silently undoing the source's REVOKEs.
  # So the part first clears that role's per-schema default privileges;
  # the source's own are set again at its end (ALTER DEFAULT PRIVILEGES).
  cat > "$parts/schema.sql" <<'SQL'
DO $restore$
DECLARE d record;
BEGIN
  FOR d IN
    SELECT DISTINCT a.defaclnamespace::pg_catalog.regnamespace::text AS ns,
      CASE a.defaclobjtype WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES'
        WHEN 'f' THEN 'FUNCTIONS' WHEN 'T' THEN 'TYPES' END AS kind,
      CASE WHEN x.grantee = 0 THEN 'PUBLIC'
        ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(x.grantee)) END AS grantee
    FROM pg_catalog.pg_default_acl a, pg_catalog.aclexplode(a.defaclacl) x
    WHERE a.defaclrole = current_user::pg_catalog.regrole AND a.defaclnamespace <> 0
  LOOP
    EXECUTE pg_catalog.format('ALTER DEFAULT PRIVILEGES IN SCHEMA %s REVOKE ALL ON %s FROM %s',
      d.ns, d.kind, d.grantee);
  END LOOP;
END
$restore$;

SQL
  "$pg_dump_bin" --schema-only --quote-all-identifiers --no-password \
    --exclude-schema="$platform_schemas" --dbname="$BACKUP_DATABASE_URL" "${extra[@]}" \
    | sed -E -f "$BK_DIR/schema.sed" >> "$parts/schema.sql" \
    || bk_fail "pg_dump --schema-only failed (see the error above)."
  echo 'RESET ALL;' >> "$parts/schema.sql"

  # Data: COPY (`--use-copy`), triggers off while it loads, without the
  # platform's own migration bookkeeping, which a new project has already.
  # Its comment lines stay: a COPY row may begin with "--".
  printf 'SET session_replication_role = replica;\n\n' > "$parts/data.sql"
  "$pg_dump_bin" --data-only --quote-all-identifiers --no-password \
    --exclude-schema="$data_excluded_schemas" \
    --exclude-table='auth.schema_migrations' \
    --exclude-table='storage.migrations' \
    --exclude-table='supabase_functions.migrations' \
    --schema='*' --dbname="$BACKUP_DATABASE_URL" "${extra[@]}" >> "$parts/data.sql" \
    || bk_fail "pg_dump --data-only failed (see the error above)."
  echo 'RESET ALL;' >> "$parts/data.sql"

  server_version=$(psql -X -A -t -w -v ON_ERROR_STOP=1 --dbname="$BACKUP_DATABASE_URL" \
    -c 'show server_version') || bk_fail "Cannot read the server version (see the error above)."
  manifest_parts='[]'
  for part in roles.sql schema.sql data.sql; do
    manifest_parts=$(jq -c --arg name "$part" --argjson size_bytes "$(stat -c %s "$parts/$part")" \
      --arg sha256 "$(sha256sum "$parts/$part" | cut -d' ' -f1)" \
      '. + [{name: $name, size_bytes: $size_bytes, sha256: $sha256}]' <<< "$manifest_parts")
  done
  # restore.sh reads this: keep its field names.
  jq -n --arg dispatch_id "$DISPATCH_ID" --arg started_at "$started_at" \
    --arg server_version "$server_version" --argjson server_version_num "$server_num" \
    --arg pg_dump_version "$("$pg_dump_bin" --version)" --argjson parts "$manifest_parts" \
    '{format: "supabase", manifest_version: 1, dispatch_id: $dispatch_id, started_at: $started_at,
      server_version: $server_version, server_version_num: $server_version_num,
      pg_dump_version: $pg_dump_version, parts: $parts}' > "$parts/manifest.json"
  dump_file="$BK_DIR/$started_at.tar.gz"
  tar --create --gzip --file="$dump_file" --directory="$parts" \
    --owner=0 --group=0 --numeric-owner --mode=u=rw,go=r \
    manifest.json roles.sql schema.sql data.sql || bk_fail "Writing the backup archive failed."
  rm -rf "$parts"
  listing=$(tar --list --gzip --file="$dump_file" | tr '\n' ' ') \
    || bk_fail "The backup archive is not readable by tar."
  [[ $listing == "manifest.json roles.sql schema.sql data.sql " ]] \
    || bk_fail "The backup archive holds unexpected files: $listing"
fi

size_bytes=$(stat -c %s "$dump_file")
sha256=$(sha256sum "$dump_file" | cut -d' ' -f1)
jq -n -c --arg file "$dump_file" --arg started_at "$started_at" --argjson size_bytes "$size_bytes" \
  --arg sha256 "$sha256" --argjson server_major "$major" --arg format "$format" \
  '{file: $file, started_at: $started_at, size_bytes: $size_bytes, sha256: $sha256,
    server_major: $server_major, format: $format}' \
  > "$BK_DIR/dump.json"
echo "Dumped $size_bytes bytes ($format format), sha256 $sha256"
bk_progress dumped "{\"size_bytes\":$size_bytes}"
