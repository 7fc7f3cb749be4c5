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
-- The delivery is recorded first, and the write happens only if that
-- recorded it: a delivery seen before is a retry, and nothing is written.
-- That is one index probe of the deliveries fewer than asking first and
-- recording after (measured with one client: about 7% more statements a
-- second). The delivery is recorded whatever the run's state, as the
-- baseline's statement records it (bench/baseline_function.ts): guarding
-- the insert by the run's state read the row twice, and cost this
-- statement about 20 µs of its 300 (measured alone, seven rounds each,
-- medians). A delivery recorded without a write means the report changes
-- nothing (a progress the run already has, a `started` repeated), the run
-- is not in progress in this attempt (or does not exist), or it changed
-- between the read and the row lock; the statement says so (`recorded`),
-- and the core decides from the row, forgetting the delivery if it
-- refuses the report, so that a retry is refused again (finalize.rs).
-- The row lock lasts this statement.
-- $1 dispatch_id, $2 webhook_id, $3 run_attempt, $4 workflow_run_id, $5
-- started_at (ms) of the decision, $6 its progress (json text, or null: keep
-- the row's), $7 the delivery's body SHA-256 (hex).
with recorded as (
  insert into public.backup_report_deliveries (webhook_id, dispatch_id, body_sha256)
  values ($2::text, $1::uuid, decode($7::text, 'hex'))
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
