// POST /functions/v1/finalize-backup over HTTP: the workflow's signed
// reports, against the real server process and a real PostgreSQL. Runs are
// created through trigger-backup (with a scripted GitHub stand-in), so the
// rows are the ones production would hold. One database, one server and one
// GitHub stand-in are shared; each step starts from empty tables.

import assert from "node:assert/strict";
import {
  assertError,
  call as callChecked,
  serverSuite,
  stackSecrets,
} from "./support/suite.ts";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import type { Sql } from "./support/db.ts";
import {
  ADMIN_ID,
  type Answer,
  freePort,
  type Json,
  type Stack,
  startStack,
  userToken,
  webhookHeaders,
} from "./support/stack.ts";
import { runDetails, type ScriptedGitHub } from "./support/github_script.ts";
import { insertRun, type RunColumns, SUCCESS } from "./support/runs.ts";

const SHA = "0123456789abcdef".repeat(4);

interface Ctx {
  stack: Stack;
  gh: ScriptedGitHub;
  sql: Sql;
  dbUrl: string;
}

type SignOpts = { id?: string; timestamp?: number; secret?: string };

/** Every value that must never appear in a response or the log. */
const secrets = (ctx: Ctx) => stackSecrets(ctx);

/** fetch, read the body, and check that it leaks no secret. */
const call = (ctx: Ctx, url: string, init: RequestInit = {}) =>
  callChecked(ctx, url, init);

/** POSTs a raw body to finalize-backup with exactly these headers. */
function postRaw(
  ctx: Ctx,
  body: string,
  headers: Record<string, string>,
): Promise<Answer> {
  return call(ctx, ctx.stack.fn("finalize-backup"), {
    method: "POST",
    headers,
    body,
  });
}

/** POSTs a correctly signed report (a JSON value or a raw string). */
async function send(
  ctx: Ctx,
  payload: unknown,
  opts: SignOpts = {},
): Promise<Answer> {
  const body = typeof payload === "string" ? payload : JSON.stringify(payload);
  return postRaw(ctx, body, await webhookHeaders(body, opts));
}

/** The backup_history rows, oldest first, everything included. */
async function rows(sql: Sql): Promise<Json[]> {
  return [
    ...await sql`
    select dispatch_id::text, status, failure_reason, outcome_source,
           trigger_source, triggered_by::text, reason,
           workflow_run_id::float8 as workflow_run_id, run_attempt, run_url,
           s3_key, size_bytes::float8 as size_bytes, sha256, error_text,
           progress, version, created_at, updated_at, started_at, finished_at
      from backup_history order by id`,
  ];
}

async function row(sql: Sql, dispatchId: string): Promise<Json> {
  const found = (await rows(sql)).filter((r) => r.dispatch_id === dispatchId);
  assert.equal(found.length, 1, `one row for ${dispatchId}`);
  return found[0];
}

/** A row with the times replaced by whether they are set. */
function shape(r: Json): Json {
  const { created_at, updated_at, started_at, finished_at, version, ...rest } =
    r;
  void updated_at;
  void version;
  return {
    ...rest,
    created_at: created_at !== null,
    started_at: started_at !== null,
    finished_at: finished_at !== null,
  };
}

async function settings(sql: Sql): Promise<Json> {
  const [s] = await sql`
    select last_success_at, last_success_dispatch_id::text,
           last_success_s3_key
      from backup_settings`;
  return s;
}

const UUID_V7 =
  /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

let nextRunId = 31_000;

/** A manual run dispatched through trigger-backup; GitHub returns its run. */
async function dispatched(
  ctx: Ctx,
): Promise<{ dispatch_id: string; workflow_run_id: number }> {
  const workflowRunId = ++nextRunId;
  ctx.gh.script(runDetails(workflowRunId));
  const r = await fetch(ctx.stack.fn("trigger-backup"), {
    method: "POST",
    headers: { authorization: `Bearer ${await userToken(ADMIN_ID)}` },
  });
  const body = await r.json();
  assert.equal(r.status, 202, JSON.stringify(body));
  assert.equal(body.workflow_run_id, workflowRunId);
  return { dispatch_id: body.dispatch_id, workflow_run_id: workflowRunId };
}

/** The row of a freshly dispatched run. */
function dispatchedRow(
  run: { dispatch_id: string; workflow_run_id: number },
  fields: Record<string, unknown> = {},
): Json {
  return {
    dispatch_id: run.dispatch_id,
    status: "in_progress",
    failure_reason: null,
    outcome_source: null,
    trigger_source: "manual",
    triggered_by: ADMIN_ID,
    reason: null,
    workflow_run_id: run.workflow_run_id,
    run_attempt: 1,
    run_url: `https://github.com/acme/app/actions/runs/${run.workflow_run_id}`,
    s3_key: null,
    size_bytes: null,
    sha256: null,
    error_text: null,
    progress: null,
    created_at: true,
    started_at: false,
    finished_at: false,
    ...fields,
  };
}

/** A report for `run`. */
function rep(
  run: { dispatch_id: string; workflow_run_id: number },
  event: string,
  fields: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    event,
    dispatch_id: run.dispatch_id,
    workflow_run_id: run.workflow_run_id,
    run_attempt: 1,
    ...(event === "succeeded"
      ? { s3_key: `backups/${run.dispatch_id}.dump`, size_bytes: 2048 }
      : {}),
    ...fields,
  };
}

/** The answer to a report; a success's also lists what retention prunes
 * (nothing here: backup_settings.retention_days is null by default). */
function changed(id: string, status: string, isChanged = true): Json {
  return {
    dispatch_id: id,
    status,
    changed: isChanged,
    ...(status === "success" ? { prune: [] } : {}),
  };
}

/**
 * Inserts a run created, started and finished `days` ago, with `columns`
 * (given its dispatch_id, which a key names); its dispatch_id.
 */
async function finishedRun(
  ctx: Ctx,
  days: number,
  columns: (id: string) => RunColumns,
): Promise<string> {
  const id = crypto.randomUUID();
  const ago = days * 86_400;
  await insertRun(ctx.sql, { dispatch_id: id, ...columns(id) }, {
    createdAgo: ago,
    startedAgo: ago,
    finishedAgo: ago,
  });
  return id;
}

const suite = serverSuite<Ctx>("finalize-backup over HTTP against PostgreSQL", {
  context: (base) => base,
  logSecrets: { endpoint: "finalize-backup", values: secrets },
});
const behaviour = suite.behaviour;

// --- the happy path ------------------------------------------------------------

