-- The dead man's switch: raises a `silence` alert once per silence. The
-- core decided that backups have been silent since $1 (unix ms: the last
-- success, or when alerting began) for longer than alert_after_hours; the
-- guard makes sure only one sweep raises it for that start, however many
-- run at once. A later success clears the open problem with a recovery
-- (raise_alerts.sql) and moves the start, so the next silence is new.
-- The start is also checked again against the clock it was read from
-- (alert_clock in store.rs): a success that committed between that read
-- and this statement has moved it, and the silence is over before it was
-- raised (else the alert would name the new success as the last good
-- backup, and the next success would send a needless recovery).
-- $1 the silence's start (ms), $2 facts (JSON object), $3 destinations (a
-- JSON array of labels). Returns a row when it raised the silence.
with raised as (
  update public.backup_alert_state set
    open_event = 'silence',
    silence_from = to_timestamp($1::float8 / 1000)
  where id and silence_from is distinct from to_timestamp($1::float8 / 1000)
    and floor(extract(epoch from coalesce(
          (select st.last_success_at from public.backup_settings st where st.id),
          since)) * 1000)::float8 = $1::float8
  returning 1
), alerted as (
  insert into public.backup_notifications (event, destination, payload)
  select 'silence', d.label,
         $2::text::jsonb || jsonb_build_object(
           'event', 'silence',
           'last_success', (
             select case when st.last_success_at is null then null else jsonb_build_object(
               'dispatch_id', st.last_success_dispatch_id,
               's3_key', st.last_success_s3_key,
               'finished_at', to_char(st.last_success_at at time zone 'UTC',
                                      'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
             end
             from public.backup_settings st where st.id))
  from raised, jsonb_array_elements_text($3::text::jsonb) d(label)
)
select true as raised from raised
