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

# How step ID ended, said of SUBJECT (`Step "Dump database"`, `the step`):
# it failed, timed out (after LIMIT minutes of timeout-minutes; 0: none),
# was stopped or interrupted, or else FALLBACK. A step stopped from outside
# (signal, or killed and still "running") after its timeout-minutes timed
# out.
step_ending() { # ID LIMIT SUBJECT FALLBACK
  local state elapsed limit=$2
  state=$(cat "$BK_DIR/$1.state" 2>/dev/null || echo "")
  elapsed=$(( $(date +%s) - $(cat "$BK_DIR/$1.started" 2>/dev/null || date +%s) ))
  [[ $limit =~ ^[0-9]+$ ]] || limit=0
  case "$state" in
    "exit "*) echo "$3 failed (exit code ${state#exit })" ;;
    "signal "* | running)
      if (( limit > 0 && elapsed >= limit * 60 - 5 )); then
        echo "$3 timed out after $limit minutes (timeout-minutes)"
      elif [[ $state == running ]]; then
        echo "$3 was stopped before it finished (after $elapsed s)"
      else
        echo "$3 was interrupted (${state#signal }) after $elapsed s"
      fi ;;
    *) echo "$4" ;;
  esac
}

# Why the phase that went wrong ended.
describe_phase() {
  local limit=0
  case "$bad_id" in
    dump) limit=$DUMP_TIMEOUT_MINUTES ;;
    upload) limit=60 ;;
  esac
  echo "$(step_ending "$bad_id" "$limit" "Step \"$bad_name\"" "Step \"$bad_name\" did not complete")."
}

# GitHub cancels a job that exceeds its timeout-minutes (a failure, not
# a cancel); the job started about when the first step wrote lib.sh.
job_timed_out() {
  local started
  started=$(stat -c %Y "$BK_DIR/lib.sh")
  (( $(date +%s) - started >= BACKUP_JOB_TIMEOUT_MINUTES * 60 - 30 ))
}

# Why "Verify backup" left no verdict of its own.
verify_cut_short() {
  if [[ $JOB_STATUS == cancelled ]]; then
    if job_timed_out; then
      echo "the job exceeded its timeout of $BACKUP_JOB_TIMEOUT_MINUTES minutes"
    else
      echo "the run was cancelled"
    fi
    return
  fi
  step_ending verify "${VERIFY_TIMEOUT_MINUTES:-60}" "the step" "the step ended ${OUTCOME_VERIFY:-unknown}"
}

# The object is this run's backup once the upload step wrote result.json
# (it does so last, after checking the object and keeping it): from then
# on the run is reported succeeded whatever happened after, a failed,
# timed-out or cancelled verification, or the job cancelled or past its
# timeout-minutes. Retention only prunes successes: a stored object
# reported otherwise would stay in the bucket for good.
if [[ -f $BK_DIR/result.json ]]; then
  event=succeeded
  extra=$(jq -c '{s3_key, size_bytes, sha256}' "$BK_DIR/result.json")
  verify_mode=${BACKUP_VERIFY:-list}
  unfinished="the verification did not finish" # verify_backup.sh's first verdict
  if [[ -f $BK_DIR/verification.json ]] && jq -e \
    'type == "object" and (.mode == "list" or .mode == "restore") and (.ok | type) == "boolean"' \
    "$BK_DIR/verification.json" > /dev/null 2>&1; then
    # Say why the check did not finish, in the verdict it left.
    if jq -e --arg u "$unfinished" '.error == $u' "$BK_DIR/verification.json" > /dev/null; then
      jq -c --arg e "$unfinished: $(verify_cut_short)" '.error = $e' "$BK_DIR/verification.json" \
        > "$BK_DIR/verification.json.tmp" && mv -f "$BK_DIR/verification.json.tmp" "$BK_DIR/verification.json"
    fi
  elif [[ $verify_mode == list || $verify_mode == restore ]]; then
    # No verdict at all: the step never ran (cancelled before it) or
    # stopped before its first write.
    if [[ ${OUTCOME_VERIFY:-} == skipped ]]; then
      why="the verification did not run: $(verify_cut_short)"
    else
      why="$unfinished: $(verify_cut_short)"
    fi
    jq -n -c --arg mode "$verify_mode" --arg e "$why" \
      '{mode: $mode, ok: false, tables: null, rows: null, mismatches: [], error: $e}' \
      > "$BK_DIR/verification.json"
  fi
  if [[ -f $BK_DIR/verification.json ]]; then
    # finalize-backup refuses a verdict over 8192 bytes, and with it the
    # report; verify_backup.sh keeps far below that, this is a last guard.
    extra=$(jq -c --slurpfile v "$BK_DIR/verification.json" '. + {verification: ($v[0]
      | if (tojson | utf8bytelength) > 8000
        then .mismatches_omitted = ((.mismatches_omitted // 0) + (.mismatches | length))
          | .mismatches = [] | (if .error then .error |= .[0:500] else . end)
        else . end)}' <<< "$extra")
  fi
else
  # Only "Prepare reporting" (if: always()) and this step ran: GitHub
  # failed or cancelled the job before its first step, e.g. when a
  # service container did not start (steps without if: are then skipped).
  before_steps=false
  if [[ -z $bad_id && $OUTCOME_SETUP == success && $OUTCOME_START == skipped ]]; then
    before_steps=true
  fi
  if [[ $JOB_STATUS == cancelled ]]; then
    event=cancelled
    if job_timed_out; then
      event=failed
      text="The job exceeded its timeout of $BACKUP_JOB_TIMEOUT_MINUTES minutes."
    else
      text="The run was cancelled."
    fi
    if [[ -n $bad_id ]]; then
      text+=" It was in step \"$bad_name\"."
    elif $before_steps; then
      text+=" No step of the backup had started."
    fi
  else
    event=failed
    if [[ -n $bad_id ]]; then
      text=$(describe_phase)
    elif $before_steps && [[ ${BACKUP_VERIFY:-} == restore && ${BACKUP_VERIFY_IMAGE:-} != none ]]; then
      text="The job failed before any of its steps ran: its service container, the scratch PostgreSQL server of BACKUP_VERIFY=restore, did not start (see \"Initialize containers\" in the run's log)."
    elif $before_steps; then
      text="The job failed before any of its steps ran (see \"Set up job\" in the run's log)."
    else
      text="The job ended with status '$JOB_STATUS' before the backup was uploaded."
    fi
  fi
  tail_file="$BK_DIR/error-tail.txt"
  : > "$tail_file"
  if [[ -n $bad_id && -s $BK_DIR/$bad_id.stderr ]]; then
    tail -n 40 "$BK_DIR/$bad_id.stderr" | tail -c 2500 > "$tail_file"
  fi
  # Never send a secret, even if a tool printed one. The tail is kept
  # byte for byte otherwise (an empty one stays empty).
  if [[ -s $tail_file ]]; then
    db_password=""
    if [[ ${BACKUP_DATABASE_URL:-} =~ ^[^:]+://[^:@/]*:([^@/]+)@ ]]; then db_password=${BASH_REMATCH[1]}; fi
    content=$(cat "$tail_file"; printf x); content=${content%x}
    for secret in "${BACKUP_DATABASE_URL:-}" "$db_password" "${AWS_SECRET_ACCESS_KEY:-}" "${BACKUP_WEBHOOK_SECRET:-}" "${BACKUP_WEBHOOK_SECRET#whsec_}"; do
      if [[ ${#secret} -ge 4 ]]; then content=${content//"$secret"/***}; fi
    done
    printf '%s' "$content" > "$tail_file"
  fi
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