behaviour(
  "finalize-backup records started and succeeded reports and the last successful backup",
  async (ctx) => {
    const run = await dispatched(ctx);
    const t0 = Date.now();
    const started = await send(ctx, rep(run, "started"));
    assert.equal(started.status, 200, started.text);
    assert.deepEqual(started.body, changed(run.dispatch_id, "in_progress"));
    let r = await row(ctx.sql, run.dispatch_id);
    assert.deepEqual(shape(r), dispatchedRow(run, { started_at: true }));
    assert.ok(Math.abs(r.started_at.getTime() - t0) < 5000);
    const startedAt = r.started_at.getTime();

    const p = await send(ctx, rep(run, "progress"));
    assert.equal(p.status, 200, p.text);
    assert.deepEqual(p.body, changed(run.dispatch_id, "in_progress", false));
    r = await row(ctx.sql, run.dispatch_id);
    assert.equal(r.started_at.getTime(), startedAt, "started_at is kept");

    const done = await send(
      ctx,
      rep(run, "succeeded", {
        s3_key: "backups/2026/db.dump",
        size_bytes: 123456789,
        sha256: SHA.toUpperCase(),
      }),
    );
    assert.equal(done.status, 200, done.text);
    assert.deepEqual(done.body, changed(run.dispatch_id, "success"));
    r = await row(ctx.sql, run.dispatch_id);
    assert.deepEqual(
      shape(r),
      dispatchedRow(run, {
        status: "success",
        outcome_source: "report",
        s3_key: "backups/2026/db.dump",
        size_bytes: 123456789,
        sha256: SHA,
        started_at: true,
        finished_at: true,
      }),
    );
    assert.ok(r.finished_at.getTime() >= startedAt);
    assert.deepEqual(await settings(ctx.sql), {
      last_success_at: r.finished_at,
      last_success_dispatch_id: run.dispatch_id,
      last_success_s3_key: "backups/2026/db.dump",
    });
  },
);

/** progress as PostgreSQL holds it: its jsonb type and its value. */
async function storedProgress(ctx: Ctx, dispatchId: string): Promise<Json> {
  const [s] = await ctx.sql`
    select jsonb_typeof(progress) as type, progress
      from backup_history where dispatch_id = ${dispatchId}`;
  return { ...s };
}

const PROGRESS = { phase: "dumped", bytes: 1024, tables: ["a", "b"] };

behaviour(
  "finalize-backup stores a progress report's progress as a jsonb object",
  async (ctx) => {
    const run = await dispatched(ctx);
    const p = await send(ctx, rep(run, "progress", { progress: PROGRESS }));
    assert.equal(p.status, 200, p.text);
    assert.deepEqual(p.body, changed(run.dispatch_id, "in_progress"));
    assert.deepEqual(await storedProgress(ctx, run.dispatch_id), {
      type: "object",
      progress: PROGRESS,
    });
    const r = await row(ctx.sql, run.dispatch_id);
    assert.ok(r.started_at instanceof Date, "progress implies started");
  },
);

behaviour(
  "finalize-backup answers an identical progress report under a new webhook-id with changed:false",
  async (ctx) => {
    const run = await dispatched(ctx);
    const p = await send(ctx, rep(run, "progress", { progress: PROGRESS }));
    assert.deepEqual(p.body, changed(run.dispatch_id, "in_progress"));
    const before = await rows(ctx.sql);
    const same = await send(ctx, rep(run, "progress", { progress: PROGRESS }));
    assert.equal(same.status, 200, same.text);
    assert.deepEqual(
      same.body,
      changed(run.dispatch_id, "in_progress", false),
    );
    assert.deepEqual(await rows(ctx.sql), before);
  },
);

behaviour(
  "finalize-backup keeps the latest progress object unchanged through later reports",
  async (ctx) => {
    const run = await dispatched(ctx);
    await send(ctx, rep(run, "progress", { progress: PROGRESS }));
    const later = { phase: "uploaded", bytes: 4096 };
    const q = await send(ctx, rep(run, "progress", { progress: later }));
    assert.deepEqual(q.body, changed(run.dispatch_id, "in_progress"));
    const done = await send(ctx, rep(run, "succeeded"));
    assert.deepEqual(done.body, changed(run.dispatch_id, "success"));
    const [{ progress }] = await ctx.sql`
      select progress::text as progress from backup_history`;
    assert.deepEqual(
      JSON.parse(progress),
      later,
      `progress after two later writes: ${progress}`,
    );
  },
);

behaviour(
  "finalize-backup records a failed report as step_failed with its error_text",
  async (ctx) => {
    const run = await dispatched(ctx);
    assert.equal((await send(ctx, rep(run, "started"))).status, 200);
    const a = await send(
      ctx,
      rep(run, "failed", { error_text: "pg_dump: error: connection refused" }),
    );
    assert.equal(a.status, 200, a.text);
    assert.deepEqual(a.body, changed(run.dispatch_id, "failed"));
    assert.deepEqual(
      shape(await row(ctx.sql, run.dispatch_id)),
      dispatchedRow(run, {
        status: "failed",
        failure_reason: "step_failed",
        outcome_source: "report",
        error_text: "pg_dump: error: connection refused",
        started_at: true,
        finished_at: true,
      }),
    );
    assert.equal((await settings(ctx.sql)).last_success_dispatch_id, null);
  },
);

behaviour(
  "finalize-backup answers a failure repeated under a new webhook-id unchanged, records that delivery with its body hash, and refuses another verdict",
  async (ctx) => {
    const run = await dispatched(ctx);
    const failed = JSON.stringify(rep(run, "failed", { error_text: "boom" }));
    const first = await send(ctx, failed, { id: "msg_first_failure" });
    assert.deepEqual(first.body, changed(run.dispatch_id, "failed"));
    const saved = await row(ctx.sql, run.dispatch_id);
    const repeat = await send(ctx, failed, { id: "msg_repeat_failure" });
    assert.equal(repeat.status, 200, repeat.text);
    assert.deepEqual(repeat.body, changed(run.dispatch_id, "failed", false));
    assert.deepEqual(await row(ctx.sql, run.dispatch_id), saved);
    const [d] = await ctx.sql`
      select dispatch_id::text, encode(body_sha256, 'hex') as body_sha256
        from backup_report_deliveries where webhook_id = 'msg_repeat_failure'`;
    assert.deepEqual({ ...d }, {
      dispatch_id: run.dispatch_id,
      body_sha256: createHash("sha256").update(failed).digest("hex"),
    });
    // The recorded hash tells a retry from another body under the same id.
    const other = JSON.stringify(rep(run, "failed", { error_text: "other" }));
    assertError(
      await send(ctx, other, { id: "msg_repeat_failure" }),
      409,
      "webhook_id_reused",
    );
    // Another verdict for the same attempt: refused, and not recorded.
    const cancelled = JSON.stringify(rep(run, "cancelled"));
    assertError(
      await send(ctx, cancelled, { id: "msg_cancel_after_failure" }),
      409,
      "illegal_transition",
    );
    const [{ n }] = await ctx.sql`
      select count(*)::int as n from backup_report_deliveries
       where webhook_id = 'msg_cancel_after_failure'`;
    assert.equal(n, 0);
    assert.deepEqual(await row(ctx.sql, run.dispatch_id), saved);
  },
);

