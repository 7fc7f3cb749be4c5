// The reconcile migration schedules the sweep with pg_cron where it can, and
// is guarded where it cannot.
//
// pg_cron can only be created in its own database (cron.database_name). The
// test cluster (scripts/pg_cluster.sh) preloads it with cron.database_name =
// 'postgres' when Debian's postgresql-15-cron is installed, so this test
// migrates the `postgres` database of TEST_DATABASE_URL's server. No other
// test touches that database's tables: tests/support/db.ts only connects to
// it to create and drop its template copies, which are made from template1,
// never from `postgres`. Everything this test creates there is removed at
// the end (the cluster-wide roles anon/authenticated/service_role stay: the
// template copies use them too). A run that was killed half way leaves its
// objects behind; the next run removes them before it starts.
//
// A fresh template copy (freshDatabase) is the other case: pg_cron is
// preloaded but this is not its database, so the migration applied without
// scheduling anything.

import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix
import postgres from "npm:postgres@3.4.9";
import { migrate, migrationFiles } from "../scripts/db_migrate.ts";
import { freshDatabase, testDatabaseUrl, withDatabase } from "./support/db.ts";

const JOB = {
  jobname: "backup-sweep",
  schedule: "* * * * *",
  command: "select public.backup_invoke_sweep()",
};

type Sql = postgres.Sql;

/** The server's `postgres` database, with its notices collected. */
function connect(notices: string[] = []): Sql {
  return postgres(withDatabase(testDatabaseUrl(), "postgres"), {
    max: 1,
    onnotice: (n) => notices.push(String(n.message)),
  });
}

interface CronSupport {
  available: boolean;
  preloaded: boolean;
  database: string | null;
}

async function cronSupport(sql: Sql): Promise<CronSupport> {
  const [row] = await sql`
    select exists (select 1 from pg_available_extensions where name = 'pg_cron')
             as available,
           'pg_cron' = any(string_to_array(
             replace(current_setting('shared_preload_libraries'), ' ', ''), ','))
             as preloaded,
           current_setting('cron.database_name', true) as database`;
  return row as unknown as CronSupport;
}

/** What existed in `postgres` before the test, so only ours is dropped. */
interface Before {
  cron: boolean;
  auth: boolean;
  publication: boolean;
}

async function snapshot(sql: Sql): Promise<Before> {
  const [row] = await sql`
    select exists (select 1 from pg_extension where extname = 'pg_cron') as cron,
           to_regnamespace('auth') is not null as auth,
           exists (select 1 from pg_publication where pubname = 'supabase_realtime')
             as publication`;
  return row as unknown as Before;
}

/** Removes what the shim and the migrations created in `postgres`. */
async function removeMigrated(sql: Sql, before: Before): Promise<void> {
  await sql.begin(async (tx) => {
    const [{ cron }] = await tx`
      select to_regclass('cron.job') is not null as cron`;
    if (cron) {
      await tx`
        select cron.unschedule(jobid) from cron.job
         where jobname = ${JOB.jobname}`;
    }
    if (!before.cron) await tx`drop extension if exists pg_cron`;
    await tx.unsafe(`
      drop table if exists public.backup_history, public.backup_settings,
        public.backup_admins, public.backup_report_deliveries cascade;
      drop function if exists public.is_backup_admin(uuid),
        public.backup_touch_updated_at(), public.backup_record_success(),
        public.backup_notify_change(), public.backup_invoke_sweep();
      drop schema if exists supabase_migrations cascade;
    `).simple();
    if (!before.auth) await tx`drop schema if exists auth cascade`;
    if (!before.publication) {
      await tx`drop publication if exists supabase_realtime`;
    }
    const [{ roles }] = await tx`
      select count(*)::int as roles from pg_roles
       where rolname in ('anon', 'authenticated', 'service_role')`;
    if (roles === 3) {
      await tx`
        revoke usage on schema public from anon, authenticated, service_role`;
    }
  });
}

