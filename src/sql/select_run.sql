-- One backup_history row as the JSON object the core reads straight into
-- `Run` (its serde field names), and the row's position in the history.
-- Times become unix milliseconds so that no client library reinterprets them.
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
  'created_at', floor(extract(epoch from h.created_at) * 1000)::int8,
  'started_at', floor(extract(epoch from h.started_at) * 1000)::int8,
  'finished_at', floor(extract(epoch from h.finished_at) * 1000)::int8,
  'updated_at', floor(extract(epoch from h.updated_at) * 1000)::int8,
  's3_key', h.s3_key,
  'size_bytes', h.size_bytes,
  'sha256', h.sha256,
  'error_text', h.error_text,
  -- jsonb as its text: the core keeps the open object as JSON text.
  'progress', h.progress::text,
  'verification', h.verification::text,
  'verification_failed', coalesce(h.verification -> 'ok' = 'false'::jsonb, false),
  'pruned_at', floor(extract(epoch from h.pruned_at) * 1000)::int8,
  'version', h.version
) as run,
-- Exact, for history cursors (text: a JSON number would lose precision).
((extract(epoch from h.created_at) * 1000000)::int8)::text as created_us
from public.backup_history h
