BK_DIR="$RUNNER_TEMP/backup"
# No report possible: say why, in the log and in the summary.
cannot_report() { # MESSAGE PHASE
  local why
  why=$(tail -n 3 "$BK_DIR/$2.stderr" 2>/dev/null || true)
  echo "::error title=Backup::$1"
  {
    echo "### Database backup"
    echo
    echo "**The outcome cannot be reported to finalize-backup:** $1"
    if [[ -n $why ]]; then echo; echo '```'; echo "$why"; echo '```'; fi
  } >> "$GITHUB_STEP_SUMMARY"
  exit 1
}
if [[ ! -f $BK_DIR/reporting-ready || ! -f $BK_DIR/lib.sh ]]; then
  cannot_report "reporting is not set up (see step \"Prepare reporting\")." setup
fi
# shellcheck source=/dev/null
source "$BK_DIR/lib.sh"
if [[ -z ${DISPATCH_ID:-} ]]; then
  cannot_report "the scheduled run was not registered, so there is no backup to report against." start
fi

# The phase that went wrong: the first step that failed or was
# cancelled, or else the one that was still running.
names=(setup "Prepare reporting" start "Report start" config "Check backup settings" dump "Dump database" upload "Upload to S3")
outcomes=("$OUTCOME_SETUP" "$OUTCOME_START" "$OUTCOME_CONFIG" "$OUTCOME_DUMP" "$OUTCOME_UPLOAD")
bad_id=""; bad_name=""
for i in "${!outcomes[@]}"; do
  if [[ ${outcomes[$i]} == failure || ${outcomes[$i]} == cancelled ]]; then
    bad_id=${names[$((2 * i))]}; bad_name=${names[$((2 * i + 1))]}; break
  fi
done
if [[ -z $bad_id ]]; then
  for i in "${!outcomes[@]}"; do
    if [[ $(cat "$BK_DIR/${names[$((2 * i))]}.state" 2>/dev/null) == running ]]; then
      bad_id=${names[$((2 * i))]}; bad_name=${names[$((2 * i + 1))]}; break
    fi
  done
fi

# Why the phase ended. A step stopped from outside (signal, or
# killed and still "running") after its timeout-minutes timed out.
describe_phase() {
  local state elapsed limit=0
  state=$(cat "$BK_DIR/$bad_id.state" 2>/dev/null || echo "")
  elapsed=$(( $(date +%s) - $(cat "$BK_DIR/$bad_id.started" 2>/dev/null || date +%s) ))
  case "$bad_id" in
    dump) limit=$DUMP_TIMEOUT_MINUTES ;;
    upload) limit=60 ;;
  esac
  case "$state" in
    "exit "*) echo "Step \"$bad_name\" failed (exit code ${state#exit })." ;;
    "signal "* | running)
      if (( limit > 0 && elapsed >= limit * 60 - 5 )); then
        echo "Step \"$bad_name\" timed out after $limit minutes (timeout-minutes)."
      elif [[ $state == running ]]; then
        echo "Step \"$bad_name\" was stopped before it finished (after $elapsed s)."
      else
        echo "Step \"$bad_name\" was interrupted (${state#signal }) after $elapsed s."
      fi ;;
    *) echo "Step \"$bad_name\" did not complete." ;;
  esac
}

if [[ $JOB_STATUS == success && -z $bad_id && -f $BK_DIR/result.json ]]; then
  event=succeeded
  extra=$(jq -c '{s3_key, size_bytes, sha256}' "$BK_DIR/result.json")
  if [[ -f $BK_DIR/verification.json ]]; then
    extra=$(jq -c --slurpfile v "$BK_DIR/verification.json" '. + {verification: $v[0]}' <<< "$extra")
  fi
