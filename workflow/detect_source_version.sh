# The source's PostgreSQL major version, for the default image of the
# scratch server. Never fails: without an answer the backup job uses
# postgres:17, and its own dump step reports a connection problem. psql's
# error is not shown, as the dump step shows it.
major=""
if [[ ${BACKUP_DATABASE_URL:-} =~ ^postgres(ql)?:// ]] \
  && num=$(psql -X -A -t -w --dbname="$BACKUP_DATABASE_URL" -c 'show server_version_num' 2> /dev/null) \
  && [[ $num =~ ^[0-9]+$ ]]; then
  major=$((num / 10000))
  echo "The source is PostgreSQL $major: the scratch server is postgres:$major."
else
  echo "::warning::The source's PostgreSQL version could not be read: the scratch server is postgres:17 (the variable BACKUP_VERIFY_IMAGE chooses another)."
fi
echo "major=$major" >> "$GITHUB_OUTPUT"