behaviour(
  "finalize-backup records a cancelled report as failed with failure_reason cancelled",
  async (ctx) => {
    const run = await dispatched(ctx);
    const a = await send(
      ctx,
      rep(run, "cancelled", { error_text: "cancelled by octocat" }),
    );
    assert.equal(a.status, 200, a.text);
    assert.deepEqual(a.body, changed(run.dispatch_id, "failed"));
    const r = await row(ctx.sql, run.dispatch_id);
    assert.equal(r.status, "failed");
    assert.equal(r.failure_reason, "cancelled");
    assert.equal(r.outcome_source, "report");
    assert.equal(r.error_text, "cancelled by octocat");
    assert.ok(r.finished_at instanceof Date);
  },
);

behaviour(
  "finalize-backup truncates an over-long error_text to 3900 characters keeping head and tail",
  async (ctx) => {
    const run = await dispatched(ctx);
    const text = "HEAD:step pg_dump\n" + "x".repeat(10_000) +
      "\nTAIL:the real error";
    const a = await send(ctx, rep(run, "failed", { error_text: text }));
    assert.equal(a.status, 200, a.text);
    assert.deepEqual(a.body, changed(run.dispatch_id, "failed"));
    const r = await row(ctx.sql, run.dispatch_id);
    assert.equal([...r.error_text].length, 3900);
    assert.ok(r.error_text.startsWith("HEAD:step pg_dump\nxxx"));
    assert.ok(r.error_text.endsWith("xxx\nTAIL:the real error"));
    assert.equal(r.failure_reason, "step_failed");
  },
);

// --- idempotency and concurrency ---------------------------------------------------

behaviour(
  "finalize-backup answers a repeated webhook-id with changed:false and changes nothing",
  async (ctx) => {
    const run = await dispatched(ctx);
    const id = "msg_retried_delivery";
    const first = await send(ctx, rep(run, "started"), { id });
    assert.deepEqual(first.body, changed(run.dispatch_id, "in_progress"));
    const before = await rows(ctx.sql);
    const again = await send(ctx, rep(run, "started"), { id });
    assert.equal(again.status, 200, again.text);
    assert.deepEqual(
      again.body,
      changed(run.dispatch_id, "in_progress", false),
    );
    assert.deepEqual(await rows(ctx.sql), before);

    const doneId = "msg_retried_success";
    const done = await send(ctx, rep(run, "succeeded"), { id: doneId });
    assert.deepEqual(done.body, changed(run.dispatch_id, "success"));
    const afterDone = await rows(ctx.sql);
    const retried = await send(ctx, rep(run, "succeeded"), { id: doneId });
    assert.equal(retried.status, 200, retried.text);
    assert.deepEqual(retried.body, changed(run.dispatch_id, "success", false));
    assert.deepEqual(await rows(ctx.sql), afterDone);
  },
);

behaviour(
  "finalize-backup answers the same terminal report under a new webhook-id with changed:false",
  async (ctx) => {
    for (const event of ["succeeded", "failed", "cancelled"]) {
      await ctx.sql`truncate backup_history, backup_report_deliveries`;
      const run = await dispatched(ctx);
      const payload = rep(run, event, { error_text: "boom" });
      const first = await send(ctx, payload);
      assert.equal(first.status, 200, first.text);
      assert.equal(first.body.changed, true);
      const before = await rows(ctx.sql);
      const again = await send(ctx, payload);
      assert.equal(again.status, 200, `${event}: ${again.text}`);
      assert.deepEqual(
        again.body,
        changed(
          run.dispatch_id,
          event === "succeeded" ? "success" : "failed",
          false,
        ),
      );
      assert.deepEqual(await rows(ctx.sql), before, event);
    }
  },
);

behaviour(
  "finalize-backup applies 20 concurrent identical succeeded reports exactly once",
  async (ctx) => {
    const run = await dispatched(ctx);
    const { version } = await row(ctx.sql, run.dispatch_id);
    const payload = rep(run, "succeeded", { sha256: SHA });
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => send(ctx, payload)),
    );
    for (const a of answers) assert.equal(a.status, 200, a.text);
    const changedOnes = answers.filter((a) => a.body.changed === true);
    assert.equal(
      changedOnes.length,
      1,
      answers.map((a) => a.text).join("\n"),
    );
    for (const a of answers) {
      assert.deepEqual(
        a.body,
        changed(run.dispatch_id, "success", a === changedOnes[0]),
      );
    }
    const r = await row(ctx.sql, run.dispatch_id);
    assert.equal(r.version, version + 1, "written exactly once");
    assert.equal(r.status, "success");
    assert.equal(r.sha256, SHA);
    assert.equal((await rows(ctx.sql)).length, 1);
    assert.equal(
      (await settings(ctx.sql)).last_success_dispatch_id,
      run.dispatch_id,
    );
  },
);

behaviour(
  "finalize-backup writes 40 concurrent progress reports to one run in fewer statements, each answered and recorded once",
  async (ctx) => {
    const run = await dispatched(ctx);
    const before = await row(ctx.sql, run.dispatch_id);
    // The last repeats a progress: applied right after its twin, it
    // changes nothing; the first sets the start time as well.
    const bytes = Array.from({ length: 40 }, (_, i) => i === 39 ? 37 : i);
    const sent = bytes.map((b, i) => ({
      id: `msg_batch_${run.dispatch_id}_${i}`,
      body: JSON.stringify(
        rep(run, "progress", { progress: { phase: "dump", bytes: b } }),
      ),
    }));
    const answers = await Promise.all(
      sent.map(({ id, body }) => send(ctx, body, { id })),
    );
    for (const a of answers) {
      assert.equal(a.status, 200, a.text);
      assert.deepEqual(Object.keys(a.body).sort(), [
        "changed",
        "dispatch_id",
        "status",
      ]);
      assert.equal(a.body.status, "in_progress");
    }
    const changes = answers.filter((a) => a.body.changed === true).length;
    const r = await row(ctx.sql, run.dispatch_id);
    assert.equal(r.version, before.version + changes, "one version per change");
    assert.ok(changes === 39 || changes === 40, `${changes} changes`);
    assert.ok(bytes.includes(r.progress.bytes), JSON.stringify(r.progress));
    // Every delivery recorded once, by the statement that applied it; a
    // statement's rows share its transaction id, so fewer transaction ids
    // than reports means reports were written together.
    const [d] = await ctx.sql`
      select count(*)::int as deliveries,
             count(distinct xmin::text)::int as transactions
        from backup_report_deliveries
       where webhook_id like ${`msg_batch_${run.dispatch_id}_%`}`;
    assert.equal(d.deliveries, 40);
    assert.ok(d.transactions < 40, `${d.transactions} transactions`);
    // A retry of any of them is recognised as one.
    const again = await send(ctx, sent[5].body, { id: sent[5].id });
    assert.equal(again.status, 200, again.text);
    assert.equal(again.body.changed, false);
    assert.equal((await row(ctx.sql, run.dispatch_id)).version, r.version);
  },
);

