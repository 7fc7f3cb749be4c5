-- The outbox half of a transition (appended to apply_report.sql and
-- update_run.sql after their CTEs, store.rs): the alert rows are inserted
-- by the statement that makes the transition, so they commit exactly when
-- it does, and only if its guarded update returned the row (`h`). The core
-- decided what the transition raises ($kind, alerts.rs):
--  * failed, verification_failed: the alert, and the problem stays open;
--  * succeeded: a recovery, only if a problem is open. The singleton row's
--    lock orders concurrent successes: the first clears open_event and
--    raises the recovery, the others find it clear and raise nothing.
-- One row per destination ($to, a JSON array of their labels); $facts is
-- the JSON object the message is made from, to which the row's own link and
-- start time (which a report's decision may not carry: apply_report.sql
-- keeps the row's) and the last good backup known before this statement
-- are added.
-- $kind, $facts and $to become positional parameters (store.rs).
, alert_state as (
  update public.backup_alert_state s set
    open_event = case when $kind::text = 'succeeded' then null else $kind::text end
  where s.id
    and exists (select from h)
    and ($kind::text in ('failed', 'verification_failed')
         or ($kind::text = 'succeeded' and s.open_event is not null))
  returning case when $kind::text = 'succeeded' then 'recovery' else $kind::text end as event
), alerted as (
  insert into public.backup_notifications (event, dispatch_id, destination, payload)
  select a.event, h.dispatch_id, d.label,
         $facts::text::jsonb || jsonb_build_object(
           'event', a.event,
           'run', ($facts::text::jsonb -> 'run') || jsonb_build_object(
             'run_url', h.run_url,
             'started_at', to_char(h.started_at at time zone 'UTC',
                                   'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
           'last_success', (
             select case when st.last_success_at is null then null else jsonb_build_object(
               'dispatch_id', st.last_success_dispatch_id,
               's3_key', st.last_success_s3_key,
               'finished_at', to_char(st.last_success_at at time zone 'UTC',
                                      'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
             end
             from public.backup_settings st where st.id))
  from alert_state a, h, jsonb_array_elements_text($to::text::jsonb) d(label)
)
