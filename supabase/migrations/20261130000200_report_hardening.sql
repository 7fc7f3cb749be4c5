-- Hardening found by the attack list (issue 11).

-- A delivery remembers the SHA-256 of its body, so that a webhook-id sent
-- again with another body is refused (409 webhook_id_reused) instead of
-- being answered as a retry of the first. Null for deliveries recorded
-- before this column existed: those ids are treated as retries, as before.
alter table public.backup_report_deliveries
  add column body_sha256 text
  check (body_sha256 ~ '^[0-9a-f]{64}$');

-- is_backup_admin() answered true about another user for a request whose
-- claims have no `sub` (auth.uid() is null there, which the previous
-- version took for "no request at all", the functions' own connection).
-- Now: a request that names a user may ask only about that user; one that
-- carries claims without a user learns nothing; only a connection without
-- request claims (the Edge Functions, connecting as the owner) may ask
-- about anyone.
create or replace function public.is_backup_admin(uid uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select uid is not null
     and case
           when auth.uid() is not null then auth.uid() = uid
           else coalesce(nullif(current_setting('request.jwt.claims', true), ''),
                         nullif(current_setting('request.jwt.claim.sub', true), '')) is null
         end
     and exists (select 1 from public.backup_admins a where a.user_id = uid)
$$;