behaviour(
  "finalize-backup answers a progress report that changes nothing unchanged and records its delivery",
  async (ctx) => {
    const run = await dispatched(ctx);
    const body = JSON.stringify(
      rep(run, "progress", { progress: { phase: "dump", bytes: 7 } }),
    );
    const first = await send(ctx, body, { id: "msg_progress_first" });
    assert.deepEqual(first.body, changed(run.dispatch_id, "in_progress"));
    const saved = await row(ctx.sql, run.dispatch_id);
    const same = await send(ctx, body, { id: "msg_progress_same" });
    assert.equal(same.status, 200, same.text);
    assert.deepEqual(same.body, changed(run.dispatch_id, "in_progress", false));
    assert.deepEqual(await row(ctx.sql, run.dispatch_id), saved);
    const [{ n }] = await ctx.sql`
      select count(*)::int as n from backup_report_deliveries
       where webhook_id = 'msg_progress_same'`;
    assert.equal(n, 1);
    // Its retry is recognised as one.
    const retry = await send(ctx, body, { id: "msg_progress_same" });
    assert.deepEqual(
      retry.body,
      changed(run.dispatch_id, "in_progress", false),
    );
  },
);

behaviour(
  "two instances writing progress reports to one run at once: every report answered 200 and applied once, none lost",
  async (ctx) => {
    // Each instance writes what reaches it together; across instances the
    // batches race, and one that finds the row changed since it read it is
    // decided report by report instead (with 12 rounds, that happened in
    // each of 5 trial runs: checked by making such a batch answer 500).
    const other = await startStack({ databaseUrl: ctx.dbUrl });
    try {
      const run = await dispatched(ctx);
      const before = await row(ctx.sql, run.dispatch_id);
      let n = 0;
      const answers: Answer[] = [];
      for (let round = 0; round < 12; round++) {
        answers.push(
          ...await Promise.all(
            Array.from({ length: 30 }, async (_, i) => {
              const body = JSON.stringify(
                rep(run, "progress", { progress: { bytes: ++n } }),
              );
              const url = (i % 2 === 0 ? ctx.stack : other).fn(
                "finalize-backup",
              );
              return await call(ctx, url, {
                method: "POST",
                headers: await webhookHeaders(body, {
                  id: `msg_two_${run.dispatch_id}_${n}`,
                }),
                body,
              });
            }),
          ),
        );
      }
      for (const a of answers) {
        assert.equal(a.status, 200, a.text);
        // Every report brings a new progress: each changes the run.
        assert.deepEqual(a.body, changed(run.dispatch_id, "in_progress"));
      }
      const after = await row(ctx.sql, run.dispatch_id);
      assert.equal(after.version, before.version + 360);
      const [{ deliveries }] = await ctx.sql`
        select count(*)::int as deliveries from backup_report_deliveries
         where webhook_id like ${`msg_two_${run.dispatch_id}_%`}`;
      assert.equal(deliveries, 360);
    } finally {
      await other.close();
    }
  },
);

// --- scheduled runs ------------------------------------------------------------

behaviour(
  "finalize-backup registers a scheduled run's started report with 201 and a new UUIDv7, once",
  async (ctx) => {
    const payload = {
      event: "started",
      workflow_run_id: 880088,
      run_attempt: 1,
    };
    const id = "msg_schedule_1";
    const t0 = Date.now();
    const a = await send(ctx, payload, { id });
    assert.equal(a.status, 201, a.text);
    assert.match(a.body.dispatch_id, UUID_V7);
    assert.deepEqual(a.body, changed(a.body.dispatch_id, "in_progress"));
    const ms = parseInt(
      a.body.dispatch_id.replaceAll("-", "").slice(0, 12),
      16,
    );
    assert.ok(Math.abs(ms - t0) < 5000);
    const expected = {
      dispatch_id: a.body.dispatch_id,
      status: "in_progress",
      failure_reason: null,
      outcome_source: null,
      trigger_source: "schedule",
      triggered_by: null,
      reason: null,
      workflow_run_id: 880088,
      run_attempt: 1,
      run_url: null,
      s3_key: null,
      size_bytes: null,
      sha256: null,
      error_text: null,
      progress: null,
      created_at: true,
      started_at: true,
      finished_at: false,
    };
    const all = await rows(ctx.sql);
    assert.deepEqual(all.map(shape), [expected]);

    const retried = await send(ctx, payload, { id });
    assert.equal(retried.status, 200, retried.text);
    assert.deepEqual(
      retried.body,
      changed(a.body.dispatch_id, "in_progress", false),
    );
    assert.deepEqual(await rows(ctx.sql), all);

    const resent = await send(ctx, payload, { id: "msg_schedule_2" });
    assert.equal(resent.status, 200, resent.text);
    assert.deepEqual(
      resent.body,
      changed(a.body.dispatch_id, "in_progress", false),
    );
    assert.deepEqual(await rows(ctx.sql), all, "still one row");

    const done = await send(ctx, {
      event: "succeeded",
      dispatch_id: a.body.dispatch_id,
      workflow_run_id: 880088,
      run_attempt: 1,
      s3_key: "backups/scheduled.dump",
    });
    assert.equal(done.status, 200, done.text);
    assert.deepEqual(done.body, changed(a.body.dispatch_id, "success"));
    assert.equal(
      (await settings(ctx.sql)).last_success_dispatch_id,
      a.body.dispatch_id,
    );
  },
);

behaviour(
  "finalize-backup registers 20 concurrent deliveries of one scheduled started report once",
  async (ctx) => {
    const payload = {
      event: "started",
      workflow_run_id: 880099,
      run_attempt: 1,
    };
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => send(ctx, payload, { id: "msg_burst" })),
    );
    const created = answers.filter((a) => a.status === 201);
    assert.equal(
      created.length,
      1,
      answers.map((a) => `${a.status} ${a.text}`).join("\n"),
    );
    const id = created[0].body.dispatch_id;
    for (const a of answers) {
      assert.deepEqual(
        a.body,
        changed(id, "in_progress", a === created[0]),
        `${a.status} ${a.text}`,
      );
      assert.equal(a.status, a === created[0] ? 201 : 200);
    }
    const all = await rows(ctx.sql);
    assert.deepEqual(all.map((r) => [r.dispatch_id, r.trigger_source]), [
      [id, "schedule"],
    ]);
  },
);

