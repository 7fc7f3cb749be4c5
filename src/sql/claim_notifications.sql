-- The sender's claim: up to $3 pending rows that are due at $1 (unix ms)
-- and not leased to another sender, leased to this one until $1 + $2. SKIP
-- LOCKED lets concurrent senders (finalize-backup right after a transition,
-- the every-minute sweep) take disjoint rows instead of waiting for each
-- other, and the lease keeps a row from being claimed again while its send
-- may still be under way. `attempts` counts the claim: the sender settles
-- the row only if it is still this claim (settle_notification.sql).
--
-- A row raised by a transition or a test alert is due at once by the
-- database's clock (the column's default, in microseconds). The sender's
-- clock is milliseconds, truncated, and on hosted Supabase runs on another
-- machine, so it can trail that default: the sender that raised the row
-- would then find nothing due and leave its own alert to the next sweep. So
-- a row is due once either clock has reached it; the lease stays on the
-- sender's clock, which set it.
with due as (
  select id from public.backup_notifications
  where status = 'pending'
    and next_attempt_at <= greatest(to_timestamp($1::float8 / 1000), now())
    and (claimed_until is null or claimed_until <= to_timestamp($1::float8 / 1000))
  order by next_attempt_at, id
  limit $3::int4
  for update skip locked
), claimed as (
  update public.backup_notifications n
     set claimed_until = to_timestamp(($1::float8 + $2::float8) / 1000),
         attempts = n.attempts + 1
  from due where n.id = due.id
  returning n.*
)
-- followed by notification_columns.sql `from claimed n order by n.id`
-- (store.rs).