else
  if [[ $JOB_STATUS == cancelled ]]; then
    event=cancelled
    started=$(stat -c %Y "$BK_DIR/lib.sh")
    if (( $(date +%s) - started >= BACKUP_JOB_TIMEOUT_MINUTES * 60 - 30 )); then
      # GitHub cancels a job that exceeds its timeout-minutes; that is a failure.
      event=failed
      text="The job exceeded its timeout of $BACKUP_JOB_TIMEOUT_MINUTES minutes."
    else
      text="The run was cancelled."
    fi
    if [[ -n $bad_id ]]; then text+=" It was in step \"$bad_name\"."; fi
  else
    event=failed
    if [[ -n $bad_id ]]; then
      text=$(describe_phase)
    else
      text="The job ended with status '$JOB_STATUS' before the backup was uploaded."
    fi
  fi
  tail_file="$BK_DIR/error-tail.txt"
  : > "$tail_file"
  if [[ -n $bad_id && -s $BK_DIR/$bad_id.stderr ]]; then
    tail -n 40 "$BK_DIR/$bad_id.stderr" | tail -c 2500 > "$tail_file"
  fi
  # Never send a secret, even if a tool printed one.
  db_password=""
  if [[ ${BACKUP_DATABASE_URL:-} =~ ^[^:]+://[^:@/]*:([^@/]+)@ ]]; then db_password=${BASH_REMATCH[1]}; fi
  for secret in "${BACKUP_DATABASE_URL:-}" "$db_password" "${AWS_SECRET_ACCESS_KEY:-}" "${BACKUP_WEBHOOK_SECRET:-}" "${BACKUP_WEBHOOK_SECRET#whsec_}"; do
    if [[ ${#secret} -ge 4 ]]; then
      content=$(cat "$tail_file"); printf '%s\n' "${content//"$secret"/***}" > "$tail_file"
    fi
  done
  extra=$(jq -n -c --arg head "$text" --rawfile tail "$tail_file" \
    '{error_text: ((if ($tail | length) > 0 then $head + "\n" + $tail else $head end) | if length > 3000 then .[0:3000] else . end)}')
fi

rc=0; bk_report "$event" final 240 "$extra" || rc=$?
status=$(jq -r '.status // empty' "$BK_DIR/response.json" 2>/dev/null || true)
if [[ $rc -eq 0 && $event == succeeded ]]; then
  # What retention deletes now, for the next step (finalize-backup decides).
  jq -c '.prune // []' "$BK_DIR/response.json" > "$BK_DIR/prune.json" 2>/dev/null || true
fi
{
  echo "### Database backup"
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| Dispatch id | \`$DISPATCH_ID\` |"
  echo "| Outcome | $event |"
  if [[ $event == succeeded ]]; then
    echo "| Object | \`$(jq -r .s3_key "$BK_DIR/result.json")\` |"
    echo "| Size | $(jq -r .size_bytes "$BK_DIR/result.json") bytes |"
    echo "| SHA-256 | \`$(jq -r .sha256 "$BK_DIR/result.json")\` |"
    if [[ -f $BK_DIR/verification.json ]]; then
      echo "| Verification | $(jq -r '.mode + ": " + (if .ok then "passed" else "**FAILED** " + (.error // "") end)' \
        "$BK_DIR/verification.json" | tr '|`' '  ') |"
    fi
  fi
  if [[ $event != succeeded ]]; then
    echo "| Error | $(jq -r '.error_text | split("\n")[0] | gsub("[|`]"; " ")' <<< "$extra") |"
  fi
  if [[ $rc -eq 0 ]]; then
    echo "| Reported | yes (status ${status:-?}) |"
  else
    echo "| Reported | **no** (HTTP ${BK_HTTP:-none}) |"
  fi
} >> "$GITHUB_STEP_SUMMARY"
if [[ $rc -ne 0 ]]; then
  echo "::error title=Backup::The $event report for $DISPATCH_ID was not delivered to finalize-backup."
  exit 1
fi
echo "Reported $event for $DISPATCH_ID (status ${status:-?})"
