// The reconcile and sweeper migrations schedule the sweep with pg_cron where
// they can, and are guarded where they cannot: the migrations apply, and
// what could not be done is a WARNING.
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
// A fresh template copy (freshDatabase) is the second case: pg_cron is
// preloaded but this is not its database, so the migration applied without
// scheduling anything. The third is a server where pg_cron cannot be
// enabled at all: a cluster of its own, started without it in
// shared_preload_libraries (PG_CLUSTER_CRON=off scripts/pg_cluster.sh).
//
// pg_net and Supabase Vault cannot be installed here (Debian has no
// package for either), so what is tested of backup_invoke_sweep() is its
// refusal: the WARNING and backup_settings.sweep_problem. Its call through
// net.http_post, the Vault secrets and the clearing of sweep_problem after
// a call are not.

import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix
import postgres from "npm:postgres@3.4.9";
import { migrate, migrationFiles } from "../scripts/db_migrate.ts";
import { freshDatabase, testDatabaseUrl, withDatabase } from "./support/db.ts";
import { freePort, run } from "../scripts/process.ts";

const JOB = {
  jobname: "backup-sweep",
  schedule: "* * * * *",
  command: "select public.backup_invoke_sweep()",
};

type Sql = postgres.Sql;

/** What the migration and backup_schedule_sweep() warn about here. */
const NO_PG_NET =
  "WARNING: backup sweep: pg_net is not available on this server; the scheduled sweep cannot call reconcile-backups";
/** What backup_invoke_sweep() records where neither pg_net nor Vault is. */
const PROBLEM = "pg_net is not enabled; Supabase Vault is not available";

/** A client of `url`, its notices collected as "SEVERITY: message". */
function client(url: string, notices: string[] = []): Sql {
  return postgres(url, {
    max: 1,
    onnotice: (n) => notices.push(`${n.severity}: ${n.message}`),
  });
}

/** The server's `postgres` database, with its notices collected. */
function connect(notices: string[] = []): Sql {
  return client(withDatabase(testDatabaseUrl(), "postgres"), notices);
}

