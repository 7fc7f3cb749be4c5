# shellcheck source=/dev/null
source "$RUNNER_TEMP/backup/lib.sh"
bk_phase prune
# finalize-backup chose these keys (retention decided by the server); this
# step only deletes them. A key whose delete fails is left unreported, so
# the server lists it again after the next success; it never fails the
# backup, which is already reported.
keys_file="$BK_DIR/prune.json"
if [[ ! -s $keys_file ]] || [[ $(jq 'length' "$keys_file") == 0 ]]; then
  echo "Nothing to prune."
  exit 0
fi
bk_s3_target custom "" # for BK_AWS only
deleted='[]'
while IFS= read -r key; do
  if aws "${BK_AWS[@]}" s3 rm "s3://$BACKUP_S3_BUCKET/$key" --only-show-errors > /dev/null; then
    deleted=$(jq -c --arg k "$key" '. + [$k]' <<< "$deleted")
    echo "Pruned s3://$BACKUP_S3_BUCKET/$key"
  else
    printf '::warning title=Backup::Could not delete s3://%s/%s; it is listed again next time\n' \
      "$BACKUP_S3_BUCKET" "$key"
  fi
done < <(jq -r '.[]' "$keys_file")
if [[ $deleted == "[]" ]]; then
  bk_fail "No object could be pruned (see the warnings above)."
fi
bk_report pruned pruned 120 "$(jq -n -c --argjson p "$deleted" '{pruned: $p}')" \
  || bk_fail "The pruned report was not delivered; the keys are listed again next time."
echo "Pruned $(jq length <<< "$deleted") objects; reported."
