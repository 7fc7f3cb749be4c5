// The core's statements against a history of 20,000 runs, in the plans
// PostgreSQL keeps for prepared statements. After five executions of a
// prepared statement PostgreSQL may switch to a generic plan, made without
// the parameters' values; a statement whose generic plan scans the table is
// fast in a small test database and slow in a project with a long history.
// Here every connection of the functions uses generic plans from the first
// execution (plan_cache_mode), and the table statistics show how the rows
// were read: no request may scan backup_history or the deliveries, and a
// page of history reads its page, not every newer run.

import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix
import postgres from "npm:postgres@3.4.9";
import { freshDatabase } from "./support/db.ts";
import { runDetails, startScriptedGitHub } from "./support/github_script.ts";
import {
  ADMIN_ID,
  report as sendReport,
  startStack,
  trigger,
  userToken,
} from "./support/stack.ts";

const RUNS = 20_000;
const SERVICE_KEY = "service-role-key-for-the-query-plan-test-0123456789";

interface TableReads {
  seq_scan: number;
  idx_tup_fetch: number;
}

/** How each table was read so far, as the statistics collector has it. */
async function reads(
  sql: postgres.Sql,
): Promise<Record<string, TableReads>> {
  await sql`select pg_stat_clear_snapshot()`;
  const rows = await sql<({ relname: string } & TableReads)[]>`
    select relname, seq_scan::float8 as seq_scan,
           coalesce(idx_tup_fetch, 0)::float8 as idx_tup_fetch
      from pg_stat_user_tables
     where relname in ('backup_history', 'backup_report_deliveries')`;
  return Object.fromEntries(rows.map((r) => [r.relname, {
    seq_scan: r.seq_scan,
    idx_tup_fetch: r.idx_tup_fetch,
  }]));
}

/** Waits until no other session is connected to the database, so that
 * every backend that served a request has exited and reported its reads. */
