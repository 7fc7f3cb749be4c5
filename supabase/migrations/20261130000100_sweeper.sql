-- The every-minute sweep: enabled where the server can run it, and saying
-- so where it cannot.
--
-- 20261129000200_reconcile.sql scheduled backup_invoke_sweep() but never
-- enabled pg_net, and a missing pg_net or Vault secret only raised a NOTICE
-- that nobody reads: on a project without them the sweep silently did
-- nothing, and a run nobody reported on stayed in_progress until someone
-- pressed the button. Now:
-- - pg_net and pg_cron are enabled where the server offers them, in the
--   schemas Supabase documents (pg_net in `extensions`, pg_cron in
--   `pg_catalog`), and the job is (re)scheduled;
-- - backup_invoke_sweep() writes why it could not call the function into
--   backup_settings.sweep_problem, and raises a WARNING (kept in the
--   server log and in cron.job_run_details);
-- - reconcile-backups records every sweep it runs (last_sweep_at), so that
--   backup-status can tell a frontend whether the sweeper is alive.
--
-- Plain PostgreSQL (tests, local development) has no pg_net and no Vault,
-- and may lack pg_cron: each step is guarded, and the migration applies
-- with a WARNING instead of failing.

alter table public.backup_settings
  -- The last sweep reconcile-backups ran when asked (pg_cron, `deno task
  -- dev`'s timer), and what it did: `changed` when it ended a run, else its
  -- word about GitHub (`ok`, `skipped`, `rate_limited`, ...). The quick
  -- sweep trigger-backup runs before a 409 is not recorded: it happens only
  -- when someone presses the button, and must not make a schedule that
  -- never fires look alive.
  add column last_sweep_at timestamptz,
  add column last_sweep_outcome text check (length(last_sweep_outcome) <= 40),
  -- Why the scheduled call could not be made (pg_net not enabled, a Vault
  -- secret not set); null once a call is made. Written by
  -- backup_invoke_sweep(), shown by backup-status.
  add column sweep_problem text check (length(sweep_problem) <= 1000);

-- Calls the reconcile-backups Edge Function over HTTP (pg_net), with the
-- function URL and a secret key kept in Supabase Vault:
--   select vault.create_secret('https://<ref>.supabase.co/functions/v1', 'backup_functions_url');
--   select vault.create_secret('<secret key>', 'backup_service_key');
-- (`backup_service_role_key`, the name the first version read, is still
-- read when `backup_service_key` is absent.) The key goes in both
-- `Authorization: Bearer` and `apikey`: a legacy service_role JWT is read
-- from the former, and the gateway looks for a new `sb_secret_...` key in
-- the latter.
--
-- Everything that can be missing is reported at once, so one look at
-- sweep_problem says all that is left to do. SECURITY DEFINER: pg_cron runs
-- it as the job's owner, and it must read Vault and write backup_settings
-- whoever that is; search_path is empty so that nothing can be shadowed.
create or replace function public.backup_invoke_sweep()
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  functions_url text;
  service_key text;
  problems text[] := '{}';
  problem text;
begin
  if to_regnamespace('net') is null then
    problems := problems || 'pg_net is not enabled'::text;
  end if;
  if to_regclass('vault.decrypted_secrets') is null then
    problems := problems || 'Supabase Vault is not available'::text;
  else
    -- Dynamic SQL: the vault schema may not exist when this is created.
    execute $q$select nullif(decrypted_secret, '') from vault.decrypted_secrets
                where name = 'backup_functions_url'$q$
      into functions_url;
    execute $q$select coalesce(
                  (select nullif(decrypted_secret, '') from vault.decrypted_secrets
                    where name = 'backup_service_key'),
                  (select nullif(decrypted_secret, '') from vault.decrypted_secrets
                    where name = 'backup_service_role_key'))$q$
      into service_key;
    if functions_url is null then
      problems := problems || 'Vault secret backup_functions_url is not set'::text;
    end if;
    if service_key is null then
      problems := problems || 'Vault secret backup_service_key is not set'::text;
    end if;
  end if;

  if cardinality(problems) = 0 then
    begin
      -- pg_net only queues the request: whether the function accepted it
      -- shows in last_sweep_at, which only a sweep it ran writes.
      execute $q$select net.http_post(
          url := $1,
          headers := jsonb_build_object(
            'Authorization', 'Bearer ' || $2,
            'apikey', $2,
            'Content-Type', 'application/json'),
          body := '{}'::jsonb,
          timeout_milliseconds := 10000)$q$
        using rtrim(functions_url, '/') || '/reconcile-backups', service_key;
    exception when others then
      problems := problems || ('pg_net did not accept the call: ' || sqlerrm);
    end;
  end if;

  problem := left(nullif(array_to_string(problems, '; '), ''), 1000);
  -- Written only when it changes: this runs every minute.
  update public.backup_settings
     set sweep_problem = problem
   where id and sweep_problem is distinct from problem;
  if problem is not null then
    raise warning 'backup sweep not invoked: %', problem;
  end if;
end
$$;

revoke execute on function public.backup_invoke_sweep() from public, anon, authenticated;

-- Enables pg_net and pg_cron where the server offers them and schedules
-- `backup-sweep` every minute. Safe to call again, which is how to finish
-- the setup on a project where an extension was enabled after this
-- migration ran:
--   select public.backup_schedule_sweep();
-- Never fails: what cannot be done is a WARNING, so that the migration
-- applies on plain PostgreSQL and on servers without these extensions.
create function public.backup_schedule_sweep()
returns void
language plpgsql
set search_path = ''
as $$
begin
  if not exists (select 1 from pg_available_extensions where name = 'pg_net') then
    raise warning 'backup sweep: pg_net is not available on this server; the scheduled sweep cannot call reconcile-backups';
  else
    begin
      create schema if not exists extensions;
      create extension if not exists pg_net with schema extensions;
    exception when others then
      raise warning 'backup sweep: pg_net could not be enabled: %', sqlerrm;
    end;
  end if;

  if not exists (select 1 from pg_available_extensions where name = 'pg_cron') then
    raise warning 'backup sweep not scheduled: pg_cron is not available on this server';
    return;
  end if;
  begin
    -- Fails unless pg_cron is preloaded and this is its database
    -- (cron.database_name).
    create extension if not exists pg_cron with schema pg_catalog;
    -- A job of the same name is replaced, so scheduling again is harmless.
    perform cron.schedule('backup-sweep', '* * * * *', 'select public.backup_invoke_sweep()');
  exception when others then
    raise warning 'backup sweep not scheduled: %', sqlerrm;
  end;
end
$$;

revoke execute on function public.backup_schedule_sweep() from public, anon, authenticated;

select public.backup_schedule_sweep();
