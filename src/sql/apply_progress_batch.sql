-- Several `progress` reports to one run, written together as if one after
-- another (src/ports/coalesce.rs gathers them): the reports that arrived at one
-- instance while an earlier write to the same run was in flight. For each
-- report it is what apply_progress.sql does for one: a report with a new
-- webhook-id changes the run if it brings something new (the first one may
-- also set the workflow run and the start time; each later one changes the
-- progress if it differs from the one before it). The row ends with the
-- last change's progress and its version moves once per change. Every
-- report with a new webhook-id has its delivery recorded, the unchanged
-- ones too, since the run is known to be in progress as they were decided.
-- The flags are computed from the row as this statement's snapshot read it;
-- the update is guarded by exactly that state (status, attempt, workflow
-- run, started or not, progress). If another writer changed it first, the
-- statement writes nothing and each report is decided in full on its own,
-- as any report that misses the fast statement is (finalize.rs).
-- $1 dispatch_id, $2 run_attempt, $3 workflow_run_id, $4 started_at (ms)
-- of the first report's decision, $5 the reports in arrival order, a JSON
-- array of {"webhook_id", "progress", "body_sha256"} with distinct
-- webhook-ids. Returns, if the row was written, each report with a new
-- webhook-id and whether it changed the run; nothing otherwise.
with report as (
  select r.webhook_id, r.progress, r.body_sha256, r.ord
    from rows from (jsonb_to_recordset($5::text::jsonb)
                    as (webhook_id text, progress jsonb, body_sha256 text))
         with ordinality as r(webhook_id, progress, body_sha256, ord)
), seen as (
  select h.workflow_run_id, h.started_at is null as unstarted, h.progress
    from public.backup_history h
   where h.dispatch_id = $1::uuid
     and h.status = 'in_progress'
     and h.run_attempt = $2::int4
     and (h.workflow_run_id is null or h.workflow_run_id = $3::int8)
), fresh as (
  select r.*, row_number() over w as n, lag(r.progress) over w as before
    from report r
   -- A subquery per report, not `not exists`: the planner would make that an
   -- anti-join reading every delivery ever recorded.
   where (select true from public.backup_report_deliveries d
           where d.webhook_id = r.webhook_id) is null
  window w as (order by r.ord)
), judged as (
  select f.webhook_id, f.progress, f.body_sha256, f.ord,
         case when f.n = 1
              then s.workflow_run_id is null or s.unstarted
                   or f.progress is distinct from s.progress
              else f.progress is distinct from f.before end as changes
    from fresh f, seen s
), change as (
  select * from judged where changes
), applied as (
  update public.backup_history h set
    workflow_run_id = $3::int8,
    started_at = coalesce(h.started_at, to_timestamp($4::float8 / 1000)),
    progress = (select c.progress from change c order by c.ord desc limit 1),
    version = h.version + (select count(*) from change)
    from seen s
   where h.dispatch_id = $1::uuid
     and h.status = 'in_progress'
     and h.run_attempt = $2::int4
     and h.workflow_run_id is not distinct from s.workflow_run_id
     and (h.started_at is null) = s.unstarted
     and h.progress is not distinct from s.progress
     and exists (select from change)
  returning h.dispatch_id
), delivered as (
  insert into public.backup_report_deliveries (webhook_id, dispatch_id, body_sha256)
  select j.webhook_id, a.dispatch_id, decode(j.body_sha256, 'hex') from judged j, applied a
  on conflict do nothing
)
select j.webhook_id, j.changes from judged j, applied a