async function othersGone(sql: postgres.Sql, name: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const [{ n }] = await sql<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity
       where datname = ${name} and pid <> pg_backend_pid()`;
    if (n === 0) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("the functions' database sessions did not end");
}

Deno.test("with a history of 20,000 runs, no report, status request, backup start or sweep scans a table, and a deep history page reads only its page", async () => {
  const db = await freshDatabase();
  const name = decodeURIComponent(new URL(db.url).pathname.slice(1));
  const gh = startScriptedGitHub();
  let stack: Awaited<ReturnType<typeof startStack>> | undefined;
  try {
    // Seeded through a session of its own, which then ends: its own reads
    // are reported before the first count is taken.
    const seed = postgres(db.url, { max: 1, onnotice: () => {} });
    await seed`
      insert into backup_history
        (dispatch_id, status, failure_reason, outcome_source, s3_key,
         error_text, trigger_source, workflow_run_id, run_attempt,
         created_at, started_at, finished_at)
      select gen_random_uuid(),
             case when g % 2 = 0 then 'success' else 'failed' end,
             case when g % 2 = 1 then 'step_failed' end, 'report',
             case when g % 2 = 0 then 'plans/' || g || '.dump' end,
             case when g % 2 = 1 then 'pg_dump failed' end,
             'manual', 100000 + g, 1,
             now() - make_interval(mins => g), now() - make_interval(mins => g),
             now() - make_interval(mins => g)
        from generate_series(1, ${RUNS}::int) g`;
    await seed`
      insert into backup_report_deliveries (webhook_id, dispatch_id)
      select 'msg_seed_' || id, dispatch_id from backup_history`;
    await seed`insert into backup_admins (user_id) values (${ADMIN_ID})`;
    await seed`analyze backup_history`;
    await seed`analyze backup_report_deliveries`;
    await seed.unsafe(
      `alter database "${
        name.replaceAll('"', '""')
      }" set plan_cache_mode = force_generic_plan`,
    );
    const [failed] = await seed<{ id: string; wr: number }[]>`
      select dispatch_id::text as id, workflow_run_id::float8 as wr
        from backup_history where status = 'failed'
       order by created_at desc limit 1`;
    const [succeeded] = await seed<{ id: string; wr: number; key: string }[]>`
      select dispatch_id::text as id, workflow_run_id::float8 as wr,
             s3_key as key
        from backup_history where status = 'success'
       order by created_at desc limit 1`;
    // Twenty of each, for verdicts repeated all at once (read together).
    const burst = await seed<
      { id: string; wr: number; status: string; key: string | null }[]
    >`
      (select dispatch_id::text as id, workflow_run_id::float8 as wr, status,
              s3_key as key
         from backup_history where status = 'failed'
        order by created_at desc offset 1 limit 20)
      union all
      (select dispatch_id::text, workflow_run_id::float8, status, s3_key
         from backup_history where status = 'success'
        order by created_at desc offset 1 limit 20)`;
    // A cursor 15,000 runs back, as next_cursor writes it.
    const [deep] = await seed<{ cursor: string }[]>`
      select (extract(epoch from created_at) * 1000000)::int8 || '_' || id
               as cursor
        from backup_history order by created_at desc, id desc
       offset 15000 limit 1`;
    await seed.end();
    await othersGone(db.sql, name);
    const before = await reads(db.sql);

    stack = await startStack({
      databaseUrl: db.url,
      githubApiUrl: gh.url,
      env: { SUPABASE_SERVICE_ROLE_KEY: SERVICE_KEY },
    });
    const report = (body: unknown, id?: string) =>
      sendReport(stack!, body, { id });
    const token = await userToken(ADMIN_ID);
    const status = async (query: string) => {
      const r = await fetch(`${stack!.fn("backup-status")}?${query}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      return { status: r.status, body: await r.json() };
    };
    // Each kind six times: past the five custom plans PostgreSQL would
    // otherwise try first (here it uses the generic plan from the start).
    for (let i = 0; i < 6; i++) {
      const failure = {
        event: "failed",
        dispatch_id: failed.id,
        workflow_run_id: failed.wr,
        run_attempt: 1,
        error_text: "pg_dump failed",
      };
      const repeat = await report(failure);
      assert.deepEqual([repeat.status, repeat.body.changed], [200, false]);
      const retry = await report(failure, `msg_retry_${i}`);
      assert.equal(retry.status, 200);
      assert.equal((await report(failure, `msg_retry_${i}`)).status, 200);
      const success = await report({
        event: "succeeded",
        dispatch_id: succeeded.id,
        workflow_run_id: succeeded.wr,
        run_attempt: 1,
        s3_key: succeeded.key,
      });
      assert.deepEqual([success.status, success.body.changed], [200, false]);
      const ended = await report({
        event: "progress",
        dispatch_id: failed.id,
        workflow_run_id: failed.wr,
        run_attempt: 1,
        progress: { phase: "dump", bytes: i },
      });
      assert.equal(ended.status, 409);
      const unknown = await report({
        event: "progress",
        dispatch_id: crypto.randomUUID(),
        workflow_run_id: 1,
        run_attempt: 1,
      });
      assert.equal(unknown.status, 404);
      const one = await status(`dispatch_id=${failed.id}`);
      assert.deepEqual([one.status, one.body.run.status], [200, "failed"]);
      const first = await status("limit=20");
      assert.deepEqual([first.status, first.body.runs.length], [200, 20]);
      const page = await status(`limit=20&cursor=${deep.cursor}`);
      assert.deepEqual([page.status, page.body.runs.length], [200, 20]);
    }
    // Verdicts repeated to forty runs at once: read_reports.sql and
    // retention.sql carrying many reports each.
    for (let round = 0; round < 6; round++) {
      const answers = await Promise.all(burst.map((r) =>
        report(
          r.status === "failed"
            ? {
              event: "failed",
              dispatch_id: r.id,
              workflow_run_id: r.wr,
              run_attempt: 1,
              error_text: "pg_dump failed",
            }
            : {
              event: "succeeded",
              dispatch_id: r.id,
              workflow_run_id: r.wr,
              run_attempt: 1,
              s3_key: r.key,
            },
        )
      ));
      assert.deepEqual(
        answers.map((a) => [a.status, a.body.changed]),
        burst.map(() => [200, false]),
      );
    }
    // A backup started from the app, pressed again while it runs, swept,
    // failed by its report, and swept again: trigger-backup's and
    // reconcile-backups' statements.
    const sweep = async () => {
      const r = await fetch(stack!.fn("reconcile-backups"), {
        method: "POST",
        headers: {
          authorization: `Bearer ${SERVICE_KEY}`,
          "content-type": "application/json",
        },
        body: "{}",
      });
      await r.body?.cancel();
      return r.status;
    };
    gh.script(runDetails(888_001));
    const reason = '{"reason":"plans"}';
    const pressed = await trigger(stack, { token, body: reason });
    assert.equal(pressed.status, 202);
    const busy = await trigger(stack, { token, body: reason });
    assert.equal(busy.status, 409);
    gh.fallback = () => ({
      status: 200,
      body: {
        id: 888_001,
        name: "Database backup",
        run_attempt: 1,
        status: "in_progress",
        conclusion: null,
        html_url: "https://github.com/acme/app/actions/runs/888001",
        created_at: new Date().toISOString(),
        updated_at: new Date().toISOString(),
      },
    });
    assert.equal(await sweep(), 200);
    const reported = await report({
      event: "failed",
      dispatch_id: pressed.body.dispatch_id,
      workflow_run_id: 888_001,
      run_attempt: 1,
      error_text: "pg_dump failed",
    });
    assert.deepEqual([reported.status, reported.body.status], [200, "failed"]);
    assert.equal(await sweep(), 200);

    // A scheduled run registers itself (no dispatch id): its workflow run is
    // looked up first, and is not there yet; a second delivery finds it.
    const registration = {
      event: "started",
      workflow_run_id: 999_999,
      run_attempt: 1,
    };
    const registered = await report(registration);
    assert.deepEqual([registered.status, registered.body.changed], [201, true]);
    const again = await report(registration);
    assert.deepEqual([again.status, again.body.changed], [200, false]);
    // Then it runs and succeeds: the writes to a run in progress.
    const scheduled = {
      dispatch_id: registered.body.dispatch_id,
      workflow_run_id: 999_999,
      run_attempt: 1,
    };
    for (let i = 1; i <= 6; i++) {
      const progress = await report({
        event: "progress",
        ...scheduled,
        progress: { phase: "dump", bytes: i },
      });
      assert.deepEqual([progress.status, progress.body.changed], [200, true]);
    }
    const done = await report({
      event: "succeeded",
      ...scheduled,
      s3_key: "plans/scheduled.dump",
    });
    assert.deepEqual([done.status, done.body.status], [200, "success"]);
    await stack.close();
    stack = undefined;
    await othersGone(db.sql, name);
    const after = await reads(db.sql);

    for (const table of ["backup_history", "backup_report_deliveries"]) {
      assert.equal(
        after[table].seq_scan - before[table].seq_scan,
        0,
        `sequential scans of ${table}`,
      );
    }
    // 18 pages of 20 runs, and a row or two for each report: hundreds of
    // rows, where a deep page read through a filter fetches 15,000 each, and
    // a registration looked up without an index reads the whole history.
    const fetched = after.backup_history.idx_tup_fetch -
      before.backup_history.idx_tup_fetch;
    assert.ok(fetched < 2_000, `backup_history rows fetched: ${fetched}`);
  } finally {
    await stack?.close();
    await gh.close();
    await db.close();
  }
});
