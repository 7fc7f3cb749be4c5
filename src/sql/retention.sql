-- After a success ($1, its dispatch id): stores the verdict its report
-- carried ($2, a JSON object, or null) unless the run has one, so a retried
-- report does not move verified_at; then lists, as a JSON array of keys,
-- the objects retention deletes now (retention.rs says why these):
--  * only when backup_settings.retention_days is set;
--  * successes only (never a run in progress or failed), not yet pruned,
--    not this run;
--  * never one of the newest retention_keep successes;
--  * finished more than retention_days ago;
--  * in the folder of this run's key ($3, ending in '/'), named for their
--    own run (..._<dispatch id>.<ext>), as the workflow names them: a key
--    this project did not write is never listed;
--  * at most 100 at once (retention.rs MAX_KEYS); the rest next time.
-- A `succeeded` report that changed nothing (a repeat under a new
-- webhook-id) has its delivery recorded here ($5 webhook_id, $6 its body
-- SHA-256; null when the report's write recorded it), so that its answer
-- costs one round trip less.
with verified as (
  update public.backup_history
     set verification = $2::text::jsonb, verified_at = now(), version = version + 1
   where dispatch_id = $1::uuid and status = 'success' and verification is null
     and $2::text is not null
  returning 1
), recorded as (
  insert into public.backup_report_deliveries (webhook_id, dispatch_id, body_sha256)
  select $5::text, $1::uuid, $6::text where $5::text is not null
  on conflict do nothing
), settings as (
  select retention_days as days, retention_keep as keep
  from public.backup_settings where id
), stored as (
  select h.dispatch_id, h.s3_key, h.finished_at,
         row_number() over (order by h.finished_at desc, h.id desc) as newest
  from public.backup_history h
  where h.status = 'success' and h.pruned_at is null
    -- Without retention_days, no row is read: a one-time filter, where the
    -- planner would otherwise number every success before finding no
    -- settings to keep them by.
    and (select days from settings) is not null
)
-- Columns named as the sweeper's row (store.rs SweeperRow): one row shape.
select null::float8 as last_run_ms,
       coalesce(jsonb_agg(s.s3_key order by s.finished_at), '[]'::jsonb)::text as problem
from (
  select st.s3_key, st.finished_at
  from stored st, settings
  where settings.days is not null
    and st.newest > settings.keep
    and st.finished_at < now() - make_interval(days => settings.days)
    and st.dispatch_id <> $1::uuid
    and left(st.s3_key, length($3::text)) = $3::text
    and position('/' in substr(st.s3_key, length($3::text) + 1)) = 0
    and substr(st.s3_key, length($3::text) + 1) like '%\_' || st.dispatch_id::text || '.%'
  order by st.finished_at
  limit $4::int4
) s
