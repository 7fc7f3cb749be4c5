-- is_backup_admin() answers a client only about itself.
--
-- The RLS policies call it with auth.uid(), and the Edge Functions (which
-- connect as the owner, without request.jwt.claims) with a verified token's
-- subject. A signed-in client calling it directly (PostgREST RPC) with some
-- other user's id must not learn whether that user is an admin, so when a
-- request carries a user (auth.uid() is set) only that user's id can be
-- true.
create or replace function public.is_backup_admin(uid uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select uid is not null
     and (auth.uid() is null or auth.uid() = uid)
     and exists (select 1 from public.backup_admins a where a.user_id = uid)
$$;
