-- What retention may delete now, for retention.sql and read_reports.sql
-- (each includes this after its own CTEs, and lists from `due` with
-- retention_list.sql): the successes past retention_days, beyond the
-- newest retention_keep, not yet pruned. Computed once a statement, for all
-- the successes it lists for.
, settings as (
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
), due as materialized (
  -- Once for all the successes, not once each.
  select st.dispatch_id, st.s3_key, st.finished_at
  from stored st, settings
  where settings.days is not null
    and st.newest > settings.keep
    and st.finished_at < now() - make_interval(days => settings.days)
)