/** backup_settings' sweeper columns. */
async function sweeperColumns(sql: Sql) {
  const [row] = await sql`
    select last_sweep_at, last_sweep_outcome, sweep_problem
      from public.backup_settings`;
  return { ...row };
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
        public.backup_notify_change(), public.backup_invoke_sweep(),
        public.backup_schedule_sweep();
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

/** Why a database that is not pg_cron's cannot schedule, on this server. */
function notScheduled(): string {
  const why = !support.available
    ? "pg_cron is not available on this server"
    : !support.preloaded
    ? 'unrecognized configuration parameter "cron.database_name"'
    : `can only create extension in database ${support.database}`;
  return `backup sweep not scheduled: ${why}`;
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

      // In the schema the Supabase docs give it, whichever migration
      // created it.
      const [{ schema }] = await sql`
        select extnamespace::regnamespace::text as schema
          from pg_extension where extname = 'pg_cron'`;
      assert.equal(schema, "pg_catalog");

      const jobs = await sql`
        select jobname, schedule, command, database, username, active
          from cron.job where jobname = ${JOB.jobname}`;
      assert.deepEqual(
        jobs.map((j) => ({ ...j })),
        [{ ...JOB, database: "postgres", username: "postgres", active: true }],
      );

      // What the job runs: here (no pg_net, no vault) it says so, as a
      // WARNING and in backup_settings.
      notices.length = 0;
      const [{ result }] = await sql`
        select public.backup_invoke_sweep()::text as result`;
      assert.equal(result, "");
      assert.deepEqual(notices, [
        `WARNING: backup sweep not invoked: ${PROBLEM}`,
      ]);
      assert.deepEqual(await sweeperColumns(sql), {
        last_sweep_at: null,
        last_sweep_outcome: null,
        sweep_problem: PROBLEM,
      });

      // Applying the migrations again changes nothing: still one job.
      assert.deepEqual(await migrate(url), []);
      const [{ n, jobid }] = await sql`
        select count(*)::int as n, min(jobid)::int as jobid
          from cron.job where jobname = ${JOB.jobname}`;
      assert.equal(n, 1);

      // Nor does scheduling again by hand (after enabling an extension):
      // the job of the same name is replaced in place.
      notices.length = 0;
      await sql`select public.backup_schedule_sweep()`;
      assert.deepEqual(notices, [
        NO_PG_NET,
        'NOTICE: extension "pg_cron" already exists, skipping',
      ]);
      const again = await sql`
        select jobid::int, jobname, schedule, command, active
          from cron.job where jobname = ${JOB.jobname}`;
      assert.deepEqual(again.map((j) => ({ ...j })), [
        { jobid, ...JOB, active: true },
      ]);
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
  "the migrations are guarded: a database that is not pg_cron's migrates without a job, with WARNINGs",
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
               ) as has_backoff,
               to_regnamespace('extensions') is null as no_extensions_schema`;
      assert.deepEqual({ ...row }, {
        no_cron_schema: true,
        cron_extension: false,
        has_invoke: true,
        has_backoff: true,
        no_extensions_schema: true,
      });
      assert.deepEqual(await sweeperColumns(db.sql), {
        last_sweep_at: null,
        last_sweep_outcome: null,
        sweep_problem: null,
      });

      // What the migration warned about, said again by the function it
      // called (safe to call again: that is how to finish the setup after
      // enabling an extension).
      const notices: string[] = [];
      const sql = client(db.url, notices);
      try {
        await sql`select public.backup_schedule_sweep()`;
      } finally {
        await sql.end({ timeout: 5 });
      }
      assert.deepEqual(notices, [NO_PG_NET, `WARNING: ${notScheduled()}`]);

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

Deno.test(
  "backup_invoke_sweep without pg_net or Vault records sweep_problem, raises a WARNING, and is for the database owner only",
  async () => {
    const db = await freshDatabase();
    const notices: string[] = [];
    const sql = client(db.url, notices);
    try {
      await sql`select public.backup_invoke_sweep()`;
      assert.deepEqual(notices, [
        `WARNING: backup sweep not invoked: ${PROBLEM}`,
      ]);
      assert.deepEqual(await sweeperColumns(sql), {
        last_sweep_at: null,
        last_sweep_outcome: null,
        sweep_problem: PROBLEM,
      });

      // Every minute it says so again, without rewriting the row.
      const [{ xmin }] = await sql`select xmin::text from backup_settings`;
      await sql`select public.backup_invoke_sweep()`;
      assert.equal(notices.length, 2);
      assert.equal(notices[1], notices[0]);
      const [after] = await sql`select xmin::text from backup_settings`;
      assert.equal(after.xmin, xmin, "backup_settings was not rewritten");

      // Clients (PostgREST RPC) can call neither function.
      for (const role of ["anon", "authenticated"]) {
        for (const fn of ["backup_invoke_sweep", "backup_schedule_sweep"]) {
          await assert.rejects(
            sql.begin(async (tx) => {
              await tx.unsafe(`set local role ${role}`);
              await tx.unsafe(`select public.${fn}()`);
            }),
            (e: Error) => {
              assert.equal(
                e.message,
                `permission denied for function ${fn}`,
                `${role} ${fn}`,
              );
              return true;
            },
          );
        }
      }
    } finally {
      await sql.end({ timeout: 5 });
      await db.close();
    }
  },
);

Deno.test({
  name:
    "on a server without pg_cron preloaded the migrations apply, with WARNINGs, and schedule nothing",
  ignore: !support.available,
  async fn() {
    // A cluster of its own, so that nothing preloads pg_cron: its
    // extension is installed (pg_available_extensions lists it) but cannot
    // be created.
    const dir = await Deno.makeTempDir({ prefix: "backup-nocron-" });
    // As root the cluster runs as `postgres`, which must be able to enter.
    await Deno.chmod(dir, 0o711);
    try {
      const url = await run(
        "bash",
        ["scripts/pg_cluster.sh", "start", dir, String(freePort())],
        { PG_CLUSTER_CRON: "off" },
      );
      const notices: string[] = [];
      const sql = client(url, notices);
      try {
        const [loaded] = await sql`
          select current_setting('shared_preload_libraries') as preload,
                 exists (select 1 from pg_available_extensions
                          where name = 'pg_cron') as available`;
        assert.deepEqual({ ...loaded }, { preload: "", available: true });

        const versions = (await migrationFiles()).map((f) => f.version);
        assert.deepEqual(await migrate(url), versions);
        const applied = await sql`
          select version from supabase_migrations.schema_migrations
           order by version`;
        assert.deepEqual(applied.map((r) => r.version), versions);

        const [row] = await sql`
          select to_regnamespace('cron') is null as no_cron_schema,
                 to_regclass('cron.job') is null as no_job_table,
                 (select array_agg(extname::text order by extname)
                    from pg_extension) as extensions,
                 to_regprocedure('public.backup_invoke_sweep()') is not null
                   as has_invoke`;
        assert.deepEqual({ ...row }, {
          no_cron_schema: true,
          no_job_table: true,
          extensions: ["plpgsql"],
          has_invoke: true,
        });
        assert.deepEqual(await sweeperColumns(sql), {
          last_sweep_at: null,
          last_sweep_outcome: null,
          sweep_problem: null,
        });

        // The migration's WARNINGs, as the server logged them.
        const log = await Deno.readTextFile(`${dir}/postgres.log`);
        const warnings = [...log.matchAll(/ WARNING: {2}(backup sweep.*)$/gm)]
          .map((m) => m[1]);
        const notPreloaded =
          'backup sweep not scheduled: unrecognized configuration parameter "cron.database_name"';
        assert.deepEqual(warnings, [
          NO_PG_NET.slice("WARNING: ".length),
          notPreloaded,
        ]);

        // Called again, it says the same to the caller.
        await sql`select public.backup_schedule_sweep()`;
        assert.deepEqual(notices, [NO_PG_NET, `WARNING: ${notPreloaded}`]);
        const [{ cron }] = await sql`
          select exists (select 1 from pg_extension where extname = 'pg_cron')
            as cron`;
        assert.equal(cron, false);
      } finally {
        await sql.end({ timeout: 5 });
      }
    } finally {
      await run("bash", ["scripts/pg_cluster.sh", "stop", dir]).catch(() => "");
      await Deno.remove(dir, { recursive: true });
    }
  },
});
