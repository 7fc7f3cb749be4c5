# shellcheck source=/dev/null
source "$RUNNER_TEMP/backup/lib.sh"
bk_phase start
if [[ -z ${DISPATCH_ID:-} ]]; then
  # Scheduled run: register. 201 (or 200 for a re-sent registration)
  # carries the dispatch id of the new backup_history row.
  rc=0; bk_report started register 120 || rc=$?
  if [[ $rc -ne 0 ]]; then
    bk_fail "Could not register the scheduled backup with finalize-backup (HTTP ${BK_HTTP:-none}); nothing was backed up."
  fi
  dispatch_id=$(jq -r '.dispatch_id // empty' "$BK_DIR/response.json" | tr 'A-F' 'a-f')
  bk_is_uuid "$dispatch_id" || bk_fail "finalize-backup did not return a dispatch_id for the scheduled run."
  echo "DISPATCH_ID=$dispatch_id" >> "$GITHUB_ENV"
  echo "Registered scheduled backup $dispatch_id"
else
  rc=0; bk_report started started 120 || rc=$?
  if [[ $rc -ne 0 ]]; then
    bk_fail "finalize-backup did not accept the started report for $DISPATCH_ID (HTTP ${BK_HTTP:-none}); not running the backup."
  fi
  echo "Backup $DISPATCH_ID started"
fi
