#!/usr/bin/env bash
# Restores a backup made by .github/workflows/backup.yml.
#
#   scripts/restore.sh [--force] [--sha256 HEX] BACKUP [TARGET_DATABASE_URL]
#   deno task restore [--force] [--sha256 HEX] BACKUP [TARGET_DATABASE_URL]
#
# BACKUP is one of
#   a dispatch id      the backup_history row, read from backup-status
#   an object key      <prefix>/<timestamp>_<dispatch id>.tar.gz or .dump
#                      in $BACKUP_S3_BUCKET, or s3://<bucket>/<key>
#   a file             a copy of the object on this machine (an existing path)
#   an https:// URL    a download link, e.g. a presigned S3 GET URL
# The target URL may also come from TARGET_DATABASE_URL (kept out of `ps`).
#
# Environment:
#   BACKUP_STATUS_URL    https://<project>.supabase.co/functions/v1/backup-status
#   BACKUP_ADMIN_TOKEN   a backup admin's access token for it
#                        (both needed for a dispatch id; with them, a key or
#                        file named after its dispatch id is checked against
#                        backup_history too)
#   BACKUP_S3_BUCKET, BACKUP_S3_ENDPOINT_URL (optional), AWS_ACCESS_KEY_ID,
#   AWS_SECRET_ACCESS_KEY, AWS_REGION: where the workflow uploads, for the
#                        AWS CLI; not needed when backup-status hands out a
#                        download URL (run.download_url)
#
# What it checks, before it changes anything:
#   * the object's SHA-256 and size against backup_history (or --sha256); a
#     supabase-format object without either is checked against its manifest
#     only, a custom-format one is refused;
#   * every part of a supabase-format object against its manifest;
#   * that the target holds nothing outside the platform's schemas, unless
#     --force (a new Supabase project, or an empty database, passes).
# Then it restores in one transaction, so a failure leaves the target as it
# was: supabase format as Supabase's guide "Backup and Restore using the CLI"
# does (psql, roles then schema then data with triggers off); custom format
# with pg_restore, without owners and grants, for plain PostgreSQL.
#
# Exit status: 0 restored; 1 the restore failed (target unchanged); 2 bad
# usage or settings, or the backup cannot be found; 3 the object does not
# match its recorded SHA-256, size or manifest; 4 the target is not empty.
set -euo pipefail
umask 077

usage() {
  sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
}
die() { # STATUS MESSAGE
  printf 'restore: %s\n' "$2" >&2
  exit "$1"
}
say() { printf 'restore: %s\n' "$*"; }

force=false
expected_sha=""
args=()
while (($#)); do
  case "$1" in
    --force) force=true ;;
    --sha256)
      [[ $# -ge 2 ]] || usage
      expected_sha=${2,,}
      shift
      ;;
    --sha256=*)
      expected_sha=${1#--sha256=}
      expected_sha=${expected_sha,,}
      ;;
    -h | --help) usage ;;
    --) shift; args+=("$@"); break ;;
    -*) die 2 "unknown option '$1'" ;;
    *) args+=("$1") ;;
  esac
  shift
