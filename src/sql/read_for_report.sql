-- A report's run, when apply_report.sql did not apply it: the row (after
-- select_run.sql's select list, store.rs) and the run an earlier delivery of
-- the same webhook-id applied to, if any, in one round trip. Without a
-- dispatch id (a scheduled run's registration), the run that delivery
-- applied to.
-- $1 dispatch_id (or null), $2 webhook_id. An earlier delivery comes with
-- its body hash, so that the id re-used with another body is told apart.
-- The fast statements (apply_report.sql, apply_progress.sql) end with this
-- read when they write nothing, so it must stay one `where` that they can
-- extend (store.rs). There it sees the row as of the statement's start: a
-- decision made from a row that a concurrent write changed since is caught
-- by update_run.sql's guard, as a decision from any read is.
-- The run is found by its dispatch id through the unique index, also in the
-- generic plan PostgreSQL keeps for a prepared statement after five runs:
-- the id is one value (the parameter, else the delivery's, read once), not
-- coalesce($1, d.dispatch_id), which names the joined row and so cannot be
-- an index condition. That form read every row of backup_history in the
-- generic plan, or, once the table was large enough for that plan to cost
-- more, made PostgreSQL plan the whole statement again on every execution.
  , d.dispatch_id::text as delivered
  , encode(d.body_sha256, 'hex') as delivered_sha256
from public.backup_history h
left join public.backup_report_deliveries d on d.webhook_id = $2::text
where h.dispatch_id = coalesce(
  $1::uuid,
  (select e.dispatch_id from public.backup_report_deliveries e
    where e.webhook_id = $2::text))
