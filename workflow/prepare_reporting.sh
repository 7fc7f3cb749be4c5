# shellcheck source=/dev/null
source "$RUNNER_TEMP/backup/lib.sh"
bk_phase setup

[[ $GITHUB_RUN_ID =~ ^[1-9][0-9]*$ ]] || bk_fail "GITHUB_RUN_ID is not a number."
if [[ -z ${BACKUP_FINALIZE_URL:-} ]]; then
  bk_fail "Repository variable BACKUP_FINALIZE_URL is not set: this run cannot report its outcome to finalize-backup."
fi
if [[ ! $BACKUP_FINALIZE_URL =~ ^https?://[^[:space:]]+$ ]]; then
  bk_fail "Repository variable BACKUP_FINALIZE_URL is not an http(s) URL: this run cannot report its outcome."
fi
if [[ -z ${BACKUP_WEBHOOK_SECRET:-} && -z ${ACTIONS_ID_TOKEN_REQUEST_URL:-} ]]; then
  bk_fail "Secret BACKUP_WEBHOOK_SECRET is not set and the job cannot ask GitHub for an OIDC token (permissions: id-token: write): this run cannot report its outcome to finalize-backup."
fi
if [[ -n ${BACKUP_WEBHOOK_SECRET:-} ]]; then
  if [[ ! $BACKUP_WEBHOOK_SECRET =~ ^whsec_[A-Za-z0-9+/]+={0,2}$ ]]; then
    bk_fail "Secret BACKUP_WEBHOOK_SECRET must look like whsec_<base64>: this run cannot report its outcome."
  fi
  key_b64=${BACKUP_WEBHOOK_SECRET#whsec_}
  echo "::add-mask::$key_b64"
  while (( ${#key_b64} % 4 )); do key_b64+="="; done
  if ! printf '%s' "$key_b64" | base64 -d > /dev/null 2>&1; then
    bk_fail "Secret BACKUP_WEBHOOK_SECRET is not valid base64 after whsec_: this run cannot report its outcome."
  fi
fi
for tool in curl jq openssl base64 od; do
  command -v "$tool" > /dev/null || bk_fail "Required tool '$tool' is not installed on the runner: this run cannot report its outcome."
done

case "$GITHUB_EVENT_NAME" in
  workflow_dispatch)
    if ! bk_is_uuid "${BACKUP_DISPATCH_ID_INPUT:-}"; then
      shown=${BACKUP_DISPATCH_ID_INPUT:0:80}
      shown=${shown//[^A-Za-z0-9._-]/?}
      bk_fail "Input dispatch_id must be the UUID issued by trigger-backup (got '$shown'). There is no backup to report against; start backups from the admin UI."
    fi
    dispatch_id=${BACKUP_DISPATCH_ID_INPUT,,}
    echo "DISPATCH_ID=$dispatch_id" >> "$GITHUB_ENV"
    ;;
  schedule) ;;
  *) bk_fail "Unsupported trigger '$GITHUB_EVENT_NAME': run this workflow by schedule or from trigger-backup." ;;
esac
touch "$BK_DIR/reporting-ready"
