# shellcheck shell=bash
set +x
umask 077
BK_DIR="$RUNNER_TEMP/backup"

bk_err() { printf '%s\n' "$*" >&2; }
# Fail the current step with a message that also ends up in error_text.
bk_fail() {
  printf '::error title=Backup::%s\n' "$1"
  bk_err "$1"
  exit 1
}

bk_is_uuid() {
  [[ $1 =~ ^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$ ]]
}

# bk_phase NAME: the rest of this step is the phase NAME. Its stderr is
# also kept in $BK_DIR/NAME.stderr (for error_text) and its end state
# in $BK_DIR/NAME.state: "running", "exit <code>" or "signal <name>"
# (a step killed outright stays "running"); its start in NAME.started.
bk_phase() {
  BK_PHASE=$1
  date +%s > "$BK_DIR/$BK_PHASE.started"
  printf 'running\n' > "$BK_DIR/$BK_PHASE.state"
  : > "$BK_DIR/$BK_PHASE.stderr"
  exec {BK_STDERR}>&2
  exec 2> >(tee -a "$BK_DIR/$BK_PHASE.stderr" >&"$BK_STDERR")
  BK_TEE_PID=$!
  trap 'bk_phase_end $?' EXIT
  trap 'printf "signal SIGINT\n" > "$BK_DIR/$BK_PHASE.state"; exit 130' INT
  trap 'printf "signal SIGTERM\n" > "$BK_DIR/$BK_PHASE.state"; exit 143' TERM
}
bk_phase_end() {
  local rc=$1
  if [[ $(cat "$BK_DIR/$BK_PHASE.state" 2>/dev/null) == running ]]; then
    printf 'exit %s\n' "$rc" > "$BK_DIR/$BK_PHASE.state"
  fi
  # An object this step was still writing is not a backup: never leave it
  # behind under a backup's name (a streamed upload completes on EOF even
  # when pg_dump died, so a truncated object can exist).
  if (( rc != 0 )) && [[ -n ${BK_PARTIAL_S3_KEY:-} ]]; then
    bk_s3_discard "$BK_PARTIAL_S3_KEY"
  fi
  # Let tee flush the captured stderr before the step ends.
  exec 2>&"$BK_STDERR"
  wait "$BK_TEE_PID" 2>/dev/null || true
}

