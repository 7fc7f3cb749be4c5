-- Writes the next state of a run if nobody else wrote it since it was read
-- (optimistic concurrency on `version`), and records the delivery that
-- caused it, in one statement. No row back means: re-read and decide again.
-- $1..$13 as in insert_run.sql, $14 webhook_id, $15 id, $16 the version read,
-- $17 the delivery's body SHA-256 (hex).
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
  insert into public.backup_report_deliveries (webhook_id, dispatch_id, body_sha256)
  select $14::text, h.dispatch_id, $17::text from h where $14::text is not null
  on conflict do nothing
)
-- followed by the select list of select_run.sql, `from h` (store.rs).
