-- Starts a run: inserts it unless a backup is in progress, and then returns
-- the running one instead, so the caller learns either answer in one round
-- trip. A scheduled run's registration records its delivery with it. The
-- single-flight index backup_history_one_in_progress still refuses an
-- insert that raced this statement's snapshot (a unique violation), and
-- then nothing is written.
-- $1 status, $2 failure_reason, $3 outcome_source, $4 workflow_run_id,
-- $5 run_attempt, $6 run_url, $7 started_at (ms), $8 finished_at (ms),
-- $9 s3_key, $10 size_bytes, $11 sha256, $12 error_text, $13 progress (json),
-- $14 webhook_id, $15 dispatch_id, $16 trigger_source, $17 triggered_by,
-- $18 reason, $19 created_at (ms), $20 the delivery's body SHA-256 (hex)
-- (jsonb arrives as text and is cast here: a driver that sees a jsonb
-- parameter would otherwise encode the string once more, as a JSON string.)
with running as (
  select * from public.backup_history where status = 'in_progress'
), h as (
  insert into public.backup_history (
    status, failure_reason, outcome_source, workflow_run_id, run_attempt,
    run_url, started_at, finished_at, s3_key, size_bytes, sha256,
    error_text, progress,
    dispatch_id, trigger_source, triggered_by, reason, created_at, updated_at
  )
  select
    $1::text, $2::text, $3::text, $4::int8, $5::int4,
    $6::text, to_timestamp($7::float8 / 1000), to_timestamp($8::float8 / 1000),
    $9::text, $10::int8, $11::text,
    $12::text, $13::text::jsonb,
    $15::uuid, $16::text, $17::uuid, $18::text,
    to_timestamp($19::float8 / 1000), to_timestamp($19::float8 / 1000)
  where not exists (select from running)
  returning *
), delivered as (
  insert into public.backup_report_deliveries (webhook_id, dispatch_id, body_sha256)
  select $14::text, h.dispatch_id, decode($20::text, 'hex') from h where $14::text is not null
  on conflict do nothing
)
-- followed by the select list of select_run.sql `from h`, then the same
-- `from running h` (store.rs): one row, the new run or the running one.