behaviour(
  "finalize-backup refuses a scheduled registration with 409 backup_in_progress while another run is in progress",
  async (ctx) => {
    const run = await dispatched(ctx);
    const before = await rows(ctx.sql);
    const a = await send(ctx, {
      event: "started",
      workflow_run_id: 990099,
      run_attempt: 1,
    });
    assertError(a, 409, "backup_in_progress", {
      dispatch_id: run.dispatch_id,
    });
    assert.deepEqual(await rows(ctx.sql), before);
    const [{ n }] = await ctx.sql`
      select count(*)::int as n from backup_report_deliveries`;
    assert.equal(n, 0);
  },
);

// --- attempts and transitions ------------------------------------------------------

behaviour(
  "finalize-backup reopens a failed run on a later run_attempt and lets it succeed",
  async (ctx) => {
    const run = await dispatched(ctx);
    await send(ctx, rep(run, "started"));
    const failed = await send(ctx, rep(run, "failed", { error_text: "oops" }));
    assert.deepEqual(failed.body, changed(run.dispatch_id, "failed"));

    const rerun = await send(ctx, rep(run, "started", { run_attempt: 2 }));
    assert.equal(rerun.status, 200, rerun.text);
    assert.deepEqual(rerun.body, changed(run.dispatch_id, "in_progress"));
    assert.deepEqual(
      shape(await row(ctx.sql, run.dispatch_id)),
      dispatchedRow(run, { run_attempt: 2, started_at: true }),
    );

    const done = await send(ctx, rep(run, "succeeded", { run_attempt: 2 }));
    assert.equal(done.status, 200, done.text);
    assert.deepEqual(done.body, changed(run.dispatch_id, "success"));
    assert.deepEqual(
      shape(await row(ctx.sql, run.dispatch_id)),
      dispatchedRow(run, {
        status: "success",
        outcome_source: "report",
        run_attempt: 2,
        s3_key: `backups/${run.dispatch_id}.dump`,
        size_bytes: 2048,
        started_at: true,
        finished_at: true,
      }),
    );
  },
);

behaviour(
  "finalize-backup refuses a report from an older attempt than recorded with 409 stale_attempt",
  async (ctx) => {
    const run = await dispatched(ctx);
    assert.equal(
      (await send(ctx, rep(run, "started", { run_attempt: 3 }))).status,
      200,
    );
    const before = await rows(ctx.sql);
    for (const event of ["started", "progress", "succeeded", "failed"]) {
      const a = await send(ctx, rep(run, event, { run_attempt: 2 }));
      assertError(a, 409, "stale_attempt");
    }
    assert.deepEqual(await rows(ctx.sql), before);
  },
);

behaviour(
  "finalize-backup refuses any report but the identical succeeded on a succeeded run with 409 illegal_transition",
  async (ctx) => {
    const run = await dispatched(ctx);
    assert.equal((await send(ctx, rep(run, "succeeded"))).status, 200);
    const before = await rows(ctx.sql);
    const refused = [
      rep(run, "started"),
      rep(run, "progress", { progress: { phase: "late" } }),
      rep(run, "failed", { error_text: "late failure" }),
      rep(run, "cancelled"),
      rep(run, "succeeded", { s3_key: "backups/another.dump" }),
      rep(run, "started", { run_attempt: 2 }),
    ];
    for (const payload of refused) {
      const a = await send(ctx, payload);
      assert.equal(a.status, 409, `${JSON.stringify(payload)}: ${a.text}`);
      assertError(a, 409, "illegal_transition");
    }
    assert.deepEqual(await rows(ctx.sql), before);
  },
);

behaviour(
  "finalize-backup refuses a report for another workflow_run_id than recorded with 409 illegal_transition",
  async (ctx) => {
    const run = await dispatched(ctx);
    const before = await rows(ctx.sql);
    for (const event of ["started", "succeeded"]) {
      const a = await send(
        ctx,
        rep(run, event, { workflow_run_id: run.workflow_run_id + 1 }),
      );
      assertError(a, 409, "illegal_transition");
    }
    assert.deepEqual(await rows(ctx.sql), before);
  },
);

behaviour(
  "finalize-backup reopens a dispatch_failed run on the workflow's started report and records its success",
  async (ctx) => {
    ctx.gh.script({ status: 422, body: { message: "Unexpected inputs" } });
    const r = await fetch(ctx.stack.fn("trigger-backup"), {
      method: "POST",
      headers: { authorization: `Bearer ${await userToken(ADMIN_ID)}` },
    });
    const body = await r.json();
    assert.equal(r.status, 502, JSON.stringify(body));
    const dispatchId = body.dispatch_id;
    const failed = await row(ctx.sql, dispatchId);
    assert.equal(failed.status, "failed");
    assert.equal(failed.failure_reason, "dispatch_failed");

    const run = { dispatch_id: dispatchId, workflow_run_id: 555_001 };
    const started = await send(ctx, rep(run, "started"));
    assert.equal(started.status, 200, started.text);
    assert.deepEqual(started.body, changed(dispatchId, "in_progress"));
    assert.deepEqual(
      shape(await row(ctx.sql, dispatchId)),
      dispatchedRow(run, { run_url: null, started_at: true }),
    );

    const done = await send(ctx, rep(run, "succeeded", { sha256: SHA }));
    assert.equal(done.status, 200, done.text);
    assert.deepEqual(done.body, changed(dispatchId, "success"));
    assert.deepEqual(
      shape(await row(ctx.sql, dispatchId)),
      dispatchedRow(run, {
        run_url: null,
        status: "success",
        outcome_source: "report",
        s3_key: `backups/${dispatchId}.dump`,
        size_bytes: 2048,
        sha256: SHA,
        started_at: true,
        finished_at: true,
      }),
    );
    assert.equal(
      (await settings(ctx.sql)).last_success_dispatch_id,
      dispatchId,
    );
  },
);

