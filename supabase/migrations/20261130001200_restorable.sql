-- Restorable backups (issue 12): the verdict of the workflow's check of the
-- stored object, and retention decided by the server.

-- `verification` is what the workflow found when it read the object back
-- from S3 ({mode, ok, tables, rows, mismatches, error}); `verified_at` is
-- when finalize-backup stored it. A failed verification leaves the run a
-- success: the object exists, and deleting the row would hide it.
alter table public.backup_history
  add column verified_at timestamptz,
  add column verification jsonb
    constraint verification_shape check (
      jsonb_typeof(verification) = 'object'
      and verification ->> 'mode' in ('list', 'restore')
      and jsonb_typeof(verification -> 'ok') = 'boolean'),
  -- When the workflow reported the object deleted under the retention
  -- policy. The row stays: the history is the record of what ran.
  add column pruned_at timestamptz,
  add constraint verified_only_success
    check (verification is null or (status = 'success' and verified_at is not null)),
  add constraint pruned_only_success check (pruned_at is null or status = 'success');

-- Retention. Null retention_days (the default) never prunes: an upgrade must
-- not start deleting objects nobody asked to delete. The newest
-- retention_keep successful backups are never pruned, however old.
alter table public.backup_settings
  add column retention_days integer check (retention_days between 1 and 36500),
  add column retention_keep integer not null default 7 check (retention_keep between 1 and 10000);

-- The successes whose objects retention may still delete, newest first.
create index backup_history_unpruned_success
  on public.backup_history (finished_at desc)
  where status = 'success' and pruned_at is null;
