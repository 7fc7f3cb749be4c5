# shellcheck source=/dev/null
source "$RUNNER_TEMP/backup/lib.sh"
bk_phase verify
mode=${BACKUP_VERIFY:-list}
if [[ $mode == off || ! -f $BK_DIR/result.json ]]; then
  echo "No verification (BACKUP_VERIFY=$mode$([[ -f $BK_DIR/result.json ]] || echo ', nothing stored'))."
  exit 0
fi
# The object exists whatever this step finds: the run stays a success and
# the report carries the verdict. Until a verdict is written, the verdict
# is that the check did not finish (the outcome step says why).
#
# finalize-backup stores a verdict of at most 8192 bytes and refuses the
# whole report beyond that, so the verdict is bounded whatever the tables
# are called: `error` to 500 characters, `mismatches` to its first entries
# that fit in 50 entries and 4096 bytes of JSON, with the number of those
# left out in `mismatches_omitted` (only when some are).
verdict() { # OK TABLES ROWS MISMATCHES_FILE ERROR (no file: no mismatches)
  jq -n -c --arg mode "$mode" --argjson ok "$1" --argjson tables "$2" --argjson rows "$3" \
    --slurpfile mismatches "${4:-/dev/null}" --arg error "$5" '
    ($mismatches[0] // []) as $all
    | (reduce $all[] as $m ({kept: [], bytes: 2, full: false};
        if .full then . else
          ($m | tojson | utf8bytelength + 1) as $n
          | if (.kept | length) < 50 and .bytes + $n <= 4096
            then .kept += [$m] | .bytes += $n else .full = true end
        end) | .kept) as $kept
    | {mode: $mode, ok: $ok, tables: $tables, rows: $rows, mismatches: $kept}
    + (if ($all | length) > ($kept | length)
       then {mismatches_omitted: (($all | length) - ($kept | length))} else {} end)
    + (if $error == "" then {}
       elif ($error | length) > 500 then {error: ($error[0:499] + "…")}
       else {error: $error} end)' > "$BK_DIR/verification.json.tmp"
  mv -f "$BK_DIR/verification.json.tmp" "$BK_DIR/verification.json"
}
verdict false null null "" "the verification did not finish"
fail() { verdict false "${tables:-null}" null "" "$1"; bk_fail "Verification failed: $1"; }

s3_key=$(jq -r .s3_key "$BK_DIR/result.json")
want_size=$(jq -r .size_bytes "$BK_DIR/result.json")
want_sha=$(jq -r .sha256 "$BK_DIR/result.json")
format=$(jq -r .format "$BK_DIR/dump.json")
bk_s3_target "$format" "$(jq -r .started_at "$BK_DIR/dump.json")"
pg_restore_bin=$(jq -r '.pg_restore // "pg_restore"' "$BK_DIR/dump.json")

# Every check reads the object as stored, downloaded once: tee gives the
# same bytes to the hash, the byte count, the listing and (restore) the
# scratch database.
fifos=("$BK_DIR/verify-hash.fifo" "$BK_DIR/verify-size.fifo" "$BK_DIR/verify-list.fifo")
rm -f "${fifos[@]}"; mkfifo "${fifos[@]}"
sha256sum < "${fifos[0]}" > "$BK_DIR/verify.sha256" & hash_pid=$!
wc -c < "${fifos[1]}" > "$BK_DIR/verify.size" & size_pid=$!
if [[ $format == custom ]]; then
  "$pg_restore_bin" --list < "${fifos[2]}" > "$BK_DIR/verify-list.txt" 2> "$BK_DIR/verify-list.err" &
else
  tar --list --gzip < "${fifos[2]}" > "$BK_DIR/verify-list.txt" 2> "$BK_DIR/verify-list.err" &
fi
list_pid=$!

scratch=""
drop_scratch() {
  if [[ -n $scratch ]]; then
    psql -X -q -w --dbname="$BACKUP_VERIFY_DATABASE_URL" \
      -c "drop database if exists \"$scratch\" with (force)" > /dev/null 2>&1 || true
  fi
}
on_exit() { drop_scratch; bk_phase_end "$1"; }
trap 'on_exit $?' EXIT
consumer=(cat)
if [[ $mode == restore ]]; then
  scratch="backup_verify_${GITHUB_RUN_ID}_${GITHUB_RUN_ATTEMPT:-1}"
  drop_scratch
  psql -X -q -w -v ON_ERROR_STOP=1 --dbname="$BACKUP_VERIFY_DATABASE_URL" \
    -c "create database \"$scratch\"" > /dev/null || fail "the scratch database cannot be created"
  scratch_url=$(bk_with_database "$BACKUP_VERIFY_DATABASE_URL" "$scratch") \
    || fail "BACKUP_VERIFY_DATABASE_URL is not a postgresql:// URL"
  consumer=("$pg_restore_bin" --no-owner --no-privileges --exit-on-error --dbname="$scratch_url")
fi
set +e
aws "${BK_AWS[@]}" s3 cp "s3://$BACKUP_S3_BUCKET/$s3_key" - --only-show-errors --no-progress \
  | tee --output-error=warn-nopipe "${fifos[@]}" | "${consumer[@]}" > /dev/null
statuses=("${PIPESTATUS[@]}")
wait "$hash_pid"; wait "$size_pid"; wait "$list_pid"; list_rc=$?
set -e
rm -f "${fifos[@]}"
(( statuses[0] == 0 )) || fail "the stored object could not be downloaded"
got_size=$(tr -d '[:space:]' < "$BK_DIR/verify.size")
got_sha=$(cut -d' ' -f1 < "$BK_DIR/verify.sha256")
# A changed object is reported, and still checked: what it restores to
# says what changed.
problem=""
if [[ $got_size != "$want_size" ]]; then
  problem="the stored object has $got_size bytes, the dump had $want_size"
elif [[ $got_sha != "$want_sha" ]]; then
  problem="the stored object's SHA-256 is $got_sha, the dump's was $want_sha"
fi
(( list_rc == 0 )) || fail "the stored object cannot be listed: $(tail -n 1 "$BK_DIR/verify-list.err")"
if [[ $format == custom ]]; then
  # "TABLE DATA schema name owner": the tables whose rows the dump holds.
  grep -E '^[0-9]+; [0-9]+ [0-9]+ TABLE DATA ' "$BK_DIR/verify-list.txt" \
    | sed -E 's/^[0-9]+; [0-9]+ [0-9]+ TABLE DATA ([^ ]+) ([^ ]+) .*$/\1 \2/' | sort > "$BK_DIR/verify-tables.txt" || true
  tables=$(wc -l < "$BK_DIR/verify-tables.txt")
else
  [[ $(tr '\n' ' ' < "$BK_DIR/verify-list.txt") == "manifest.json roles.sql schema.sql data.sql " ]] \
    || fail "the stored archive holds unexpected files"
  tables=null
fi
if [[ $mode == list ]]; then
  [[ -z $problem ]] || fail "$problem"
  verdict true "$tables" null "" ""
  echo "Verified (list): the stored object is the dump ($got_size bytes, sha256 $got_sha) and lists $tables tables with data."
  exit 0
fi

(( statuses[2] == 0 )) || fail "pg_restore into the scratch database failed (see the error above)"
psql -X -A -t -q -w -v ON_ERROR_STOP=1 --dbname="$scratch_url" -c "$(bk_count_rows_sql)" \
  > "$BK_DIR/restored-counts.txt" || fail "counting the restored rows failed"
# One object per table with data: expected from the dump's snapshot,
# actual from the scratch database (null when the table is missing).
jq -n -c --rawfile tables "$BK_DIR/verify-tables.txt" \
  --rawfile source "$BK_DIR/source-counts.txt" --rawfile restored "$BK_DIR/restored-counts.txt" '
  def counts($t): [$t | split("\n")[] | select(length > 0) | split("\t") | {(.[0]): (.[1] | tonumber)}] | add // {};
  counts($source) as $want | counts($restored) as $got
  | [$tables | split("\n")[] | select(length > 0)
     | {table: ., expected: $want[.], actual: $got[.]} | select(.expected != .actual)]' \
  > "$BK_DIR/verify-mismatches.json"
mismatched=$(jq length "$BK_DIR/verify-mismatches.json")
rows=$(jq -n --rawfile restored "$BK_DIR/restored-counts.txt" \
  '[$restored | split("\n")[] | select(length > 0) | split("\t")[1] | tonumber] | add // 0')
if (( mismatched == 0 )) && [[ -z $problem ]]; then
  verdict true "$tables" "$rows" "" ""
  echo "Verified (restore): $tables tables, $rows rows, each table's count equal to the dump's snapshot."
else
  (( mismatched == 0 )) || problem=${problem:+$problem; }"row counts differ from the dump's snapshot"
  verdict false "$tables" "$rows" "$BK_DIR/verify-mismatches.json" "$problem"
  bk_fail "Verification failed: $problem: $(jq -r '(.mismatches | tojson)
    + (if .mismatches_omitted then " and \(.mismatches_omitted) more" else "" end)' "$BK_DIR/verification.json")"
fi