behaviour(
  "finalize-backup records a succeeded report for a dispatch_failed run as a success",
  async (ctx) => {
    ctx.gh.script({ status: 422, body: { message: "Unexpected inputs" } });
    const r = await fetch(ctx.stack.fn("trigger-backup"), {
      method: "POST",
      headers: { authorization: `Bearer ${await userToken(ADMIN_ID)}` },
    });
    const body = await r.json();
    assert.equal(r.status, 502, JSON.stringify(body));
    const run = { dispatch_id: body.dispatch_id, workflow_run_id: 555_002 };
    const done = await send(ctx, rep(run, "succeeded"));
    assert.equal(done.status, 200, done.text);
    assert.deepEqual(done.body, changed(run.dispatch_id, "success"));
    assert.deepEqual(
      shape(await row(ctx.sql, run.dispatch_id)),
      dispatchedRow(run, {
        run_url: null,
        status: "success",
        outcome_source: "report",
        s3_key: `backups/${run.dispatch_id}.dump`,
        size_bytes: 2048,
        finished_at: true,
      }),
    );
  },
);

// --- bad requests --------------------------------------------------------------

behaviour(
  "finalize-backup refuses invalid fields with 400 invalid_field naming the field first",
  async (ctx) => {
    const run = await dispatched(ctx);
    const ok = rep(run, "succeeded");
    const cases: [Record<string, unknown>, string][] = [
      [{ ...ok, event: "finished" }, "event"],
      [{ ...ok, dispatch_id: "12345" }, "dispatch_id"],
      [{ ...ok, dispatch_id: String(run.workflow_run_id) }, "dispatch_id"],
      [{ ...ok, dispatch_id: run.workflow_run_id }, "dispatch_id"],
      [
        { ...ok, dispatch_id: run.dispatch_id.replaceAll("-", "") },
        "dispatch_id",
      ],
      [
        { ...ok, dispatch_id: "00000000-0000-0000-0000-000000000000" },
        "dispatch_id",
      ],
      [{ ...ok, dispatch_id: undefined }, "dispatch_id"],
      [{ ...ok, workflow_run_id: undefined }, "workflow_run_id"],
      [{ ...ok, workflow_run_id: 0 }, "workflow_run_id"],
      [
        { ...ok, workflow_run_id: String(run.workflow_run_id) },
        "workflow_run_id",
      ],
      [{ ...ok, run_attempt: 0 }, "run_attempt"],
      [{ ...ok, run_attempt: 1.5 }, "run_attempt"],
      [{ ...ok, s3_key: undefined }, "s3_key"],
      [{ ...ok, s3_key: "" }, "s3_key"],
      [{ ...ok, size_bytes: -1 }, "size_bytes"],
      [{ ...ok, sha256: "abc" }, "sha256"],
      [{ ...ok, sha256: "g".repeat(64) }, "sha256"],
      [{ ...rep(run, "progress"), progress: "dumped" }, "progress"],
      [{ ...rep(run, "progress"), progress: ["dumped"] }, "progress"],
      [
        { ...rep(run, "progress"), progress: { blob: "x".repeat(1100) } },
        "progress",
      ],
    ];
    const before = await rows(ctx.sql);
    for (const [payload, field] of cases) {
      const a = await send(ctx, payload);
      assert.equal(a.status, 400, `${JSON.stringify(payload)}: ${a.text}`);
      const message = assertError(a, 400, "invalid_field");
      assert.ok(
        message.startsWith(field),
        `${JSON.stringify(payload).slice(0, 200)}: ${message}`,
      );
    }
    assert.deepEqual(await rows(ctx.sql), before);
    const [{ n }] = await ctx.sql`
      select count(*)::int as n from backup_report_deliveries`;
    assert.equal(n, 0);
  },
);

behaviour(
  "finalize-backup refuses a body that is not a JSON object with 400 invalid_body",
  async (ctx) => {
    await dispatched(ctx);
    const before = await rows(ctx.sql);
    for (const body of ["[1]", '"started"', "42", "null", "not json", ""]) {
      const a = await send(ctx, body);
      assert.equal(a.status, 400, `${body}: ${a.text}`);
      assertError(a, 400, "invalid_body");
    }
    assert.deepEqual(await rows(ctx.sql), before);
  },
);

behaviour(
  "finalize-backup refuses missing or wrong signatures with 401 invalid_signature",
  async (ctx) => {
    const run = await dispatched(ctx);
    const body = JSON.stringify(rep(run, "succeeded"));
    // The exact 300 s boundary is proven in webhook.rs; over HTTP the
    // stale and future stamps keep a margin of a minute, so that the time
    // the earlier cases take (seconds on a loaded machine) cannot carry a
    // "future" stamp back inside the tolerance.
    const now = Math.floor(Date.now() / 1000);
    const good = await webhookHeaders(body);
    const without = (name: string) => {
      const h = { ...good };
      delete h[name];
      return h;
    };
    const otherSecret = "whsec_" + btoa("another-secret-of-32-bytes-long!");
    const cases: [string, string, Record<string, string>][] = [
      ["no webhook-id", body, without("webhook-id")],
      ["no webhook-timestamp", body, without("webhook-timestamp")],
      ["no webhook-signature", body, without("webhook-signature")],
      ["no headers at all", body, { "content-type": "application/json" }],
      [
        "wrong secret",
        body,
        await webhookHeaders(body, { secret: otherSecret }),
      ],
      [
        "tampered body",
        body.replace('"size_bytes":2048', '"size_bytes":2049'),
        good,
      ],
      [
        "another webhook-id than signed",
        body,
        { ...good, "webhook-id": "msg_other" },
      ],
      [
        "timestamp 360 s old",
        body,
        await webhookHeaders(body, { timestamp: now - 360 }),
      ],
      [
        "timestamp 360 s in the future",
        body,
        await webhookHeaders(body, { timestamp: now + 360 }),
      ],
      [
        "timestamp not a number",
        body,
        { ...good, "webhook-timestamp": "yesterday" },
      ],
      [
        "signature not v1",
        body,
        {
          ...good,
          "webhook-signature": good["webhook-signature"].replace("v1,", "v2,"),
        },
      ],
    ];
    for (const [what, sentBody, headers] of cases) {
      const a = await postRaw(ctx, sentBody, headers);
      assert.equal(a.status, 401, `${what}: ${a.text}`);
      assertError(a, 401, "invalid_signature");
    }
    assert.deepEqual(
      shape(await row(ctx.sql, run.dispatch_id)),
      dispatchedRow(run),
      "no report was applied",
    );
  },
);

behaviour(
  "finalize-backup accepts a delivery when one of several signatures matches, within 300 s",
  async (ctx) => {
    const run = await dispatched(ctx);
    const body = JSON.stringify(rep(run, "started"));
    const headers = await webhookHeaders(body, {
      timestamp: Math.floor(Date.now() / 1000) - 240,
    });
    const bogus = `v1,${Buffer.from("x".repeat(32)).toString("base64")}`;
    headers["webhook-signature"] = `${bogus} v1a,abc ${
      headers["webhook-signature"]
    }`;
    const a = await postRaw(ctx, body, headers);
    assert.equal(a.status, 200, a.text);
    assert.deepEqual(a.body, changed(run.dispatch_id, "in_progress"));
  },
);

