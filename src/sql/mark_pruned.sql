-- Marks the successful runs whose objects the workflow deleted ($1: the
-- report's `pruned`, a JSON array of keys). A key already marked, or not a
-- success's, is skipped, so a repeated report changes nothing.
update public.backup_history set pruned_at = now(), version = version + 1
where status = 'success' and pruned_at is null
  and s3_key in (select jsonb_array_elements_text($1::text::jsonb))
