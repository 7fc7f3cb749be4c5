-- A report's run, when apply_report.sql did not apply it: the row (after
-- select_run.sql's select list, store.rs) and the run an earlier delivery of
-- the same webhook-id applied to, if any, in one round trip. Without a
-- dispatch id (a scheduled run's registration), the run that delivery
-- applied to.
-- $1 dispatch_id (or null), $2 webhook_id
  , d.dispatch_id::text as delivered
from public.backup_history h
left join public.backup_report_deliveries d on d.webhook_id = $2::text
where h.dispatch_id = coalesce($1::uuid, d.dispatch_id)
