-- Alerts (issue 13): a transactional outbox of notifications.
--
-- An alert is a row of backup_notifications, inserted by the very statement
-- that makes the transition causing it (src/sql/raise_alerts.sql, part of
-- apply_report.sql and update_run.sql), so it commits exactly when the
-- transition does: a crash can neither lose it nor send one for a
-- transition that never happened. A sender (src/alerts.rs) then delivers
-- the pending rows, at least once, under one webhook-id per row.

-- How long without a successful backup before the dead man's switch raises
-- a `silence` alert. A day plus two hours of slack suits a daily schedule.
alter table public.backup_settings
  add column alert_after_hours integer not null default 26
    check (alert_after_hours > 0);

-- One row (id is always true): what the alerts have said so far, so that a
-- recovery and a silence are each raised once however many statements race.
-- open_event is the last problem raised and not yet recovered from; the
-- statement of the first success after it clears it and is the only one
-- that raises the recovery (`... where open_event is not null returning`).
-- silence_from is the start of the silence last raised (the last success
-- then, or `since`): a silence is raised once for each start.
create table public.backup_alert_state (
  id boolean primary key default true check (id),
  open_event text check (open_event in ('failed', 'verification_failed', 'silence')),
  silence_from timestamptz,
  -- When alerting began: a project that never had a successful backup is
  -- silent since then.
  since timestamptz not null default now()
);
insert into public.backup_alert_state default values;

create table public.backup_notifications (
  id bigint generated always as identity primary key,
  event text not null
    check (event in ('failed', 'verification_failed', 'silence', 'recovery', 'test')),
  -- The run the event is about (null for a silence and a test).
  dispatch_id uuid,
  created_at timestamptz not null default now(),
  -- Which configured destination: the name of its URL's secret
  -- (BACKUP_ALERT_WEBHOOK_URL, BACKUP_ALERT_WEBHOOK_URL_2, ...), never the
  -- URL itself, which is a secret (a Slack webhook URL is a credential).
  destination text not null check (destination ~ '^BACKUP_ALERT_WEBHOOK_URL(_[2-9])?$'),
  -- The facts the message is made from (the run, the last good backup),
  -- rendered per format when sent. Holds no secret and no signed URL.
  payload jsonb not null check (jsonb_typeof(payload) = 'object'),
  -- The Standard Webhooks idempotency key, fixed here once: every retry of
  -- this row sends the same one, so a receiver can drop the duplicates that
  -- at-least-once delivery implies.
  webhook_id text not null unique default ('msg_' || replace(gen_random_uuid()::text, '-', '')),
  status text not null default 'pending' check (status in ('pending', 'delivered', 'dead')),
  -- Sends started (a claim counts one, whether or not it was answered).
  attempts integer not null default 0 check (attempts >= 0),
  next_attempt_at timestamptz not null default now(),
  -- A sender's lease: while it is in the future, no other sender claims the
  -- row. A sender that dies after sending leaves it to expire, and the row
  -- is sent again, with the same webhook_id.
  claimed_until timestamptz,
  -- Why the last attempt failed: a status code or a fixed phrase written by
  -- the core, never an answer body or a URL.
  last_error text check (length(last_error) <= 500),
  delivered_at timestamptz,
  constraint delivered_has_time check ((status = 'delivered') = (delivered_at is not null))
);

-- The sender's claim: pending rows that are due, oldest first.
create index backup_notifications_due
  on public.backup_notifications (next_attempt_at, id)
  where status = 'pending';

-- The status API's list, newest first.
create index backup_notifications_newest_first
  on public.backup_notifications (created_at desc, id desc);

-- Written only by the Edge Functions (the owner). Admins see notifications
-- through the status API, which checks the admin itself; no client role
-- may read or write these tables directly.
alter table public.backup_notifications enable row level security;
alter table public.backup_alert_state enable row level security;
revoke all on public.backup_notifications, public.backup_alert_state
  from anon, authenticated;
