-- A `pruned` report from a success (finalize.rs has checked that it comes
-- from that run, in the attempt that succeeded: run::accepts_pruned): marks
-- the objects the workflow deleted, and records the report's delivery, in
-- one statement.
-- Only keys that retention lists for that success are marked: what its
-- answer listed (retention.sql, the same rules from retention_due.sql and
-- retention_list.sql). A key it does not list is skipped, as is one marked
-- already, so a repeated report changes nothing, and a report cannot mark
-- another success's object deleted by naming its key.
-- $1 the success's dispatch_id, $2 retention.rs MAX_KEYS, $3 the folder of
-- its key (ending in '/'), $4 the report's `pruned` (a JSON array of keys),
-- $5 webhook_id, $6 the delivery's body SHA-256 (hex).
with recorded as (
  insert into public.backup_report_deliveries (webhook_id, dispatch_id, body_sha256)
  values ($5::text, $1::uuid, decode($6::text, 'hex'))
  on conflict do nothing
)
\i retention_due.sql
, listed as (
  select jsonb_array_elements_text((
\i retention_list.sql
  )::jsonb) as s3_key
  from (select $1::uuid as dispatch_id, $3::text as folder) s
)
update public.backup_history h set pruned_at = now(), version = h.version + 1
where h.status = 'success' and h.pruned_at is null
  and h.s3_key in (select l.s3_key from listed l)
  and h.s3_key in (select jsonb_array_elements_text($4::text::jsonb))