behaviour(
  "finalize-backup answers an unknown dispatch_id with 404 unknown_dispatch_id",
  async (ctx) => {
    const run = await dispatched(ctx);
    const before = await rows(ctx.sql);
    const unknown = {
      ...run,
      dispatch_id: "0190f5e1-2b3c-7d4e-8f50-617283940a1b",
    };
    for (const event of ["started", "succeeded", "failed"]) {
      assertError(
        await send(ctx, rep(unknown, event)),
        404,
        "unknown_dispatch_id",
      );
    }
    assert.deepEqual(await rows(ctx.sql), before);
  },
);

behaviour(
  "finalize-backup answers GET with 405 method_not_allowed",
  async (ctx) => {
    const a = await call(ctx, ctx.stack.fn("finalize-backup"));
    assertError(a, 405, "method_not_allowed");
    assert.ok(/\bPOST\b/.test(a.headers.get("allow") ?? ""));
  },
);

behaviour(
  "finalize-backup refuses a body over 65536 bytes with 413 payload_too_large and accepts one of exactly 65536",
  async (ctx) => {
    const run = await dispatched(ctx);
    const json = JSON.stringify(rep(run, "started"));
    const body = json + " ".repeat(65537 - json.length);
    const a = await send(ctx, body);
    assertError(a, 413, "payload_too_large");
    assert.deepEqual(
      shape(await row(ctx.sql, run.dispatch_id)),
      dispatchedRow(run),
    );

    const exact = json + " ".repeat(65536 - json.length);
    const ok = await send(ctx, exact);
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.body, changed(run.dispatch_id, "in_progress"));
  },
);

behaviour(
  "finalize-backup reads a streamed body (no content-length) to the same limit: 413 past 65536 bytes, applied at exactly 65536",
  async (ctx) => {
    const run = await dispatched(ctx);
    const json = JSON.stringify(rep(run, "started"));
    /** POSTs `body` in three chunks, so it is sent without a length. */
    const streamed = async (body: string) => {
      const bytes = new TextEncoder().encode(body);
      const third = Math.ceil(bytes.length / 3);
      const stream = new ReadableStream<Uint8Array>({
        start(c) {
          for (let i = 0; i < bytes.length; i += third) {
            c.enqueue(bytes.slice(i, i + third));
          }
          c.close();
        },
      });
      return await call(ctx, ctx.stack.fn("finalize-backup"), {
        method: "POST",
        headers: await webhookHeaders(body),
        body: stream,
      });
    };
    assertError(
      await streamed(json + " ".repeat(65537 - json.length)),
      413,
      "payload_too_large",
    );
    assert.deepEqual(
      shape(await row(ctx.sql, run.dispatch_id)),
      dispatchedRow(run),
    );
    const ok = await streamed(json + " ".repeat(65536 - json.length));
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.body, changed(run.dispatch_id, "in_progress"));
  },
);

behaviour(
  "finalize-backup refuses a correctly signed text/plain body with 415 unsupported_media_type",
  async (ctx) => {
    const run = await dispatched(ctx);
    const body = JSON.stringify(rep(run, "started"));
    const headers = {
      ...await webhookHeaders(body),
      "content-type": "text/plain",
    };
    const a = await postRaw(ctx, body, headers);
    assertError(a, 415, "unsupported_media_type");
    assert.deepEqual(
      shape(await row(ctx.sql, run.dispatch_id)),
      dispatchedRow(run),
    );
  },
);

behaviour(
  "finalize-backup returns 503 database_unavailable when the database cannot be reached",
  async (ctx) => {
    const closed =
      `postgres://postgres:db-password-never-shown@127.0.0.1:${freePort()}/backups`;
    const stack = await startStack({ databaseUrl: closed });
    try {
      const a = await send({ ...ctx, stack }, {
        event: "started",
        workflow_run_id: 1,
        run_attempt: 1,
      });
      assertError(a, 503, "database_unavailable");
      assert.ok(!a.text.includes("db-password-never-shown"), a.text);
    } finally {
      await stack.close();
    }
  },
);

// --- the runner ------------------------------------------------------------------------

suite.register();

// --- verification, retention, pruned (issue 12) ---------------------------------

behaviour(
  "finalize-backup lists for pruning only old successes beyond retention_keep in the new key's folder, named for their run; pruned marks them once",
  async (ctx) => {
    await ctx
      .sql`update backup_settings set retention_days = 10, retention_keep = 2`;
    const place = async (key: (id: string) => string, days: number) =>
      key(
        await finishedRun(ctx, days, (id) => ({ ...SUCCESS, s3_key: key(id) })),
      );
    const ours = (n: number) => (id: string) =>
      `db/2026100${n}T000000Z_${id}.dump`;
    const a = await place(ours(1), 50);
    const b = await place(ours(2), 40);
    const c = await place(ours(3), 11); // old enough, but among the newest 2
    await place(ours(4), 5); // too recent
    await place((id) => `other/20261001T000000Z_${id}.dump`, 60); // other folder
    await place((id) => `db/deeper/20261001T000000Z_${id}.dump`, 60); // deeper
    await place(() => `db/20261001T000000Z_${crypto.randomUUID()}.dump`, 60); // not its id
    const pruned = await place(ours(5), 70);
    await ctx
      .sql`update backup_history set pruned_at = now() where s3_key = ${pruned}`;

    const run = await dispatched(ctx);
    const key = `db/20261130T000000Z_${run.dispatch_id}.dump`;
    const done = await send(ctx, rep(run, "succeeded", { s3_key: key }));
    assert.equal(done.status, 200, done.text);
    // Kept: the newest two (the new run and the 5-day-old one). Listed, oldest
    // first: the rest older than 10 days, directly in db/, named for their run.
    assert.deepEqual(done.body.prune, [a, b, c]);

    const marked = await send(
      ctx,
      rep(run, "pruned", { pruned: [a, b, "db/unknown.dump"] }),
    );
    assert.equal(marked.status, 200, marked.text);
    // A pruned report lists nothing to prune: it is not a success's report.
    assert.deepEqual(marked.body, {
      dispatch_id: run.dispatch_id,
      status: "success",
      changed: false,
    });
    const rowsPruned = await ctx.sql`
      select s3_key from backup_history where pruned_at is not null order by s3_key`;
    assert.deepEqual(rowsPruned.map((r) => r.s3_key), [a, b, pruned].sort());
    const again = await send(ctx, rep(run, "succeeded", { s3_key: key }), {
      id: "again",
    });
    assert.deepEqual(again.body.prune, [c]);
  },
);