done
((${#args[@]} >= 1 && ${#args[@]} <= 2)) || usage
backup=${args[0]}
target=${args[1]:-${TARGET_DATABASE_URL:-}}
[[ -n $target ]] || die 2 "no target: pass TARGET_DATABASE_URL or set it in the environment"
[[ $target =~ ^postgres(ql)?:// ]] || die 2 "the target must be a postgresql:// URL"
# libpq gets the password in the environment (PGPASSWORD, readable only by
# this user), and psql and pg_restore a URL without it: a command line is
# visible to every user of the machine in `ps`, for as long as the restore
# runs. The URL's password is percent-decoded, as libpq would decode it.
if [[ $target =~ ^(postgres(ql)?://[^:@/?#]*):([^@/?#]*)@(.+)$ ]]; then
  password=${BASH_REMATCH[3]//\\/\\\\}
  PGPASSWORD=$(printf '%b' "${password//%/\\x}")
  export PGPASSWORD
  target="${BASH_REMATCH[1]}@${BASH_REMATCH[4]}"
  unset password
fi
[[ -z $expected_sha || $expected_sha =~ ^[0-9a-f]{64}$ ]] || die 2 "--sha256 takes 64 hex digits"
for tool in psql pg_restore curl jq tar sha256sum; do
  command -v "$tool" >/dev/null || die 2 "'$tool' is not installed"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/restore.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$SECONDS

uuid_re='[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}'

# --- Which object, and what it must hash to ----------------------------------
# lookup ID: the run from backup-status, into $work/run.json.
lookup() {
  [[ -n ${BACKUP_STATUS_URL:-} && -n ${BACKUP_ADMIN_TOKEN:-} ]] ||
    die 2 "looking up dispatch id $1 needs BACKUP_STATUS_URL and BACKUP_ADMIN_TOKEN"
  # The token goes in a header file, not on curl's command line.
  printf 'Authorization: Bearer %s\n' "$BACKUP_ADMIN_TOKEN" >"$work/auth.header"
  local code
  code=$(curl -sS --connect-timeout 10 --max-time 60 -o "$work/status.json" -w '%{http_code}' \
    -H "@$work/auth.header" -G --data-urlencode "dispatch_id=$1" -- "$BACKUP_STATUS_URL") ||
    die 2 "backup-status is unreachable"
  rm -f "$work/auth.header"
  if [[ $code != 200 ]]; then
    die 2 "backup-status answered $code for $1: $(jq -r '(.error.code // "?") + ": " + (.error.message // "")' \
      "$work/status.json" 2>/dev/null || echo '?')"
  fi
  jq -e '.run | type == "object"' "$work/status.json" >/dev/null ||
    die 2 "backup-status did not return a run for $1"
  jq '.run' "$work/status.json" >"$work/run.json"
  local status
  status=$(jq -r '.status' "$work/run.json")
  [[ $status == success ]] || die 2 "backup $1 is '$status', not a successful backup"
}

source_kind=""
key=""
url=""
dispatch_id=""
if [[ $backup =~ ^${uuid_re}$ ]]; then
  dispatch_id=${backup,,}
  lookup "$dispatch_id"
  key=$(jq -r '.s3_key // empty' "$work/run.json")
  url=$(jq -r '.download_url // empty' "$work/run.json")
  if [[ -n $url ]]; then source_kind=url; else source_kind=s3; fi
elif [[ $backup =~ ^s3://([^/]+)/(.+)$ ]]; then
  source_kind=s3
  BACKUP_S3_BUCKET=${BASH_REMATCH[1]}
  key=${BASH_REMATCH[2]}
elif [[ $backup =~ ^https?:// ]]; then
  source_kind=url
  url=$backup
elif [[ -f $backup ]]; then
  source_kind="file"
else
  source_kind=s3
  key=${backup#/}
fi
# A key or file named after its dispatch id is checked against its row too.
if [[ -z $dispatch_id && -n ${BACKUP_STATUS_URL:-} && -n ${BACKUP_ADMIN_TOKEN:-} &&
  ${key:-$backup} =~ _(${uuid_re})\.(tar\.gz|dump)$ ]]; then
  dispatch_id=${BASH_REMATCH[1],,}
  lookup "$dispatch_id"
  if [[ -n $key && $(jq -r '.s3_key' "$work/run.json") != "$key" ]]; then
    die 3 "backup_history has a different object for $dispatch_id: $(jq -r '.s3_key' "$work/run.json")"
  fi
fi
recorded_sha=""
recorded_size=""
if [[ -f $work/run.json ]]; then
  recorded_sha=$(jq -r '.sha256 // empty' "$work/run.json")
  recorded_size=$(jq -r '.size_bytes // empty' "$work/run.json")
fi
hash_source="--sha256"
if [[ -n $recorded_sha ]]; then
  if [[ -n $expected_sha && $expected_sha != "$recorded_sha" ]]; then
    die 3 "REFUSED: --sha256 differs from backup_history's $recorded_sha"
  fi
  expected_sha=$recorded_sha
  hash_source="backup_history ($dispatch_id)"
fi

# --- Fetch ---------------------------------------------------------------------
object="$work/object"
case $source_kind in
  file)
    cp -- "$backup" "$object"
    say "using $backup"
    ;;
  url)
    # The link reaches curl on its standard input, not its command line,
    # where `ps` would show everyone a link that downloads the backup.
    link=${url//\\/\\\\}
    printf 'url = "%s"\n' "${link//\"/\\\"}" |
      curl -sS --fail --connect-timeout 10 --max-time 3600 -o "$object" --config - ||
      die 2 "downloading the backup failed"
    say "downloaded ${url%%\?*}"
    ;;
  s3)
    [[ -n $key ]] || die 2 "backup_history has no object key for $dispatch_id"
    [[ -n ${BACKUP_S3_BUCKET:-} ]] || die 2 "set BACKUP_S3_BUCKET to fetch s3 objects"
    aws_args=()
    if [[ -n ${BACKUP_S3_ENDPOINT_URL:-} ]]; then
      aws_args+=(--endpoint-url "$BACKUP_S3_ENDPOINT_URL")
      export AWS_REQUEST_CHECKSUM_CALCULATION=when_required
      export AWS_RESPONSE_CHECKSUM_VALIDATION=when_required
    fi
    command -v aws >/dev/null || die 2 "the AWS CLI (aws) is not installed"
    aws "${aws_args[@]}" s3api get-object --bucket "$BACKUP_S3_BUCKET" --key "$key" \
      "$object" >/dev/null || die 2 "cannot fetch s3://$BACKUP_S3_BUCKET/$key (see the error above)"
    say "fetched s3://$BACKUP_S3_BUCKET/$key"
    ;;
esac

# --- Verify ----------------------------------------------------------------------
size=$(stat -c %s "$object")
sha=$(sha256sum "$object" | cut -d' ' -f1)
say "object: $size bytes, sha256 $sha"
if [[ -n $recorded_size && $recorded_size != "$size" ]]; then
  die 3 "REFUSED: the object has $size bytes, backup_history records $recorded_size"
fi
if [[ -n $expected_sha ]]; then
  [[ $sha == "$expected_sha" ]] ||
    die 3 "REFUSED: the object's sha256 is $sha, $hash_source records $expected_sha"
  say "sha256 matches $hash_source"
fi

magic=$(head -c 5 "$object" | od -An -tx1 | tr -d ' \n')
if [[ $magic == 1f8b* ]]; then
  format=supabase
elif [[ $magic == 5047444d50 ]]; then # PGDMP
  format=custom
else
  die 3 "REFUSED: the object is neither a supabase-format archive nor a pg_dump archive"
fi

if [[ $format == supabase ]]; then
  members=$(tar --list --gzip --file="$object" 2>/dev/null | tr '\n' ' ') ||
    die 3 "REFUSED: the archive is not readable"
  [[ $members == "manifest.json roles.sql schema.sql data.sql " ]] ||
    die 3 "REFUSED: the archive holds unexpected files: $members"
  mkdir "$work/parts"
  tar --extract --gzip --file="$object" --directory="$work/parts" --no-same-owner \
    manifest.json roles.sql schema.sql data.sql || die 3 "REFUSED: the archive cannot be unpacked"
  manifest="$work/parts/manifest.json"
  jq -e '.format == "supabase" and (.parts | map(.name)) == ["roles.sql", "schema.sql", "data.sql"]' \
    "$manifest" >/dev/null 2>&1 || die 3 "REFUSED: the manifest is not a supabase-format manifest"
  for part in roles.sql schema.sql data.sql; do
    want_size=$(jq -r --arg n "$part" '.parts[] | select(.name == $n) | .size_bytes' "$manifest")
    want_sha=$(jq -r --arg n "$part" '.parts[] | select(.name == $n) | .sha256' "$manifest")
    got_size=$(stat -c %s "$work/parts/$part")
    got_sha=$(sha256sum "$work/parts/$part" | cut -d' ' -f1)
    [[ $got_size == "$want_size" && $got_sha == "$want_sha" ]] ||
      die 3 "REFUSED: $part does not match the manifest (sha256 $got_sha, manifest $want_sha)"
  done
  say "parts match the manifest: $(jq -r '[.parts[] | "\(.name) \(.size_bytes) bytes"] | join(", ")' "$manifest")"
  say "dumped from PostgreSQL $(jq -r .server_version "$manifest") at $(jq -r .started_at "$manifest")"
  [[ -n $expected_sha ]] ||
    say "note: no recorded sha256 (set BACKUP_STATUS_URL and BACKUP_ADMIN_TOKEN, or pass --sha256); checked against the manifest only"
else
  [[ -n $expected_sha ]] ||
    die 3 "REFUSED: a custom-format object has no manifest; set BACKUP_STATUS_URL and BACKUP_ADMIN_TOKEN, or pass --sha256"
  pg_restore --list "$object" >/dev/null || die 3 "REFUSED: pg_restore cannot read the object"
fi

# --- The target must be empty ---------------------------------------------------
# Empty = nothing outside the schemas a new Supabase project (or PostgreSQL)
# comes with, and no users in auth.users: the same platform schemas the
# workflow leaves out of the schema part.
platform='^(information_schema|pg_.*|_analytics|_realtime|_supavisor|auth|etl|extensions|pgbouncer|realtime|storage|supabase_functions|supabase_migrations|cron|dbdev|graphql|graphql_public|net|pgmq|pgsodium|pgsodium_masks|pgtle|repack|tiger|tiger_data|timescaledb_.*|_timescaledb_.*|topology|vault)$'
export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-30}
found=$(psql -X -A -t -q -v ON_ERROR_STOP=1 -v platform="$platform" --dbname="$target" <<'SQL'
with user_ns as (
  select n.oid, n.nspname from pg_namespace n
  where n.nspname !~ :'platform'
    and not exists (select 1 from pg_depend d where d.classid = 'pg_namespace'::regclass
                    and d.objid = n.oid and d.deptype = 'e')
), found as (
  select 'schema ' || nspname as what from user_ns where nspname <> 'public'
  union all
  select 'relation ' || n.nspname || '.' || c.relname from pg_class c join user_ns n on n.oid = c.relnamespace
  where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
    and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass
                    and d.objid = c.oid and d.deptype = 'e')
  union all
  select 'function ' || n.nspname || '.' || p.proname from pg_proc p join user_ns n on n.oid = p.pronamespace
  where not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass
                    and d.objid = p.oid and d.deptype = 'e')
  union all
  select 'type ' || n.nspname || '.' || t.typname from pg_type t join user_ns n on n.oid = t.typnamespace
  where t.typtype in ('e', 'd', 'r', 'm')
    and not exists (select 1 from pg_depend d where d.classid = 'pg_type'::regclass
                    and d.objid = t.oid and d.deptype = 'e')
)
select what from found order by what limit 10;
SQL
) || die 2 "cannot inspect the target (see the error above)"
users=$(psql -X -A -t -q -v ON_ERROR_STOP=1 --dbname="$target" <<'SQL'
select to_regclass('auth.users') is not null as has_users \gset
\if :has_users
select count(*) from (select 1 from auth.users limit 1) u;
\else
select 0;
\endif
SQL
) || die 2 "cannot inspect the target (see the error above)"
users=${users//[[:space:]]/}
if [[ -n $found || $users != 0 ]]; then
  what=$(printf '%s' "$found" | head -n 5 | paste -sd ',' | sed 's/,/, /g')
  [[ $users == 0 ]] || what="${what:+$what, }rows in auth.users"
  if $force; then
    say "the target is not empty ($what); going ahead (--force)"
  else
    die 4 "REFUSED: the target is not empty ($what). Restore into a new project or an empty database, or pass --force."
  fi
else
  say "the target is empty"
fi

# --- Restore ---------------------------------------------------------------------
# The commands are printed as README.md's "Restore" section shows them, with
# the target as $TARGET_DATABASE_URL (never its password).
if [[ $format == supabase ]]; then
  say "restoring roles, schema and data in one transaction:"
  printf '%s\n' \
    "  psql --single-transaction --variable ON_ERROR_STOP=1 \\" \
    "    --file roles.sql --file schema.sql \\" \
    "    --command 'SET session_replication_role = replica' \\" \
    "    --file data.sql --dbname \"\$TARGET_DATABASE_URL\""
  (
    cd "$work/parts"
    psql -X --quiet --single-transaction --variable ON_ERROR_STOP=1 \
      --file roles.sql --file schema.sql \
      --command 'SET session_replication_role = replica' \
      --file data.sql --dbname "$target" >"$work/restore.log"
  ) || die 1 "the restore failed and was rolled back; the target is unchanged (see the error above)"
else
  mv "$object" "$work/backup.dump"
  say "restoring schema and data in one transaction, without owners and grants:"
  printf '%s\n' \
    "  pg_restore --no-owner --no-privileges --single-transaction --exit-on-error \\" \
    "    --dbname \"\$TARGET_DATABASE_URL\" backup.dump"
  (
    cd "$work"
    pg_restore --no-owner --no-privileges --single-transaction --exit-on-error \
      --dbname "$target" backup.dump
  ) || die 1 "the restore failed and was rolled back; the target is unchanged (see the error above)"
fi

tables=$(psql -X -A -t -q -v ON_ERROR_STOP=1 -v platform="$platform" --dbname="$target" <<'SQL'
select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and n.nspname !~ :'platform';
SQL
) || tables="?"
say "restored $format-format backup ($size bytes) in $((SECONDS - started)) s; the target has ${tables//[[:space:]]/} tables outside the platform schemas"
