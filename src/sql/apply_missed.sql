-- The end of apply_report.sql when it wrote nothing: the row as it was
-- (after select_run.sql's select list), and the run an earlier delivery of
-- this webhook-id applied to, if any.
  , false as applied,
  (select d.dispatch_id::text from public.backup_report_deliveries d
    where d.webhook_id = $14::text) as delivered
from public.backup_history h
where h.dispatch_id = $15::uuid and not exists (select from applied)
