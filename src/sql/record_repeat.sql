-- A repeat, recorded by the statement that finds it (appended to
-- apply_report.sql when its report may be one, store.rs): when the guarded
-- update wrote nothing and the run already ended exactly as this report
-- ends it (run::Ended: failed for the reason the report gives, on the
-- workflow's own word, in its attempt and workflow run), the delivery is
-- recorded here, so that the core, which decides from the row read in the
-- same statement that the report changes nothing, answers without a second
-- round trip. A delivery seen before is left as it is (a retry, which the
-- core tells apart by the read).
-- $reason, $attempt and $workflow_run become positional parameters; $1 and
-- $2 are apply_report.sql's dispatch_id and webhook_id, $body its body
-- hash parameter.
, repeat as (
  insert into public.backup_report_deliveries (webhook_id, dispatch_id, body_sha256)
  select $2::text, r.dispatch_id, decode($body::text, 'hex')
    from public.backup_history r
   where r.dispatch_id = $1::uuid
     and not exists (select from applied)
     and r.status = 'failed'
     and r.failure_reason = $reason::text
     and r.outcome_source = 'report'
     and r.run_attempt = $attempt::int4
     and r.workflow_run_id = $workflow_run::int8
  on conflict do nothing
  returning dispatch_id
)
