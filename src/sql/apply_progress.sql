-- The hottest report, in the leanest statement: a decision that keeps a run
-- in progress (a `progress` report, or a repeated `started`) on the run in
-- progress in the reported attempt. It is what apply_report.sql writes for
-- such a decision, less what cannot change: the status stays in_progress,
-- and the outcome columns of a run in progress stay as they are, as
-- run::apply_report keeps them. Only the workflow run (set if the row has
-- none), the start time (kept if the row has one) and the progress (kept
-- unless the report brings one) are written, and only if one of them
-- changes. Leaving status out of the SET list also spares the update the
-- success trigger (backup_history_record_success fires on `update of
-- status`).
-- As in apply_report.sql: the delivery is recorded with the write, the row
-- lock lasts this statement, and when nothing is written the statement
-- reads what read_for_report.sql reads instead (store.rs appends the read).
-- $1 dispatch_id, $2 webhook_id (as in read_for_report.sql), $3 run_attempt,
-- $4 workflow_run_id, $5 started_at (ms) of the decision, $6 its progress
-- (json text, or null: keep the row's), $7 the delivery's body SHA-256 (hex).
with applied as (
  update public.backup_history set
    workflow_run_id = $4::int8,
    started_at = coalesce(started_at, to_timestamp($5::float8 / 1000)),
    progress = coalesce($6::text::jsonb, progress),
    version = version + 1
  where dispatch_id = $1::uuid
    and status = 'in_progress'
    and run_attempt = $3::int4
    and (workflow_run_id is null or workflow_run_id = $4::int8)
    and not exists (
      select from public.backup_report_deliveries d where d.webhook_id = $2::text
    )
    and (workflow_run_id is null or started_at is null
         or progress is distinct from coalesce($6::text::jsonb, progress))
  returning dispatch_id
), delivered as (
  insert into public.backup_report_deliveries (webhook_id, dispatch_id, body_sha256)
  select $2::text, applied.dispatch_id, $7::text from applied
  on conflict do nothing
)
-- followed by one row without a run if it applied, else read_for_report.sql's
-- (store.rs).
