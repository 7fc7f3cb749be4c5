# shellcheck source=/dev/null
source "$RUNNER_TEMP/backup/lib.sh"
bk_phase upload
dump_file=$(jq -r .file "$BK_DIR/dump.json")
started_at=$(jq -r .started_at "$BK_DIR/dump.json")
size_bytes=$(jq -r .size_bytes "$BK_DIR/dump.json")
sha256=$(jq -r .sha256 "$BK_DIR/dump.json")
prefix=${BACKUP_S3_PREFIX:-backups}
prefix=${prefix#/}; prefix=${prefix%/}
format=$(jq -r .format "$BK_DIR/dump.json")
# The key's extension says how to restore the object (scripts/restore.sh).
if [[ $format == custom ]]; then
  s3_key="$prefix/${started_at}_${DISPATCH_ID}.dump"; content_type=application/octet-stream
else
  s3_key="$prefix/${started_at}_${DISPATCH_ID}.tar.gz"; content_type=application/gzip
fi

aws_args=()
if [[ -n ${BACKUP_S3_ENDPOINT_URL:-} ]]; then
  aws_args+=(--endpoint-url "$BACKUP_S3_ENDPOINT_URL")
  # S3-compatible stores (R2, B2, MinIO) may reject the newer
  # default integrity checksums of recent AWS CLIs.
  export AWS_REQUEST_CHECKSUM_CALCULATION=when_required
  export AWS_RESPONSE_CHECKSUM_VALIDATION=when_required
fi
aws "${aws_args[@]}" s3 cp "$dump_file" "s3://$BACKUP_S3_BUCKET/$s3_key" \
  --only-show-errors --no-progress \
  --content-type "$content_type" \
  --metadata "sha256=$sha256,dispatch-id=$DISPATCH_ID,format=$format" \
  || bk_fail "Upload to s3://$BACKUP_S3_BUCKET/$s3_key failed (see the error above)."
stored=$(aws "${aws_args[@]}" s3api head-object --bucket "$BACKUP_S3_BUCKET" --key "$s3_key" \
  --query ContentLength --output text) \
  || bk_fail "The uploaded object s3://$BACKUP_S3_BUCKET/$s3_key cannot be read back."
if [[ $stored != "$size_bytes" ]]; then
  bk_fail "The uploaded object has $stored bytes, the dump has $size_bytes."
fi
jq -n -c --arg s3_key "$s3_key" --argjson size_bytes "$size_bytes" --arg sha256 "$sha256" \
  '{s3_key: $s3_key, size_bytes: $size_bytes, sha256: $sha256}' > "$BK_DIR/result.json"
rm -f "$dump_file"
echo "Uploaded s3://$BACKUP_S3_BUCKET/$s3_key"
bk_progress uploaded