behaviour(
  "finalize-backup answers 61 concurrent verdicts to 21 runs exactly: repeats recorded once and writing no run, the one running run ended, each success listing its own folder and storing its verdict once",
  async (ctx) => {
    // Verdicts that reach an instance together are read in shared
    // statements (read_reports.sql, which also lists for a success's
    // repeat; retention.sql for the successes that bring a verification
    // verdict); each answer must still be exactly what it would be alone.
    await ctx
      .sql`update backup_settings set retention_days = 10, retention_keep = 1`;
    const VERDICT = { mode: "list", ok: true, tables: 3 };
    const failed: { dispatch_id: string; workflow_run_id: number }[] = [];
    const succeeded: { dispatch_id: string; workflow_run_id: number }[] = [];
    for (let i = 0; i < 10; i++) {
      const f = await finishedRun(ctx, 1, () => ({
        status: "failed",
        failure_reason: "step_failed",
        outcome_source: "report",
        error_text: "dump failed",
        workflow_run_id: 70_000 + i,
        run_attempt: 1,
      }));
      failed.push({ dispatch_id: f, workflow_run_id: 70_000 + i });
      // Two folders; each success is 20 + i days old.
      const folder = i % 2 === 0 ? "even" : "odd";
      const s = await finishedRun(ctx, 20 + i, (id) => ({
        ...SUCCESS,
        workflow_run_id: 71_000 + i,
        run_attempt: 1,
        s3_key: `${folder}/2026100${i}T000000Z_${id}.dump`,
      }));
      succeeded.push({ dispatch_id: s, workflow_run_id: 71_000 + i });
    }
    const keys = await ctx.sql`
      select dispatch_id::text as id, s3_key from backup_history
       where status = 'success' order by finished_at`;
    const keyOf = new Map(keys.map((k) => [k.id, k.s3_key]));
    const running = await dispatched(ctx);
    const before = await rows(ctx.sql);

    const sent: { id: string; body: Record<string, unknown> }[] = [];
    for (let round = 0; round < 3; round++) {
      for (const f of failed) {
        sent.push({
          id: `msg_verdict_f_${round}_${f.dispatch_id}`,
          body: rep(f, "failed", { error_text: "dump failed" }),
        });
      }
      for (const s of succeeded) {
        // The first round's carry a verification verdict, which each run
        // stores once (the run has none yet); the later rounds' are plain
        // repeats.
        sent.push({
          id: `msg_verdict_s_${round}_${s.dispatch_id}`,
          body: rep(s, "succeeded", {
            s3_key: keyOf.get(s.dispatch_id),
            ...(round === 0 ? { verification: VERDICT } : {}),
          }),
        });
      }
    }
    const end = { id: "msg_verdict_running", body: rep(running, "failed") };
    sent.splice(30, 0, end);
    const answers = await Promise.all(
      sent.map((r) => send(ctx, r.body, { id: r.id })),
    );

    for (const [i, a] of answers.entries()) {
      const r = sent[i].body;
      const id = r.dispatch_id as string;
      assert.equal(a.status, 200, a.text);
      if (r === end.body) {
        assert.deepEqual(a.body, changed(id, "failed"));
      } else if (r.event === "failed") {
        assert.deepEqual(a.body, changed(id, "failed", false));
      } else {
        // Every other success in its folder, oldest first, but the newest
        // of all (retention_keep 1): all are past retention_days.
        const folder = keyOf.get(id).split("/")[0];
        const others = keys.slice(0, -1)
          .filter((k) => k.id !== id && k.s3_key.startsWith(`${folder}/`))
          .map((k) => k.s3_key);
        assert.deepEqual(a.body, {
          ...changed(id, "success", false),
          prune: others,
        });
      }
    }
    const after = await rows(ctx.sql);
    const ended = after.find((r) => r.dispatch_id === running.dispatch_id);
    assert.deepEqual(
      [ended?.status, ended?.failure_reason, ended?.outcome_source],
      ["failed", "step_failed", "report"],
    );
    // Nothing written to an ended run but each success's verdict, once:
    // a success's version moves by one (and its updated_at with it).
    const finished = (rs: Json[], moved: number) =>
      rs.filter((r) => r.dispatch_id !== running.dispatch_id).map((r) =>
        r.status === "success"
          ? { ...r, version: r.version + moved, updated_at: null }
          : r
      );
    assert.deepEqual(finished(after, 0), finished(before, 1));
    const verified = await ctx.sql`
      select verification from backup_history where status = 'success'`;
    assert.deepEqual(
      verified.map((v) => v.verification),
      keys.map(() => VERDICT),
    );
    const recorded = await ctx.sql`
      select webhook_id, dispatch_id::text,
             encode(body_sha256, 'hex') as body_sha256
        from backup_report_deliveries where webhook_id like 'msg_verdict_%'`;
    assert.equal(recorded.length, sent.length);
    const byId = new Map(recorded.map((d) => [d.webhook_id, d]));
    for (const r of sent) {
      const hash = createHash("sha256").update(JSON.stringify(r.body))
        .digest("hex");
      assert.deepEqual(
        { ...byId.get(r.id) },
        {
          webhook_id: r.id,
          dispatch_id: r.body.dispatch_id,
          body_sha256: hash,
        },
      );
    }
    // A retry of one of them is still told from a new report.
    const retry = await send(ctx, sent[3].body, { id: sent[3].id });
    assert.deepEqual(retry.body, answers[3].body);
    const reused = await send(ctx, sent[4].body, { id: sent[3].id });
    assert.equal(reused.status, 409, reused.text);
    assert.equal(reused.body.error.code, "webhook_id_reused");
  },
);

behaviour(
  "finalize-backup stores a success's verification once; an unknown mode is a 400 naming it",
  async (ctx) => {
    const run = await dispatched(ctx);
    const verdict = {
      mode: "restore",
      ok: false,
      tables: 1,
      rows: 5,
      mismatches: [{ table: "public t", expected: 6, actual: 5 }],
      error: "row counts differ from the dump's snapshot",
    };
    const bad = await send(
      ctx,
      rep(run, "succeeded", { verification: { mode: "maybe", ok: true } }),
    );
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.body.error.code, "invalid_field");
    assert.match(bad.body.error.message, /^verification: /);
    const done = await send(
      ctx,
      rep(run, "succeeded", { verification: verdict }),
    );
    assert.equal(done.status, 200, done.text);
    const later = await send(
      ctx,
      rep(run, "succeeded", { verification: { mode: "list", ok: true } }),
    );
    assert.equal(later.status, 200, later.text);
    const [r] = await ctx.sql`
      select verification, verified_at, finished_at from backup_history
       where dispatch_id = ${run.dispatch_id}`;
    assert.deepEqual(r.verification, verdict);
    assert.ok(r.verified_at >= r.finished_at);
  },
);