const admin = connect();
const support = await cronSupport(admin).finally(() =>
  admin.end({ timeout: 5 })
);
const cronUsable = support.available && support.preloaded &&
  support.database === "postgres";

Deno.test({
  name:
    "the reconcile migration schedules backup-sweep every minute in pg_cron's database",
  ignore: !cronUsable,
  async fn() {
    const notices: string[] = [];
    const sql = connect(notices);
    let before: Before | undefined;
    try {
      // Left behind by an interrupted run: start from a clean database. (On
      // a connection of its own: pg_cron caches the OIDs of its tables per
      // session, so a session that dropped the extension cannot use the
      // one created again by the migration.)
      const [{ leftover }] = await sql`
        select to_regclass('public.backup_history') is not null as leftover`;
      if (leftover) {
        const cleaner = connect();
        try {
          await removeMigrated(cleaner, {
            cron: false,
            auth: false,
            publication: false,
          });
        } finally {
          await cleaner.end({ timeout: 5 });
        }
      }
      before = await snapshot(sql);

      const versions = (await migrationFiles()).map((f) => f.version);
      const url = withDatabase(testDatabaseUrl(), "postgres");
      assert.deepEqual(await migrate(url), versions);

      const jobs = await sql`
        select jobname, schedule, command, database, username, active
          from cron.job where jobname = ${JOB.jobname}`;
      assert.deepEqual(
        jobs.map((j) => ({ ...j })),
        [{ ...JOB, database: "postgres", username: "postgres", active: true }],
      );

      // What the job runs: here (no pg_net, no vault) it only says so.
      notices.length = 0;
      const [{ result }] = await sql`
        select public.backup_invoke_sweep()::text as result`;
      assert.equal(result, "");
      assert.deepEqual(notices, [
        "backup sweep: pg_net or vault is not installed; nothing invoked",
      ]);

      // Applying the migrations again changes nothing: still one job.
      assert.deepEqual(await migrate(url), []);
      const [{ n }] = await sql`
        select count(*)::int as n from cron.job where jobname = ${JOB.jobname}`;
      assert.equal(n, 1);
    } finally {
      try {
        if (before) await removeMigrated(sql, before);
        const [{ gone }] = await sql`
          select to_regclass('public.backup_history') is null
             and to_regnamespace('supabase_migrations') is null as gone`;
        assert.ok(gone, "the postgres database was cleaned up");
      } finally {
        await sql.end({ timeout: 5 });
      }
    }
  },
});

Deno.test(
  "the reconcile migration is guarded: a database that is not pg_cron's migrates without a job",
  async () => {
    const db = await freshDatabase();
    try {
      const versions = (await migrationFiles()).map((f) => f.version);
      const applied = await db.sql`
        select version from supabase_migrations.schema_migrations
         order by version`;
      assert.deepEqual(applied.map((r) => r.version), versions);
      const [row] = await db.sql`
        select to_regnamespace('cron') is null as no_cron_schema,
               exists (select 1 from pg_extension where extname = 'pg_cron')
                 as cron_extension,
               to_regprocedure('public.backup_invoke_sweep()') is not null
                 as has_invoke,
               exists (
                 select 1 from information_schema.columns
                  where table_schema = 'public'
                    and table_name = 'backup_settings'
                    and column_name = 'github_backoff_until'
               ) as has_backoff`;
      assert.deepEqual({ ...row }, {
        no_cron_schema: true,
        cron_extension: false,
        has_invoke: true,
        has_backoff: true,
      });

      if (cronUsable) {
        // Nor did the template's migration schedule anything in pg_cron's
        // own database on its behalf.
        const sql = connect();
        try {
          const [{ cron }] = await sql`
            select to_regclass('cron.job') is not null as cron`;
          if (cron) {
            const others = await sql`
              select jobname, database from cron.job
               where database <> 'postgres'`;
            assert.deepEqual([...others], []);
          }
        } finally {
          await sql.end({ timeout: 5 });
        }
      }
    } finally {
      await db.close();
    }
  },
);
