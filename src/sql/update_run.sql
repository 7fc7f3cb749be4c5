-- Writes the next state of a run if nobody else wrote it since it was read
-- (optimistic concurrency on `version`), and records the delivery that
-- caused it, in one statement. No row back means: re-read and decide again.
-- $1..$13 as in insert_run.sql, $14 webhook_id, $15 id, $16 the version read.
with h as (
  update public.backup_history set
    status = $1::text,
    failure_reason = $2::text,
    outcome_source = $3::text,
    workflow_run_id = $4::int8,
    run_attempt = $5::int4,
    run_url = $6::text,
    started_at = to_timestamp($7::float8 / 1000),
    finished_at = to_timestamp($8::float8 / 1000),
    s3_key = $9::text,
    size_bytes = $10::int8,
    sha256 = $11::text,
    error_text = $12::text,
    progress = $13::text::jsonb,
    version = version + 1
  where id = $15::int8
    and version = $16::int4
  returning *
), delivered as (
  insert into public.backup_report_deliveries (webhook_id, dispatch_id)
  select $14::text, h.dispatch_id from h where $14::text is not null
  on conflict do nothing
)
select jsonb_build_object(
  'id', h.id,
  'dispatch_id', h.dispatch_id,
  'status', h.status,
  'failure_reason', h.failure_reason,
  'outcome_source', h.outcome_source,
  'trigger_source', h.trigger_source,
  'triggered_by', h.triggered_by,
  'reason', h.reason,
  'workflow_run_id', h.workflow_run_id,
  'run_attempt', h.run_attempt,
  'run_url', h.run_url,
  'created_at', (extract(epoch from h.created_at) * 1000)::int8,
  'started_at', (extract(epoch from h.started_at) * 1000)::int8,
  'finished_at', (extract(epoch from h.finished_at) * 1000)::int8,
  'updated_at', (extract(epoch from h.updated_at) * 1000)::int8,
  's3_key', h.s3_key,
  'size_bytes', h.size_bytes,
  'sha256', h.sha256,
  'error_text', h.error_text,
  'progress', h.progress,
  'version', h.version
) as run
from h
