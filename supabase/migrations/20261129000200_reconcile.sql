-- Reconciliation: no run stays in_progress.
--
-- The decisions (deadlines, GitHub's conclusions) are made by the core
-- (src/reconcile.rs) when the reconcile-backups function runs. This
-- migration stores what the sweep needs between runs and schedules it.

-- When GitHub's API asked us to back off (Retry-After, x-ratelimit-reset),
-- sweeps until then decide from deadlines only and make no GitHub call.
alter table public.backup_settings
  add column github_backoff_until timestamptz;

-- Invokes the reconcile-backups Edge Function over HTTP (pg_net), with the
-- function URL and the service role key kept in Supabase Vault:
--   select vault.create_secret('https://<ref>.supabase.co/functions/v1', 'backup_functions_url');
--   select vault.create_secret('<service role key>', 'backup_service_role_key');
-- Where pg_net or Vault is missing (plain PostgreSQL) it only says so.
create function public.backup_invoke_sweep()
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  functions_url text;
  service_key text;
begin
  if to_regnamespace('net') is null or to_regnamespace('vault') is null then
    raise notice 'backup sweep: pg_net or vault is not installed; nothing invoked';
    return;
  end if;
  execute $q$select decrypted_secret from vault.decrypted_secrets where name = 'backup_functions_url'$q$
    into functions_url;
  execute $q$select decrypted_secret from vault.decrypted_secrets where name = 'backup_service_role_key'$q$
    into service_key;
  if functions_url is null or service_key is null then
    raise notice 'backup sweep: vault secrets backup_functions_url / backup_service_role_key are not set';
    return;
  end if;
  execute $q$select net.http_post(
      url := $1,
      headers := jsonb_build_object('Authorization', 'Bearer ' || $2, 'Content-Type', 'application/json'),
      body := '{}'::jsonb,
      timeout_milliseconds := 10000)$q$
    using rtrim(functions_url, '/') || '/reconcile-backups', service_key;
end
$$;

revoke execute on function public.backup_invoke_sweep() from public, anon, authenticated;

-- Every minute, where pg_cron can be enabled. Guarded: on a server without
-- pg_cron (or where it is not preloaded, or this is not its database) the
-- migration still applies and the sweep is left to the other callers
-- (trigger-backup runs it before refusing a second backup; `deno task dev`
-- runs it on a timer).
do $$
begin
  if exists (select 1 from pg_available_extensions where name = 'pg_cron') then
    begin
      -- In pg_catalog, as the Supabase docs enable it (and as
      -- backup_schedule_sweep in 20261130000100_sweeper.sql does). This
      -- line named no schema until 2026-12-01, which put pg_cron in the
      -- first schema on the search path (public) on a fresh install; the
      -- extension cannot be moved, and where it is makes no difference to
      -- the sweep (its functions and tables are in the schema `cron`).
      create extension if not exists pg_cron with schema pg_catalog;
      perform cron.schedule('backup-sweep', '* * * * *', 'select public.backup_invoke_sweep()');
    exception when others then
      raise notice 'backup sweep not scheduled: %', sqlerrm;
    end;
  else
    raise notice 'backup sweep not scheduled: pg_cron is not available';
  end if;
end
$$;
