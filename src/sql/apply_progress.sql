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
-- The row is locked first, if the run is in progress in the reported
-- attempt, and the delivery is recorded only then, so that a delivery
-- recorded is a report decided: one that wrote its change, or one that
-- changed nothing of a run in progress (`recorded` without `applied`),
-- which its answer says as it is. The write happens only if the delivery
-- is new (a delivery seen before is a retry, and nothing is written) and
-- brings a change. A run in another state (ended, another attempt, no such
-- run) gets no record and no write, and the core decides from the row
-- (finalize.rs). An earlier version recorded every new delivery before it
-- looked at the run, and then had to take the record back when the core
-- refused the report; a database error between the two left a record
-- without its report, and the report's retry was then answered as a retry
-- that had been applied. Locking first costs about 5 µs a statement
-- (pgbench at one client, the two forms interleaved, medians of seven 3-s
-- rounds: 6,540 against 6,744 statements a second).
-- The row lock lasts this statement.
-- $1 dispatch_id, $2 webhook_id, $3 run_attempt, $4 workflow_run_id, $5
-- started_at (ms) of the decision, $6 its progress (json text, or null: keep
-- the row's), $7 the delivery's body SHA-256 (hex).
with running as (
  select from public.backup_history
  where dispatch_id = $1::uuid
    and status = 'in_progress'
    and run_attempt = $3::int4
    and (workflow_run_id is null or workflow_run_id = $4::int8)
  for no key update
), recorded as (
  insert into public.backup_report_deliveries (webhook_id, dispatch_id, body_sha256)
  select $2::text, $1::uuid, decode($7::text, 'hex')
  where exists (select from running)
  on conflict do nothing
  returning dispatch_id
), applied as (
  update public.backup_history set
    workflow_run_id = $4::int8,
    started_at = coalesce(started_at, to_timestamp($5::float8 / 1000)),
    progress = coalesce($6::text::jsonb, progress),
    version = version + 1
  where dispatch_id = $1::uuid
    and status = 'in_progress'
    and run_attempt = $3::int4
    and (workflow_run_id is null or workflow_run_id = $4::int8)
    and exists (select from recorded)
    and (workflow_run_id is null or started_at is null
         or progress is distinct from coalesce($6::text::jsonb, progress))
  returning dispatch_id
)
select exists (select from applied) as applied, exists (select from recorded) as recorded
