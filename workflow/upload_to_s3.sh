# shellcheck source=/dev/null
source "$RUNNER_TEMP/backup/lib.sh"
bk_phase upload
started_at=$(jq -r .started_at "$BK_DIR/dump.json")
size_bytes=$(jq -r .size_bytes "$BK_DIR/dump.json")
sha256=$(jq -r .sha256 "$BK_DIR/dump.json")
format=$(jq -r .format "$BK_DIR/dump.json")
bk_s3_target "$format" "$started_at"
s3_key=$BK_S3_KEY

if [[ $(jq -r '.streamed // false' "$BK_DIR/dump.json") == true ]]; then
  # The dump step streamed it; what is stored becomes the backup only
  # once it is checked here, else it is removed.
  bk_s3_pending "$s3_key"
  [[ $(jq -r .s3_key "$BK_DIR/dump.json") == "$s3_key" ]] \
    || bk_fail "The streamed object's key is not this run's."
  echo "Streamed by the dump step to s3://$BACKUP_S3_BUCKET/$s3_key"
else
  dump_file=$(jq -r .file "$BK_DIR/dump.json")
  aws "${BK_AWS[@]}" s3 cp "$dump_file" "s3://$BACKUP_S3_BUCKET/$s3_key" \
    --only-show-errors --no-progress \
    --content-type "$BK_S3_CONTENT_TYPE" \
    --metadata "sha256=$sha256,dispatch-id=$DISPATCH_ID,format=$format" \
    || bk_fail "Upload to s3://$BACKUP_S3_BUCKET/$s3_key failed (see the error above)."
  bk_s3_pending "$s3_key"
fi
stored=$(aws "${BK_AWS[@]}" s3api head-object --bucket "$BACKUP_S3_BUCKET" --key "$s3_key" \
  --query ContentLength --output text) \
  || bk_fail "The uploaded object s3://$BACKUP_S3_BUCKET/$s3_key cannot be read back."
if [[ $stored != "$size_bytes" ]]; then
  bk_fail "The uploaded object has $stored bytes, the dump has $size_bytes."
fi
# From here the object is this run's backup, whatever happens later:
# result.json, written last and whole (mv), is what tells the outcome
# step to report it as stored.
jq -n -c --arg s3_key "$s3_key" --argjson size_bytes "$size_bytes" --arg sha256 "$sha256" \
  '{s3_key: $s3_key, size_bytes: $size_bytes, sha256: $sha256}' > "$BK_DIR/result.json.tmp"
bk_s3_keep
mv -f "$BK_DIR/result.json.tmp" "$BK_DIR/result.json"
if [[ -n ${dump_file:-} ]]; then rm -f "$dump_file"; fi
echo "Uploaded s3://$BACKUP_S3_BUCKET/$s3_key"
bk_progress uploaded
