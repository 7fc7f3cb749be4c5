-- Reports that would end their run (succeeded, failed, cancelled), read
-- together: the reports that reached one instance while an earlier such
-- statement was in flight (src/ports/coalesce.rs gathers them). Under load
-- these are mostly repeats: a workflow's retries, a verdict sent again.
-- For each report it is what apply_report.sql does when its guarded write
-- does not apply, without that write: the run's row and the earlier
-- delivery of the same webhook-id; and, when the run already ended exactly
-- as the report ends it, the delivery recorded as a repeat. Nothing of a
-- run is written here: a report that changes its run is decided in full by
-- the core from the row read, and written with update_run.sql, guarded by
-- the state it was decided from.
-- "Exactly as the report ends it" is the state in which run::apply_report
-- changes nothing, so that the core only confirms it from the row:
--  * failed or cancelled (reason set): record_repeat.sql's state, failed for
--    that reason on the workflow's own word, in the report's attempt and
--    workflow run (run::ended_by);
--  * succeeded (key set): a success with the report's key, in its attempt
--    and workflow run. Its answer lists what retention prunes, so the
--    listing comes too (`prune`, retention_list.sql), sparing the repeat
--    the statement of its own that retention.sql would be. Only for a
--    report that carries no verification verdict: one that does is stored
--    by retention.sql, once the core has decided.
-- The reads see the rows as of the statement's start, as read_for_report.sql
-- appended to a write does; the delivery read is the one before this
-- statement recorded any.
-- Each run and each earlier delivery is found through its unique index, one
-- probe per report (a subquery, or a lateral one with `limit 1`, which the
-- planner does not turn into a join that could read a whole table).
-- $1 the reports, a JSON array of {"dispatch_id", "webhook_id",
-- "body_sha256", "reason", "key", "folder", "attempt", "workflow_run"} with
-- distinct webhook-ids; reason (failed, cancelled) or key and folder
-- (succeeded: the key's folder, ending in '/') set when the report may be
-- a repeat, with its attempt and workflow run; $2 the most keys a listing
-- names (retention.rs MAX_KEYS). Returns a row for each report whose run
-- exists: select_run.sql's columns, `ord` (the report's place, from 1), the
-- earlier delivery, whether this statement recorded the delivery, and, for
-- a success's repeat recorded, its listing.
with report as (
  select r.dispatch_id, r.webhook_id, r.body_sha256, r.reason, r.key,
         r.folder, r.attempt, r.workflow_run, r.ord
    from rows from (jsonb_to_recordset($1::text::jsonb)
                    as (dispatch_id uuid, webhook_id text, body_sha256 text,
                        reason text, key text, folder text, attempt int4,
                        workflow_run int8))
         with ordinality as r(dispatch_id, webhook_id, body_sha256, reason,
                              key, folder, attempt, workflow_run, ord)
), repeat as (
  insert into public.backup_report_deliveries (webhook_id, dispatch_id, body_sha256)
  select r.webhook_id, r.dispatch_id, decode(r.body_sha256, 'hex')
    from report r
   where (r.reason is not null or r.key is not null)
     and (select true from public.backup_history e
           where e.dispatch_id = r.dispatch_id
             and e.run_attempt = r.attempt
             and e.workflow_run_id = r.workflow_run
             and (e.status = 'failed'
                  and e.failure_reason = r.reason
                  and e.outcome_source = 'report'
               or e.status = 'success'
                  and e.s3_key = r.key))
  on conflict do nothing
  returning webhook_id
)
\i retention_due.sql
\i run_columns.sql
  , s.ord::int4 as ord
  , d.dispatch_id::text as delivered
  , encode(d.body_sha256, 'hex') as delivered_sha256
  , p.recorded is not null as recorded
  , case when p.recorded and s.folder is not null then
\i retention_list.sql
    end as prune
from report s
cross join lateral (
  select x.* from public.backup_history x
   where x.dispatch_id = s.dispatch_id limit 1
) h
left join lateral (
  select e.dispatch_id, e.body_sha256 from public.backup_report_deliveries e
   where e.webhook_id = s.webhook_id limit 1
) d on true
left join lateral (
  select true as recorded from repeat p where p.webhook_id = s.webhook_id
) p on true
