-- Writes a decision the core made from a row it read, only while the row
-- is still in the state that the decision read (status, attempt, workflow
-- run, outcome, whether it has started). A write that merely landed in
-- between does not invalidate the decision and is not overwritten: such a
-- write can change only run_url (the dispatch's answer) and progress (a
-- progress report), which are kept unless the decision itself changed them.
-- A change of state does invalidate it, and then no row comes back: the
-- core reads the row again and decides again. The delivery that caused the
-- write is recorded in the same statement.
-- $1..$13 as in insert_run.sql, $14 webhook_id, $15 id,
-- $16..$21 the state read: status, run_attempt, workflow_run_id,
-- failure_reason, outcome_source, started (bool),
-- $22 whether the decision changed run_url, $23 whether it changed progress,
-- $24 the delivery's body SHA-256 (hex); then raise_alerts.sql's parameters.
-- (Booleans arrive as text: postgres.js encodes a parameter it is told is
-- bool from a JS boolean only, and would send the string 'true' as false.)
with h as (
  update public.backup_history set
    status = $1::text,
    failure_reason = $2::text,
    outcome_source = $3::text,
    workflow_run_id = $4::int8,
    run_attempt = $5::int4,
    run_url = case when $22::text::bool then $6::text else run_url end,
    started_at = to_timestamp($7::float8 / 1000),
    finished_at = to_timestamp($8::float8 / 1000),
    s3_key = $9::text,
    size_bytes = $10::int8,
    sha256 = $11::text,
    error_text = $12::text,
    progress = case when $23::text::bool then $13::text::jsonb else progress end,
    version = version + 1
  where id = $15::int8
    and status = $16::text
    and run_attempt = $17::int4
    and workflow_run_id is not distinct from $18::int8
    and failure_reason is not distinct from $19::text
    and outcome_source is not distinct from $20::text
    and (started_at is not null) = $21::text::bool
  returning *
), delivered as (
  insert into public.backup_report_deliveries (webhook_id, dispatch_id, body_sha256)
  select $14::text, h.dispatch_id, decode($24::text, 'hex') from h where $14::text is not null
  on conflict do nothing
)
-- followed by raise_alerts.sql, then the select list of select_run.sql,
-- `from h` (store.rs).
