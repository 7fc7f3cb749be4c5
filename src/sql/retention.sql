-- After successes, one statement for all that reached one instance together
-- (src/ports/coalesce.rs gathers them; alone, a list of one). For each
-- success ($1, a JSON array of {"dispatch_id", "verification", "folder",
-- "webhook_id", "body_sha256"} with distinct dispatch ids):
--  * stores the verdict its report carried (verification: JSON text, or
--    null) unless the run has one, so a retried report does not move
--    verified_at;
--  * records the delivery of a `succeeded` report that changed nothing (a
--    repeat under a new webhook-id; webhook_id null when the report's own
--    write recorded it), so that its answer costs one round trip less;
--  * lists, as a JSON array of keys, the objects retention deletes now
--    (retention_due.sql and retention_list.sql, which read_reports.sql
--    shares; retention.rs says why these):
--    - only when backup_settings.retention_days is set;
--    - successes only (never a run in progress or failed), not yet pruned,
--      not this run;
--    - never one of the newest retention_keep successes;
--    - finished more than retention_days ago;
--    - in the folder of this run's key (folder, ending in '/'), named for
--      their own run (..._<dispatch id>.<ext>), as the workflow names them:
--      a key this project did not write is never listed;
--    - at most $2 at once (retention.rs MAX_KEYS); the rest next time.
-- One row per success: `ord`, its place in $1 (from 1), and its list.
with success as (
  select s.dispatch_id, s.verification, s.folder, s.webhook_id,
         s.body_sha256, s.ord
    from rows from (jsonb_to_recordset($1::text::jsonb)
                    as (dispatch_id uuid, verification text, folder text,
                        webhook_id text, body_sha256 text))
         with ordinality as s(dispatch_id, verification, folder, webhook_id,
                              body_sha256, ord)
), verified as (
  update public.backup_history h
     set verification = s.verification::jsonb, verified_at = now(),
         version = h.version + 1
    from success s
   where h.dispatch_id = s.dispatch_id and h.status = 'success'
     and h.verification is null and s.verification is not null
  returning 1
), recorded as (
  insert into public.backup_report_deliveries (webhook_id, dispatch_id, body_sha256)
  select s.webhook_id, s.dispatch_id, decode(s.body_sha256, 'hex')
    from success s where s.webhook_id is not null
  on conflict do nothing
)
\i retention_due.sql
-- Columns named as the sweeper's row (store.rs SweeperRow): one row shape.
select null::float8 as last_run_ms, s.ord::int4 as ord,
\i retention_list.sql
       as problem
from success s
