# shellcheck source=/dev/null
source "$RUNNER_TEMP/backup/lib.sh"
bk_phase config
missing=()
[[ -n ${BACKUP_DATABASE_URL:-} ]] || missing+=("secret BACKUP_DATABASE_URL")
[[ -n ${AWS_ACCESS_KEY_ID:-} ]] || missing+=("secret AWS_ACCESS_KEY_ID")
[[ -n ${AWS_SECRET_ACCESS_KEY:-} ]] || missing+=("secret AWS_SECRET_ACCESS_KEY")
[[ -n ${BACKUP_S3_BUCKET:-} ]] || missing+=("variable BACKUP_S3_BUCKET")
if (( ${#missing[@]} )); then
  printf -v list '%s, ' "${missing[@]}"
  bk_fail "Missing settings: ${list%, }."
fi
if [[ ! $BACKUP_DATABASE_URL =~ ^postgres(ql)?:// ]]; then
  bk_fail "Secret BACKUP_DATABASE_URL must be a postgresql:// URL."
fi
if [[ ! $BACKUP_S3_BUCKET =~ ^[a-zA-Z0-9][a-zA-Z0-9._-]{1,254}$ ]]; then
  bk_fail "Variable BACKUP_S3_BUCKET is not a valid bucket name."
fi
if [[ -n ${BACKUP_S3_ENDPOINT_URL:-} && ! $BACKUP_S3_ENDPOINT_URL =~ ^https?://[^[:space:]]+$ ]]; then
  bk_fail "Variable BACKUP_S3_ENDPOINT_URL must be an http(s) URL."
fi
prefix=${BACKUP_S3_PREFIX:-backups}
prefix=${prefix#/}; prefix=${prefix%/}
if [[ ! $prefix =~ ^[A-Za-z0-9!_.*\'()/-]{1,200}$ || $prefix == *//* ]]; then
  bk_fail "Variable BACKUP_S3_PREFIX may only contain letters, digits, / and !_.*'()-."
fi
case ${BACKUP_FORMAT:-supabase} in
  supabase | custom) ;;
  *) bk_fail "Variable BACKUP_FORMAT must be \"supabase\" (the default) or \"custom\"." ;;
esac
case ${BACKUP_VERIFY:-list} in
  list | off) ;;
  restore)
    [[ ${BACKUP_FORMAT:-supabase} == custom ]] \
      || bk_fail "BACKUP_VERIFY=restore needs BACKUP_FORMAT=custom (a supabase-format backup restores only into a Supabase project)."
    [[ ${BACKUP_VERIFY_DATABASE_URL:-} =~ ^postgres(ql)?:// ]] \
      || bk_fail "BACKUP_VERIFY=restore needs a scratch server: the service container (not with BACKUP_VERIFY_IMAGE=none), or the secret BACKUP_VERIFY_DATABASE_URL, a postgresql:// URL." ;;
  *) bk_fail "Variable BACKUP_VERIFY must be \"list\" (the default), \"restore\" or \"off\"." ;;
esac
for tool in psql aws sha256sum stat tar gzip; do
  command -v "$tool" > /dev/null || bk_fail "Required tool '$tool' is not installed on the runner."
done
echo "Settings complete: ${BACKUP_FORMAT:-supabase} format, bucket $BACKUP_S3_BUCKET, prefix $prefix${BACKUP_S3_ENDPOINT_URL:+, custom endpoint}"
