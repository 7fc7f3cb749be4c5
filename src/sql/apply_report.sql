-- The common case of a report, in one statement: the run is in progress in
-- the reported attempt, of the reported workflow run (or of none yet), and
-- this webhook-id was not delivered before. The core has already decided
-- what the report makes of such a run (run::apply_report on a run that has
-- nothing yet); this statement only merges that into the row: a start time
-- and a progress the row already has stay unless the report brings its own,
-- as apply_report itself would keep them. No row comes back when the run is
-- in another state, the delivery is a repeat, or the write would change
-- nothing: the core then reads the row (read_for_report.sql) and decides in
-- full. Only whether it applied comes back: the row then has the status and
-- outcome the core decided, and reading the row back would cost this, the
-- hottest statement, about a third more.
-- No lock is held between round trips: the row lock lasts this statement.
-- $1..$13 as in insert_run.sql, of that decision ($6 run_url, always null
-- there, keeps the row's), $14 webhook_id, $15 dispatch_id, $16 the
-- delivery's body SHA-256 (hex); then raise_alerts.sql's parameters.
with applied as (
  update public.backup_history set
    status = $1::text,
    failure_reason = $2::text,
    outcome_source = $3::text,
    workflow_run_id = $4::int8,
    run_url = coalesce(run_url, $6::text),
    started_at = coalesce(started_at, to_timestamp($7::float8 / 1000)),
    finished_at = to_timestamp($8::float8 / 1000),
    s3_key = $9::text,
    size_bytes = $10::int8,
    sha256 = $11::text,
    error_text = $12::text,
    progress = coalesce($13::text::jsonb, progress),
    version = version + 1
  where dispatch_id = $15::uuid
    and status = 'in_progress'
    and run_attempt = $5::int4
    and (workflow_run_id is null or workflow_run_id = $4::int8)
    and not exists (
      select from public.backup_report_deliveries d where d.webhook_id = $14::text
    )
    and (status, workflow_run_id, started_at, progress) is distinct from (
      $1::text, $4::int8,
      coalesce(started_at, to_timestamp($7::float8 / 1000)),
      coalesce($13::text::jsonb, progress)
    )
  returning dispatch_id, run_url, started_at
), delivered as (
  insert into public.backup_report_deliveries (webhook_id, dispatch_id, body_sha256)
  select $14::text, applied.dispatch_id, $16::text from applied
  on conflict do nothing
), h as (
  select dispatch_id, run_url, started_at from applied
)
-- followed by raise_alerts.sql, then `select true as applied from applied`
-- (store.rs).