# Standard Webhooks signature: base64(HMAC-SHA256(key, "{id}.{ts}.{body}")),
# key = base64-decoded part of whsec_<base64>.
bk_sign() { # msg_id timestamp body_file
  local b64=${BACKUP_WEBHOOK_SECRET#whsec_} keyhex
  while (( ${#b64} % 4 )); do b64+="="; done
  keyhex=$(printf '%s' "$b64" | base64 -d | od -An -v -tx1 | tr -d ' \n')
  { printf '%s.%s.' "$1" "$2"; cat "$3"; } \
    | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$keyhex" -binary \
    | base64 -w0
}

# bk_oidc_token FILE: asks GitHub for an OIDC token naming this run, with
# the finalize URL as its audience, and writes the Authorization header
# to FILE (a file, so the token is never on a command line). Needs
# `permissions: id-token: write`, which is what sets the two variables.
bk_oidc_token() {
  local token
  token=$(curl -sS --fail --connect-timeout 10 --max-time 30 -G \
    -H "Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN" \
    --data-urlencode "audience=$BACKUP_FINALIZE_URL" \
    -- "$ACTIONS_ID_TOKEN_REQUEST_URL" | jq -r '.value // empty') || return 1
  [[ -n $token ]] || return 1
  echo "::add-mask::$token"
  printf 'Authorization: Bearer %s\n' "$token" > "$1"
}

# bk_post MSG_ID BODY_FILE BUDGET_SECONDS
# Sends one report, signed with BACKUP_WEBHOOK_SECRET when it is set and
# carrying GitHub's OIDC token when the job may ask for one (both, as
# shipped). The webhook-id stays the same on every attempt so
# finalize-backup deduplicates re-sends; timestamp, signature and token
# are fresh per attempt. 2xx -> 0. 408, 429, 5xx and network
# errors are retried (backoff, Retry-After) within the budget -> 1 when
# it runs out. Other 4xx are permanent -> 2, no retry.
# (curl's own --retry-all-errors would also retry permanent 4xx.)
# The answer is left in $BK_DIR/response.json, the status in BK_HTTP.
bk_post() {
  local id=$1 body=$2 budget=$3 deadline delay=2 attempt=0 ts sig rc ra msg auth
  deadline=$((SECONDS + budget))
  while :; do
    attempt=$((attempt + 1))
    auth=("-H" "webhook-id: $id")
    if [[ -n ${BACKUP_WEBHOOK_SECRET:-} ]]; then
      ts=$(date +%s)
      sig=$(bk_sign "$id" "$ts" "$body")
      auth+=("-H" "webhook-timestamp: $ts" "-H" "webhook-signature: v1,$sig")
    fi
    rm -f "$BK_DIR/response.json" "$BK_DIR/response.headers" "$BK_DIR/oidc.header"
    rc=0
    BK_HTTP=000
    if [[ -n ${ACTIONS_ID_TOKEN_REQUEST_URL:-} ]]; then
      if bk_oidc_token "$BK_DIR/oidc.header"; then
        auth+=("-H" "@$BK_DIR/oidc.header")
      else
        rc=99
      fi
    fi
    if [[ $rc -eq 0 ]]; then
      BK_HTTP=$(curl -sS --connect-timeout 10 --max-time 30 \
        -o "$BK_DIR/response.json" -D "$BK_DIR/response.headers" -w '%{http_code}' \
        -H 'Content-Type: application/json' \
        -H 'User-Agent: supabase-backup-workflow' \
        "${auth[@]}" \
        --data-binary "@$body" \
        -- "$BACKUP_FINALIZE_URL") || rc=$?
    fi
    rm -f "$BK_DIR/oidc.header"
    if [[ $rc -eq 0 && $BK_HTTP == 2?? ]]; then
      return 0
    fi
    msg=$(jq -r '(.error.code // "") + (if .error.message then ": " + .error.message else "" end)' \
      "$BK_DIR/response.json" 2>/dev/null | head -c 300 || true)
    if [[ $rc -eq 99 ]]; then
      bk_err "GitHub gave no OIDC token for the report (attempt $attempt)"
    elif [[ $rc -ne 0 ]]; then
      bk_err "finalize-backup unreachable (curl exit $rc, attempt $attempt)"
    elif [[ $BK_HTTP =~ ^(408|429|5[0-9][0-9])$ ]]; then
      bk_err "finalize-backup answered $BK_HTTP ${msg:-} (attempt $attempt)"
    else
      bk_err "finalize-backup rejected the report: HTTP $BK_HTTP ${msg:-}"
      return 2
    fi
    ra=$(tr -d '\r' < "$BK_DIR/response.headers" 2>/dev/null \
      | awk -F': *' 'tolower($1) == "retry-after" && $2 ~ /^[0-9]+$/ { print $2; exit }' || true)
    if [[ -n $ra && $ra -gt $delay ]]; then delay=$(( ra > 60 ? 60 : ra )); fi
    if (( SECONDS + delay > deadline )); then
      bk_err "giving up after $attempt attempts"
      return 1
    fi
    sleep "$delay"
    delay=$(( delay * 2 > 30 ? 30 : delay * 2 ))
  done
}

# bk_report EVENT MSG_SUFFIX BUDGET [EXTRA_JSON]: builds the body with
# jq and sends it. Reports about a dispatch carry its dispatch_id.
bk_report() {
  local event=$1 suffix=$2 budget=$3 extra=${4:-} body
  [[ -n $extra ]] || extra='{}'
  body="$BK_DIR/body-$suffix.json"
  jq -n -c \
    --arg event "$event" \
    --arg dispatch_id "${DISPATCH_ID:-}" \
    --argjson workflow_run_id "$GITHUB_RUN_ID" \
    --argjson run_attempt "${GITHUB_RUN_ATTEMPT:-1}" \
    --argjson extra "$extra" \
    '{event: $event, workflow_run_id: $workflow_run_id, run_attempt: $run_attempt}
     + (if $dispatch_id == "" then {} else {dispatch_id: $dispatch_id} end)
     + $extra' > "$body"
  bk_post "backup-${DISPATCH_ID:-run-$GITHUB_RUN_ID}-${GITHUB_RUN_ATTEMPT:-1}-$suffix" "$body" "$budget"
}

# Progress is informative only: a failed progress report never fails the backup.
bk_progress() { # PHASE [EXTRA_JSON]
  local p extra=${2:-}
  [[ -n $extra ]] || extra='{}'
  p=$(jq -n -c --arg phase "$1" --argjson extra "$extra" '{progress: ({phase: $phase} + $extra)}')
  bk_report progress "progress-$1" 20 "$p" \
    || printf '::warning title=Backup::progress report "%s" was not delivered\n' "$1"
}

# bk_s3_target FORMAT STARTED_AT: where this run's object goes. Sets
# BK_S3_KEY, BK_S3_CONTENT_TYPE and BK_AWS (the aws CLI's common args).
# The key's extension says how to restore the object (scripts/restore.sh).
bk_s3_target() {
  local prefix=${BACKUP_S3_PREFIX:-backups}
  prefix=${prefix#/}; prefix=${prefix%/}
  if [[ $1 == custom ]]; then
    BK_S3_KEY="$prefix/${2}_${DISPATCH_ID}.dump"; BK_S3_CONTENT_TYPE=application/octet-stream
  else
    BK_S3_KEY="$prefix/${2}_${DISPATCH_ID}.tar.gz"; BK_S3_CONTENT_TYPE=application/gzip
  fi
  BK_S3_FORMAT=$1
  BK_AWS=()
  if [[ -n ${BACKUP_S3_ENDPOINT_URL:-} ]]; then
    BK_AWS+=(--endpoint-url "$BACKUP_S3_ENDPOINT_URL")
    # S3-compatible stores (R2, B2, MinIO) may reject the newer
    # default integrity checksums of recent AWS CLIs.
    export AWS_REQUEST_CHECKSUM_CALCULATION=when_required
    export AWS_RESPONSE_CHECKSUM_VALIDATION=when_required
  fi
}

# bk_s3_pending KEY: the object at KEY is removed if this step fails.
bk_s3_pending() { BK_PARTIAL_S3_KEY=$1; }

# bk_s3_keep: the object is checked and counts as this run's backup; a
# later failure of the step no longer removes it.
bk_s3_keep() { BK_PARTIAL_S3_KEY=""; }

# bk_s3_discard KEY: best effort; a failure is logged, never fatal.
bk_s3_discard() {
  if aws "${BK_AWS[@]}" s3 rm "s3://$BACKUP_S3_BUCKET/$1" --only-show-errors > /dev/null; then
    bk_err "Removed the incomplete object s3://$BACKUP_S3_BUCKET/$1"
  else
    printf '::warning title=Backup::The incomplete object s3://%s/%s could not be removed\n' \
      "$BACKUP_S3_BUCKET" "$1"
  fi
}

# bk_stream_to_s3 COMMAND...: runs COMMAND and uploads its stdout to
# s3://$BACKUP_S3_BUCKET/$BK_S3_KEY as it is written (multipart beyond
# 8 MiB), with the size and SHA-256 taken by tee from the same bytes.
# Sets BK_STREAM_SIZE and BK_STREAM_SHA256. Fails the step, naming the
# stage, when any stage fails; the object is then removed (bk_phase_end).
bk_stream_to_s3() {
  local hash_fifo="$BK_DIR/stream-hash.fifo" size_fifo="$BK_DIR/stream-size.fifo"
  local hash_pid size_pid statuses
  rm -f "$hash_fifo" "$size_fifo" "$BK_DIR/stream.sha256" "$BK_DIR/stream.size"
  mkfifo "$hash_fifo" "$size_fifo"
  sha256sum < "$hash_fifo" > "$BK_DIR/stream.sha256" &
  hash_pid=$!
  wc -c < "$size_fifo" > "$BK_DIR/stream.size" &
  size_pid=$!
  bk_s3_pending "$BK_S3_KEY"
  set +e
  "$@" | tee "$hash_fifo" "$size_fifo" \
    | aws "${BK_AWS[@]}" s3 cp - "s3://$BACKUP_S3_BUCKET/$BK_S3_KEY" \
      --only-show-errors --no-progress --content-type "$BK_S3_CONTENT_TYPE" \
      --metadata "dispatch-id=$DISPATCH_ID,format=$BK_S3_FORMAT"
  statuses=("${PIPESTATUS[@]}")
  wait "$hash_pid"; wait "$size_pid"
  set -e
  rm -f "$hash_fifo" "$size_fifo"
  # A failed upload also breaks tee and the dump (SIGPIPE): name it first.
  (( statuses[2] == 0 )) \
    || bk_fail "Upload to s3://$BACKUP_S3_BUCKET/$BK_S3_KEY failed (see the error above); nothing was stored."
  (( statuses[0] == 0 )) || bk_fail "${1##*/} failed (see the error above); nothing was stored."
  (( statuses[1] == 0 )) || bk_fail "Hashing the dump stream failed; nothing was stored."
  BK_STREAM_SIZE=$(tr -d '[:space:]' < "$BK_DIR/stream.size")
  BK_STREAM_SHA256=$(cut -d' ' -f1 < "$BK_DIR/stream.sha256")
  [[ $BK_STREAM_SIZE =~ ^[0-9]+$ && $BK_STREAM_SHA256 =~ ^[0-9a-f]{64}$ ]] \
    || bk_fail "The dump stream's size or hash could not be read; nothing was stored."
}

# One line per ordinary table, "schema name<TAB>rows", in the order and
# spelling of pg_restore --list's "TABLE DATA schema name owner" lines.
# Counting through query_to_xml keeps it one statement: in the dump's
# snapshot at dump time, and in the scratch database after a restore.
bk_count_rows_sql() {
  cat <<'SQL'
select n.nspname || ' ' || c.relname || E'\t' ||
  (xpath('/row/n/text()', query_to_xml(
    format('select count(*) as n from %I.%I', n.nspname, c.relname), false, true, '')))[1]::text
from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.relkind = 'r' and n.nspname not in ('pg_catalog', 'information_schema')
  and n.nspname !~ '^pg_toast'
order by 1;
SQL
}

# bk_with_database URL NAME: URL with its database replaced by NAME.
bk_with_database() {
  [[ $1 =~ ^([^:]+://[^/?]+)(/[^?]*)?(\?.*)?$ ]] || return 1
  printf '%s/%s%s\n' "${BASH_REMATCH[1]}" "$2" "${BASH_REMATCH[3]}"
}
