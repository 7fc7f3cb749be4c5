-- The common case of a report, in one statement: the run is in progress in
-- the reported attempt, of the reported workflow run (or of none yet), and
-- this webhook-id was not delivered before. The core has already decided
-- what the report makes of such a run (run::apply_report on a run that has
-- nothing yet); this statement only merges that into the row: a start time
-- and a progress the row already has stay unless the report brings its own,
-- as apply_report itself would keep them. Nothing is written when the run
-- is in another state, the delivery is a repeat, or the write would change
-- nothing: the same statement then reads what read_for_report.sql reads
-- (the row and the earlier delivery), and the core decides in full from
-- that, without another round trip (store.rs appends the read). When it
-- applied, only that it did comes back: the row then has the status and
-- outcome the core decided, and reading the row back would cost this hot
-- statement about a third more.
-- No lock is held between round trips: the row lock lasts this statement.
-- The decision that only keeps the run going (started, progress) has its
-- leaner twin, apply_progress.sql.
-- $1 dispatch_id, $2 webhook_id (as in read_for_report.sql), $3..$15 the
-- decision's columns in insert_run.sql's order ($3 status ... $15 progress;
-- $8 run_url, always null there, keeps the row's), $16 the delivery's body
-- SHA-256 (hex); then raise_alerts.sql's parameters.
with applied as (
  update public.backup_history set
    status = $3::text,
    failure_reason = $4::text,
    outcome_source = $5::text,
    workflow_run_id = $6::int8,
    run_url = coalesce(run_url, $8::text),
    started_at = coalesce(started_at, to_timestamp($9::float8 / 1000)),
    finished_at = to_timestamp($10::float8 / 1000),
    s3_key = $11::text,
    size_bytes = $12::int8,
    sha256 = $13::text,
    error_text = $14::text,
    progress = coalesce($15::text::jsonb, progress),
    version = version + 1
  where dispatch_id = $1::uuid
    and status = 'in_progress'
    and run_attempt = $7::int4
    and (workflow_run_id is null or workflow_run_id = $6::int8)
    and not exists (
      select from public.backup_report_deliveries d where d.webhook_id = $2::text
    )
    and (status, workflow_run_id, started_at, progress) is distinct from (
      $3::text, $6::int8,
      coalesce(started_at, to_timestamp($9::float8 / 1000)),
      coalesce($15::text::jsonb, progress)
    )
  returning dispatch_id, run_url, started_at
), delivered as (
  insert into public.backup_report_deliveries (webhook_id, dispatch_id, body_sha256)
  select $2::text, applied.dispatch_id, decode($16::text, 'hex') from applied
  on conflict do nothing
), h as (
  select dispatch_id, run_url, started_at from applied
)
-- followed by raise_alerts.sql, then one row without a run if it applied,
-- else read_for_report.sql's (store.rs).
