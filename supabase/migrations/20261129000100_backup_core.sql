-- Backup control plane: history, settings, admins.
--
-- The Edge Functions (Rust core in WebAssembly) make every decision, but the
-- database is the last line of defence: the constraints below make the states
-- a bug could produce unrepresentable, so that the history cannot be corrupted
-- even by code that is wrong.
--
-- Runs unchanged on a Supabase project. On plain PostgreSQL, apply
-- supabase/shim/supabase_shim.sql first (roles, auth.uid(), auth.jwt()).

-- Who may trigger and read backups. One row per admin user (auth.users.id).
-- No foreign key to auth.users: deleting a user must not cascade into, or be
-- blocked by, the backup history.
create table public.backup_admins (
  user_id uuid primary key,
  created_at timestamptz not null default now()
);

-- The single place that decides whether a user is a backup admin. The Edge
-- Functions call it with the verified token's subject; the RLS policies call
-- it with auth.uid(). SECURITY DEFINER so that policies can read
-- backup_admins without granting clients access to it.
create function public.is_backup_admin(uid uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select uid is not null
     and exists (select 1 from public.backup_admins a where a.user_id = uid)
$$;

-- One row (id is always true). Holds the last successful backup and the
-- deadlines that bring runs which never report to a terminal state.
create table public.backup_settings (
  id boolean primary key default true check (id),
  last_success_at timestamptz,
  last_success_dispatch_id uuid,
  last_success_s3_key text,
  -- Dispatched but no `started` report within this many seconds: the run is
  -- failed with failure_reason = 'lost' (GitHub dropped it, or it never ran).
  start_deadline_seconds integer not null default 600
    check (start_deadline_seconds between 60 and 86400),
  -- Started but no final report within this many seconds: failed with
  -- failure_reason = 'timed_out'. Keep it above the workflow's job timeout.
  max_runtime_seconds integer not null default 7200
    check (max_runtime_seconds between 60 and 604800),
  -- GitHub says the run completed but its final report has not arrived: wait
  -- this long for the report before deciding from GitHub's conclusion.
  report_grace_seconds integer not null default 60
    check (report_grace_seconds between 0 and 3600),
  updated_at timestamptz not null default now()
);
insert into public.backup_settings default values;

create table public.backup_history (
  id bigint generated always as identity primary key,
  -- Issued by trigger-backup (or by finalize-backup for a scheduled run) as a
  -- UUIDv7, so ids sort by time. Never derived from github.run_id.
  dispatch_id uuid not null unique,
  -- Frontends depend on exactly these three values; the detail of a failure
  -- goes in failure_reason.
  status text not null default 'in_progress'
    check (status in ('in_progress', 'success', 'failed')),
  failure_reason text
    check (failure_reason in ('step_failed', 'cancelled', 'timed_out', 'dispatch_failed', 'lost')),
  s3_key text,
  error_text text check (length(error_text) <= 4000),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  started_at timestamptz,
  finished_at timestamptz,
  workflow_run_id bigint check (workflow_run_id > 0),
  run_attempt integer not null default 1 check (run_attempt >= 1),
  run_url text,
  trigger_source text not null check (trigger_source in ('manual', 'schedule')),
  -- auth.users.id of the admin who pressed the button; null for schedules.
  triggered_by uuid,
  reason text check (length(reason) <= 500),
  size_bytes bigint check (size_bytes >= 0),
  sha256 text check (sha256 ~ '^[0-9a-f]{64}$'),
  -- Latest `progress` report ({"phase": ..., ...}), shown by the status API.
  progress jsonb,
  -- Who decided the terminal state: the workflow's own report, the dispatch
  -- call, a passed deadline, or GitHub's recorded conclusion. A late report
  -- from the workflow may correct an outcome the server only inferred.
  outcome_source text check (outcome_source in ('report', 'dispatch', 'deadline', 'github')),
  -- Optimistic concurrency: every write is `... where version = $seen`, so
  -- two concurrent reports can never both apply a transition.
  version integer not null default 0,

  constraint failed_has_reason check ((status = 'failed') = (failure_reason is not null)),
  constraint success_has_object check (status <> 'success' or (s3_key is not null and s3_key <> '')),
  constraint terminal_has_finish check ((status = 'in_progress') = (finished_at is null)),
  constraint terminal_has_source check ((status = 'in_progress') = (outcome_source is null))
);

-- At most one backup runs at a time. Two clicks, or a click racing a
-- schedule, cannot both insert an in_progress row: the second insert fails
-- with a unique violation, which the core turns into 409 backup_in_progress.
create unique index backup_history_one_in_progress
  on public.backup_history ((true))
  where status = 'in_progress';

-- History pages, newest first (keyset pagination on (created_at, id)).
create index backup_history_newest_first
  on public.backup_history (created_at desc, id desc);

-- Deliveries of finalize-backup reports, by Standard Webhooks `webhook-id`.
-- A retried delivery (curl --retry) is recognised and answered with the
-- same result, and a scheduled run's retried registration gets the same
-- dispatch id instead of a second run.
create table public.backup_report_deliveries (
  webhook_id text primary key check (length(webhook_id) between 1 and 256),
  dispatch_id uuid not null,
  received_at timestamptz not null default now()
);
create index backup_report_deliveries_received_at
  on public.backup_report_deliveries (received_at);

-- updated_at is maintained by the database, not trusted from callers.
create function public.backup_touch_updated_at()
returns trigger
language plpgsql
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

create trigger backup_history_touch
  before update on public.backup_history
  for each row execute function public.backup_touch_updated_at();

-- The last successful backup is written by the same transaction that marks
-- the run successful, so backup_settings can never drift from the history.
create function public.backup_record_success()
returns trigger
language plpgsql
as $$
begin
  if new.status = 'success' and (tg_op = 'INSERT' or old.status is distinct from 'success') then
    update public.backup_settings
       set last_success_at = new.finished_at,
           last_success_dispatch_id = new.dispatch_id,
           last_success_s3_key = new.s3_key,
           updated_at = now()
     where id
       and (last_success_at is null or last_success_at <= new.finished_at);
  end if;
  return null;
end
$$;

create trigger backup_history_record_success
  after insert or update of status on public.backup_history
  for each row execute function public.backup_record_success();

-- Wake long-polling status readers (LISTEN backup_history) on every change.
-- The payload is the dispatch id only; readers re-read the row.
create function public.backup_notify_change()
returns trigger
language plpgsql
as $$
begin
  perform pg_notify('backup_history', new.dispatch_id::text);
  return null;
end
$$;

create trigger backup_history_notify
  after insert or update on public.backup_history
  for each row execute function public.backup_notify_change();

-- Row level security. The Edge Functions connect as the database owner
-- (SUPABASE_DB_URL) and are the only writers. Clients (anon, authenticated)
-- may only read, and only when they are backup admins; no client role may
-- insert, update or delete anything here.
alter table public.backup_history enable row level security;
alter table public.backup_settings enable row level security;
alter table public.backup_admins enable row level security;
alter table public.backup_report_deliveries enable row level security;

revoke all on public.backup_history, public.backup_settings,
  public.backup_admins, public.backup_report_deliveries
  from anon, authenticated;
grant select on public.backup_history, public.backup_settings to authenticated;
revoke execute on function public.is_backup_admin(uuid) from public, anon;
grant execute on function public.is_backup_admin(uuid) to authenticated, service_role;

create policy backup_history_admin_read on public.backup_history
  for select to authenticated
  using (public.is_backup_admin(auth.uid()));

create policy backup_settings_admin_read on public.backup_settings
  for select to authenticated
  using (public.is_backup_admin(auth.uid()));

-- Supabase Realtime (postgres_changes) streams the history to admins; the
-- SELECT policy above decides who receives which rows.
do $$
begin
  if exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    alter publication supabase_realtime add table public.backup_history;
  end if;
end
$$;
