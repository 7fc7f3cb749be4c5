// GET /functions/v1/backup-status over HTTP: the real server process (the
// Rust core in WebAssembly) against a real PostgreSQL. Runs are created
// through trigger-backup (with a scripted GitHub stand-in) and the workflow's
// signed reports where the path matters, and inserted with SQL where exact
// timestamps matter. One database, one server and one GitHub stand-in are
// shared; each step starts from an empty history.

import assert from "node:assert/strict";
import { insertRun, type RunColumns, SUCCESS } from "./support/runs.ts";
import { assertError, serverSuite } from "./support/suite.ts";
import type { Sql } from "./support/db.ts";
import {
  ADMIN_ID,
  fetchChecked,
  type Json,
  NON_ADMIN_ID,
  report,
  type Stack,
  trigger,
  userToken,
} from "./support/stack.ts";
import { runDetails, type ScriptedGitHub } from "./support/github_script.ts";
import { startScriptedGitHub } from "./support/github_script.ts";
import { freshDatabase } from "./support/db.ts";
import { freePort, startStack } from "./support/stack.ts";
import { startListenRefusingProxy } from "./support/pg_proxy.ts";

const ORIGIN = "http://localhost:3000";
const SHA = "0123456789abcdef".repeat(4);
const MISSING = "0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";

/** Every field of a run, as the contract lists them. */
const RUN_FIELDS = [
  "created_at",
  "dispatch_id",
  "duration_ms",
  "error_text",
  "failure_reason",
  "finished_at",
  "phase",
  "progress",
  "pruned_at",
  "reason",
  "run_attempt",
  "run_url",
  "s3_key",
  "sha256",
  "size_bytes",
  "started_at",
  "status",
  "trigger_source",
  "triggered_by",
  "updated_at",
  "verification",
  "workflow_run_id",
];

const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

interface Ctx {
  stack: Stack;
  gh: ScriptedGitHub;
  sql: Sql;
  token: string;
}

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  body: Json;
  /** Milliseconds from sending the request to reading the whole answer. */
  ms: number;
  /** performance.now() when the whole answer was read. */
  at: number;
}

/** A request to backup-status; `query` is the query string without "?". */
async function status(
  ctx: Ctx,
  query = "",
  opts: {
    token?: string | null;
    headers?: Record<string, string>;
    method?: string;
  } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...opts.headers };
  const token = opts.token === undefined ? ctx.token : opts.token;
  if (token !== null && !("authorization" in headers)) {
    headers.authorization = `Bearer ${token}`;
  }
  const url = ctx.stack.fn("backup-status") + (query ? `?${query}` : "");
  const t0 = performance.now();
  const answer = await fetchChecked(url, {
    method: opts.method ?? "GET",
    headers,
  }, []);
  const at = performance.now();
  return { ...answer, ms: at - t0, at };
}

/** GET one run; asserts 200 and returns the answer. */
async function getRun(
  ctx: Ctx,
  id: string,
  extra = "",
  headers: Record<string, string> = {},
): Promise<Answer> {
  const a = await status(ctx, `dispatch_id=${id}${extra}`, { headers });
  assert.equal(a.status, 200, a.text);
  return a;
}

/** Presses the button (trigger-backup) with GitHub answering run details. */
async function dispatched(
  ctx: Ctx,
  workflowRunId: number,
  body?: unknown,
): Promise<{ dispatch_id: string; workflow_run_id: number }> {
  ctx.gh.script(runDetails(workflowRunId));
  const t = await trigger(ctx.stack, {
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.equal(t.status, 202, JSON.stringify(t.body));
  return { dispatch_id: t.body.dispatch_id, workflow_run_id: workflowRunId };
}

/** Sends a signed report for `run`; asserts it was applied. */
async function send(
  ctx: Ctx,
  run: { dispatch_id: string; workflow_run_id: number },
  event: string,
  fields: Record<string, unknown> = {},
): Promise<void> {
  const r = await report(ctx.stack, {
    event,
    dispatch_id: run.dispatch_id,
    workflow_run_id: run.workflow_run_id,
    run_attempt: 1,
    ...fields,
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.changed, true, JSON.stringify(r.body));
}

/** Places a history row with SQL; a finished success unless told. */
async function insertFinished(
  sql: Sql,
  fields: RunColumns = {},
): Promise<string> {
  return (await insertRun(sql, { ...SUCCESS, ...fields })).dispatch_id;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The history's `sweeper` before reconcile-backups ever ran. */
const NEVER_SWEPT = { last_run_at: null, healthy: false, problem: null };
const SERVICE_KEY = "service-role-key-for-the-status-tests-0123456789";

const suite = serverSuite<Ctx>("backup-status over HTTP against PostgreSQL", {
  env: { ALLOWED_ORIGINS: ORIGIN, SUPABASE_SERVICE_ROLE_KEY: SERVICE_KEY },
  context: async ({ stack, gh, sql }) => ({
    stack,
    gh,
    sql,
    token: await userToken(ADMIN_ID),
  }),
  after: () => {
    if (wakeUps.length) {
      console.log(
        `long-poll wake-ups: ${
          wakeUps.map((ms) => ms.toFixed(1)).join(", ")
        } ms`,
      );
    }
  },
});
const behaviour = suite.behaviour;

// --- authentication, CORS, methods ------------------------------------------

behaviour(
  "backup-status answers 401 without a valid token and 403 to a non-admin, before looking at the query",
  async (ctx) => {
    const id = await insertFinished(ctx.sql);
    for (const query of ["", `dispatch_id=${id}`, "limit=0", "bogus=1"]) {
      assertError(
        await status(ctx, query, { token: null }),
        401,
        "missing_token",
      );
      assertError(
        await status(ctx, query, { headers: { authorization: "Basic abc" } }),
        401,
        "missing_token",
      );
      assertError(
        await status(ctx, query, { token: "not.a.jwt" }),
        401,
        "invalid_token",
      );
      assertError(
        await status(ctx, query, {
          token: await userToken(ADMIN_ID, {}, "x".repeat(40)),
        }),
        401,
        "invalid_token",
      );
      assertError(
        await status(ctx, query, {
          token: await userToken(ADMIN_ID, {
            exp: Math.floor(Date.now() / 1000) - 3600,
          }),
        }),
        401,
        "invalid_token",
      );
      assertError(
        await status(ctx, query, { token: await userToken(NON_ADMIN_ID) }),
        403,
        "not_admin",
      );
    }
    const ok = await status(ctx);
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.body.runs.map((r: Json) => r.dispatch_id), [id]);
  },
);

behaviour(
  "backup-status answers CORS preflights for ALLOWED_ORIGINS, exposes the ETag, and refuses other methods with 405",
  async (ctx) => {
    const pre = await status(ctx, "", {
      method: "OPTIONS",
      token: null,
      headers: {
        origin: ORIGIN,
        "access-control-request-method": "GET",
        "access-control-request-headers": "authorization, if-none-match",
      },
    });
    assert.equal(pre.status, 204, pre.text);
    assert.equal(pre.headers.get("access-control-allow-origin"), ORIGIN);
    assert.equal(
      pre.headers.get("access-control-allow-methods"),
      "GET, POST, OPTIONS",
    );
    const allowed = (pre.headers.get("access-control-allow-headers") ?? "")
      .split(",").map((h) => h.trim().toLowerCase());
    assert.ok(allowed.includes("authorization"), allowed.join());
    assert.ok(allowed.includes("if-none-match"), allowed.join());

    const evil = await status(ctx, "", {
      method: "OPTIONS",
      token: null,
      headers: {
        origin: "https://evil.example.com",
        "access-control-request-method": "GET",
      },
    });
    assertError(evil, 403, "origin_not_allowed");
    assert.equal(evil.headers.get("access-control-allow-origin"), null);

    const get = await status(ctx, "", { headers: { origin: ORIGIN } });
    assert.equal(get.status, 200, get.text);
    assert.equal(get.headers.get("access-control-allow-origin"), ORIGIN);
    assert.match(
      get.headers.get("access-control-expose-headers") ?? "",
      /(^|,\s*)etag(\s*,|$)/i,
    );
    const denied = await status(ctx, "", {
      token: null,
      headers: { origin: ORIGIN },
    });
    assertError(denied, 401, "missing_token");
    assert.equal(
      denied.headers.get("access-control-allow-origin"),
      ORIGIN,
      "a browser can read the 401",
    );

    // POST is the test alert's (tests/alerts_test.ts).
    for (const method of ["PUT", "DELETE", "PATCH"]) {
      const a = await status(ctx, "", { method });
      assertError(a, 405, "method_not_allowed");
      assert.equal(a.headers.get("allow"), "GET, POST, OPTIONS");
    }
  },
);

// --- one run -------------------------------------------------------------------

behaviour(
  "backup-status returns one run with every field of the contract, and 404 unknown_dispatch_id for another",
  async (ctx) => {
    const before = Date.now();
    const run = await dispatched(ctx, 4242, { reason: "before the migration" });
    const a = await getRun(ctx, run.dispatch_id);
    assert.match(a.headers.get("content-type") ?? "", /^application\/json/);
    assert.deepEqual(Object.keys(a.body), ["run"]);
    const r = a.body.run;
    assert.deepEqual(Object.keys(r).sort(), RUN_FIELDS);
    assert.match(r.created_at, ISO_MS);
    assert.match(r.updated_at, ISO_MS);
    const created = Date.parse(r.created_at);
    assert.ok(
      created >= before - 1000 && created <= Date.now() + 1000,
      r.created_at,
    );
    assert.deepEqual(r, {
      dispatch_id: run.dispatch_id,
      status: "in_progress",
      phase: "queued",
      failure_reason: null,
      error_text: null,
      trigger_source: "manual",
      triggered_by: ADMIN_ID,
      reason: "before the migration",
      created_at: r.created_at,
      started_at: null,
      finished_at: null,
      updated_at: r.updated_at,
      duration_ms: null,
      s3_key: null,
      size_bytes: null,
      sha256: null,
      workflow_run_id: 4242,
      run_attempt: 1,
      run_url: "https://github.com/acme/app/actions/runs/4242",
      progress: null,
      verification: null,
      pruned_at: null,
    });

    assertError(
      await status(ctx, `dispatch_id=${MISSING}`),
      404,
      "unknown_dispatch_id",
    );
    // Upper case is the same UUID.
    const upper = await getRun(ctx, run.dispatch_id.toUpperCase());
    assert.equal(upper.body.run.dispatch_id, run.dispatch_id);
    // An unknown id is answered at once, even when asked to wait.
    const waited = await status(ctx, `dispatch_id=${MISSING}&wait=5`);
    assertError(waited, 404, "unknown_dispatch_id");
    assert.ok(waited.ms < 1000, `404 after ${waited.ms} ms`);
  },
);

behaviour(
  "backup-status shows the phase queued → running → dumped → uploaded → success, and the duration",
  async (ctx) => {
    const run = await dispatched(ctx, 5151);
    const phaseOf = async () => (await getRun(ctx, run.dispatch_id)).body.run;

    // An unfinished run has no duration (clients count the elapsed time
    // from started_at), so that its body and ETag only change with the run.
    const queued = await phaseOf();
    assert.equal(queued.phase, "queued");
    assert.equal(queued.started_at, null);
    assert.equal(queued.duration_ms, null);
    await sleep(30);
    const queuedLater = await getRun(ctx, run.dispatch_id);
    assert.deepEqual(queuedLater.body.run, queued);

    await send(ctx, run, "started");
    const running = await phaseOf();
    assert.equal(running.status, "in_progress");
    assert.equal(running.phase, "running");
    assert.match(running.started_at, ISO_MS);
    assert.ok(
      Math.abs(Date.now() - Date.parse(running.started_at)) < 5000,
      "started_at is the time of the started report",
    );
    assert.equal(running.duration_ms, null);

    await send(ctx, run, "progress", { progress: { phase: "dumped" } });
    const dumped = await phaseOf();
    assert.equal(dumped.phase, "dumped");
    assert.deepEqual(dumped.progress, { phase: "dumped" });

    const uploading = { phase: "uploaded", bytes: 123456 };
    await send(ctx, run, "progress", { progress: uploading });
    const uploaded = await phaseOf();
    assert.equal(uploaded.phase, "uploaded");
    assert.deepEqual(uploaded.progress, uploading);

    await send(ctx, run, "succeeded", {
      s3_key: `backups/${run.dispatch_id}.dump`,
      size_bytes: 987654321,
      sha256: SHA,
    });
    const done = await getRun(ctx, run.dispatch_id);
    const d = done.body.run;
    assert.equal(d.status, "success");
    assert.equal(d.phase, "success");
    assert.equal(d.failure_reason, null);
    assert.equal(d.s3_key, `backups/${run.dispatch_id}.dump`);
    assert.equal(d.size_bytes, 987654321);
    assert.equal(d.sha256, SHA);
    assert.match(d.finished_at, ISO_MS);
    assert.equal(
      d.duration_ms,
      Date.parse(d.finished_at) - Date.parse(d.started_at),
    );
    assert.ok(Date.parse(d.updated_at) >= Date.parse(d.started_at));

    // A finished run no longer changes: same body, same ETag.
    await sleep(20);
    const again = await getRun(ctx, run.dispatch_id);
    assert.equal(again.text, done.text);
    assert.equal(again.headers.get("etag"), done.headers.get("etag"));
  },
);

behaviour(
  "backup-status shows a failed run's failure_reason, error_text and exact duration",
  async (ctx) => {
    const failed = await insertFinished(ctx.sql, {
      status: "failed",
      failure_reason: "step_failed",
      s3_key: null,
      error_text: "pg_dump: error: connection refused",
      created_at: "2026-03-01T10:00:00Z",
      started_at: "2026-03-01T10:00:30Z",
      finished_at: "2026-03-01T10:02:33.456Z",
    });
    const f = (await getRun(ctx, failed)).body.run;
    assert.equal(f.status, "failed");
    assert.equal(f.phase, "failed");
    assert.equal(f.failure_reason, "step_failed");
    assert.equal(f.error_text, "pg_dump: error: connection refused");
    assert.equal(f.created_at, "2026-03-01T10:00:00.000Z");
    assert.equal(f.started_at, "2026-03-01T10:00:30.000Z");
    assert.equal(f.finished_at, "2026-03-01T10:02:33.456Z");
    assert.equal(f.duration_ms, 123_456);
    assert.equal(f.trigger_source, "schedule");
    assert.equal(f.triggered_by, null);

    // Never started (GitHub refused the dispatch): counted from created_at.
    const refused = await insertFinished(ctx.sql, {
      status: "failed",
      failure_reason: "dispatch_failed",
      outcome_source: "dispatch",
      s3_key: null,
      error_text: "GitHub answered 422: No ref found for: main",
      created_at: "2026-03-02T10:00:00Z",
      started_at: null,
      finished_at: "2026-03-02T10:00:01.5Z",
    });
    const r = (await getRun(ctx, refused)).body.run;
    assert.equal(r.phase, "failed");
    assert.equal(r.failure_reason, "dispatch_failed");
    assert.equal(r.started_at, null);
    assert.equal(r.duration_ms, 1500);

    // Through the workflow's own report.
    const run = await dispatched(ctx, 6161);
    await send(ctx, run, "started");
    await send(ctx, run, "cancelled", { error_text: "cancelled by octocat" });
    const c = (await getRun(ctx, run.dispatch_id)).body.run;
    assert.equal(c.status, "failed");
    assert.equal(c.phase, "failed");
    assert.equal(c.failure_reason, "cancelled");
    assert.equal(c.error_text, "cancelled by octocat");
  },
);

// --- the history ----------------------------------------------------------------

/**
 * Inserts 45 finished runs an hour apart (oldest first, so ids ascend with
 * time), rows 10–12 sharing one created_at to exercise the id tie-break.
 * `fraction` is added to every created_at. Returns the dispatch ids newest
 * first, the order the API must list them in.
 */
async function fortyFive(sql: Sql, fraction: string): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < 45; i++) {
    const hour = i >= 10 && i <= 12 ? 10 : i;
    const id = crypto.randomUUID();
    await sql`
      insert into backup_history
        (dispatch_id, status, outcome_source, trigger_source, s3_key,
         size_bytes, created_at, started_at, finished_at)
      values (${id}, 'success', 'report', 'schedule', ${`backups/${i}.dump`},
              ${1000 + i},
              timestamptz '2026-02-01T00:00:00Z' + ${hour} * interval '1 hour'
                + ${fraction}::interval,
              timestamptz '2026-02-01T00:00:10Z' + ${hour} * interval '1 hour',
              timestamptz '2026-02-01T00:01:10Z' + ${hour} * interval '1 hour')`;
    ids.push(id);
  }
  return ids.reverse();
}

/** Follows next_cursor from the first page; returns every page's ids. */
async function pages(ctx: Ctx, limit: number): Promise<string[][]> {
  const out: string[][] = [];
  let cursor: string | null = null;
  do {
    const q: string = `limit=${limit}` +
      (cursor ? `&cursor=${encodeURIComponent(cursor)}` : "");
    const a = await status(ctx, q);
    assert.equal(a.status, 200, a.text);
    assert.deepEqual(Object.keys(a.body).sort(), [
      "next_cursor",
      "notifications",
      "runs",
      "sweeper",
    ]);
    out.push(a.body.runs.map((r: Json) => r.dispatch_id));
    cursor = a.body.next_cursor;
    assert.ok(cursor === null || typeof cursor === "string");
    assert.ok(out.length <= 100, "next_cursor never ends");
  } while (cursor !== null);
  return out;
}

behaviour(
  "backup-status pages 45 runs (millisecond timestamps) as 20 + 20 + 5, newest first, next_cursor null at the end",
  async (ctx) => {
    const empty = await status(ctx);
    assert.equal(empty.status, 200, empty.text);
    assert.deepEqual(empty.body, {
      runs: [],
      next_cursor: null,
      sweeper: NEVER_SWEPT,
      notifications: [],
    });

    const expected = await fortyFive(ctx.sql, "0.250 seconds");
    const got = await pages(ctx, 20);
    assert.deepEqual(got, [
      expected.slice(0, 20),
      expected.slice(20, 40),
      expected.slice(40),
    ]);

    const first = await status(ctx);
    assert.equal(first.body.runs.length, 20, "the default limit is 20");
    assert.deepEqual(
      first.body.runs.map((r: Json) => r.dispatch_id),
      expected.slice(0, 20),
    );
    assert.equal(typeof first.body.next_cursor, "string");
    for (const r of first.body.runs) {
      assert.deepEqual(Object.keys(r).sort(), RUN_FIELDS);
    }

    const all = await status(ctx, "limit=100");
    assert.deepEqual(all.body.runs.map((r: Json) => r.dispatch_id), expected);
    assert.equal(all.body.next_cursor, null);
    const exact = await status(ctx, "limit=45");
    assert.equal(exact.body.runs.length, 45);
    assert.equal(exact.body.next_cursor, null, "no page after the last row");
    assert.deepEqual((await pages(ctx, 44)).map((p) => p.length), [44, 1]);
    assert.deepEqual((await pages(ctx, 1)).flat(), expected);
  },
);

behaviour(
  "backup-status pages 45 runs with microsecond timestamps (as now() writes them) without repeating or skipping a run",
  async (ctx) => {
    // created_at = hh:00:00.123654: the millisecond cursor must not make the
    // last run of a page reappear on the next one (nor skip any).
    const expected = await fortyFive(ctx.sql, "0.123654 seconds");
    const got = await pages(ctx, 20);
    const flat = got.flat();
    const repeated = flat.filter((id, i) => flat.indexOf(id) !== i);
    assert.deepEqual(
      repeated,
      [],
      `runs listed twice across pages of ${got.map((p) => p.length)}`,
    );
    assert.deepEqual(got, [
      expected.slice(0, 20),
      expected.slice(20, 40),
      expected.slice(40),
    ]);
  },
);

// --- ETag and long-polling -----------------------------------------------------

behaviour(
  "backup-status answers a matching If-None-Match with 304 and no body, and a changed run with a new ETag",
  async (ctx) => {
    const id = await insertFinished(ctx.sql, {
      status: "failed",
      failure_reason: "step_failed",
      s3_key: null,
    });
    const a = await getRun(ctx, id);
    const tag = a.headers.get("etag") ?? "";
    assert.match(tag, /^"[^"]+"$/, "a strong ETag");

    for (const sent of [tag, `W/${tag}`, `"other", ${tag}`]) {
      const b = await status(ctx, `dispatch_id=${id}`, {
        headers: { "if-none-match": sent },
      });
      assert.equal(b.status, 304, `If-None-Match: ${sent}`);
      assert.equal(b.text, "");
      assert.equal(b.headers.get("etag"), tag);
    }
    const other = await status(ctx, `dispatch_id=${id}`, {
      headers: { "if-none-match": '"other"' },
    });
    assert.equal(other.status, 200);
    assert.equal(other.text, a.text);

    await ctx
      .sql`update backup_history set reason = 'edited' where dispatch_id = ${id}`;
    const changed = await status(ctx, `dispatch_id=${id}`, {
      headers: { "if-none-match": tag },
    });
    assert.equal(changed.status, 200, changed.text);
    assert.equal(changed.body.run.reason, "edited");
    assert.notEqual(changed.headers.get("etag"), tag);

    // The history has an ETag too.
    const page = await status(ctx, "limit=5");
    const pageTag = page.headers.get("etag") ?? "";
    assert.match(pageTag, /^"[^"]+"$/);
    const same = await status(ctx, "limit=5", {
      headers: { "if-none-match": pageTag },
    });
    assert.equal(same.status, 304);
    assert.equal(same.text, "");
    await insertFinished(ctx.sql, { created_at: "2026-06-01T00:00:00Z" });
    const grown = await status(ctx, "limit=5", {
      headers: { "if-none-match": pageTag },
    });
    assert.equal(grown.status, 200);
    assert.equal(grown.body.runs.length, 2);
  },
);

behaviour(
  "backup-status long-poll answers at once without If-None-Match or with a stale one",
  async (ctx) => {
    const id = await insertFinished(ctx.sql);
    const a = await getRun(ctx, id, "&wait=25");
    assert.ok(a.ms < 1000, `no If-None-Match: answered after ${a.ms} ms`);
    const b = await getRun(ctx, id, "&wait=25", { "if-none-match": '"stale"' });
    assert.ok(b.ms < 1000, `stale If-None-Match: answered after ${b.ms} ms`);
    assert.equal(b.headers.get("etag"), a.headers.get("etag"));
    const c = await getRun(ctx, id, "&wait=0", {
      "if-none-match": '"stale"',
    });
    assert.ok(c.ms < 1000);
  },
);

behaviour(
  "backup-status long-poll times out with 304 and the same ETag after `wait` seconds",
  async (ctx) => {
    const id = await insertFinished(ctx.sql);
    const tag = (await getRun(ctx, id)).headers.get("etag") ?? "";
    const a = await status(ctx, `dispatch_id=${id}&wait=1`, {
      headers: { "if-none-match": tag },
    });
    assert.equal(a.status, 304, a.text);
    assert.equal(a.text, "");
    assert.equal(a.headers.get("etag"), tag);
    assert.ok(a.ms >= 950 && a.ms < 2500, `304 after ${a.ms} ms (wait=1)`);

    const b = await status(ctx, `dispatch_id=${id}&wait=2`, {
      headers: { "if-none-match": tag },
    });
    assert.equal(b.status, 304, b.text);
    assert.ok(b.ms >= 1950 && b.ms < 3500, `304 after ${b.ms} ms (wait=2)`);
  },
);

/** The wake-up latencies measured by the steps below, for the summary. */
const wakeUps: number[] = [];

/**
 * Long-polls `id` with its current ETag, sends `change` after 400 ms, and
 * asserts that the poll was still waiting then and answered 200 within
 * `withinMs` (1 s) of the report.
 */
async function assertWakesUp(
  ctx: Ctx,
  id: string,
  change: () => Promise<void>,
  withinMs = 1000,
): Promise<Json> {
  const current = await getRun(ctx, id);
  const tag = current.headers.get("etag") ?? "";
  const poll = status(ctx, `dispatch_id=${id}&wait=25`, {
    headers: { "if-none-match": tag },
  });
  let answeredAt = 0;
  poll.then((a) => answeredAt = a.at, () => {});
  await sleep(400);
  const sentAt = performance.now();
  assert.equal(
    answeredAt,
    0,
    "the long-poll answered before the run changed: it did not wait",
  );
  await change();
  const a = await poll;
  const latency = a.at - sentAt;
  wakeUps.push(latency);
  console.log(`long-poll wake-up: ${latency.toFixed(1)} ms after the report`);
  assert.equal(a.status, 200, a.text);
  assert.notEqual(a.headers.get("etag"), tag);
  assert.ok(latency < withinMs, `woke ${latency} ms after the report`);
  return a.body.run;
}

behaviour(
  "backup-status long-poll on a finished run wakes within 1 s of a report that changes it (a re-run)",
  async (ctx) => {
    const run = await dispatched(ctx, 7171);
    await send(ctx, run, "started");
    await send(ctx, run, "failed", { error_text: "disk full" });
    const reopened = await assertWakesUp(
      ctx,
      run.dispatch_id,
      () => send(ctx, run, "started", { run_attempt: 2 }),
    );
    assert.equal(reopened.status, "in_progress");
    assert.equal(reopened.phase, "running");
    assert.equal(reopened.run_attempt, 2);
  },
);

behaviour(
  "backup-status gives a running backup the same ETag while it does not change, so a long-poll waits (304 on timeout)",
  async (ctx) => {
    const run = await dispatched(ctx, 8181);
    await send(ctx, run, "started");
    const a = await getRun(ctx, run.dispatch_id);
    await sleep(30);
    const b = await getRun(ctx, run.dispatch_id);
    // Were the elapsed time part of the body the ETag hashes, the tag of
    // an unchanged running backup would change every millisecond.
    assert.equal(
      b.headers.get("etag"),
      a.headers.get("etag"),
      `an unchanged running backup got a new ETag (duration_ms ${a.body.run.duration_ms} → ${b.body.run.duration_ms})`,
    );
    const poll = await status(ctx, `dispatch_id=${run.dispatch_id}&wait=1`, {
      headers: { "if-none-match": b.headers.get("etag") ?? "" },
    });
    assert.equal(
      poll.status,
      304,
      `answered ${poll.status} after ${poll.ms} ms`,
    );
    assert.ok(poll.ms >= 950, `304 after ${poll.ms} ms (wait=1)`);
  },
);

behaviour(
  "backup-status long-poll on a running backup wakes within 1 s of its next progress report",
  async (ctx) => {
    const run = await dispatched(ctx, 9191);
    await send(ctx, run, "started");
    const dumped = await assertWakesUp(
      ctx,
      run.dispatch_id,
      () => send(ctx, run, "progress", { progress: { phase: "dumped" } }),
    );
    assert.equal(dumped.phase, "dumped");
  },
);

// --- the sweeper -----------------------------------------------------------------

/** backup_settings.last_sweep_at as the core reads it (ISO 8601). */
async function lastSweep(sql: Sql): Promise<string> {
  const [{ ms }] = await sql`
    select (floor(extract(epoch from last_sweep_at) * 1000)::int8)::float8
             as ms
      from backup_settings`;
  return new Date(ms).toISOString();
}

behaviour(
  "backup-status's history reports the sweeper: never run, healthy after a sweep, not healthy 4 minutes later, with the scheduler's problem",
  async (ctx) => {
    const sweeper = async () => {
      const a = await status(ctx);
      assert.equal(a.status, 200, a.text);
      return a.body.sweeper;
    };
    assert.deepEqual(await sweeper(), NEVER_SWEPT);

    // The database's scheduler could not call the function.
    await ctx.sql`
      update backup_settings set sweep_problem = 'pg_net is not enabled'`;
    assert.deepEqual(await sweeper(), {
      last_run_at: null,
      healthy: false,
      problem: "pg_net is not enabled",
    });
    await ctx.sql`update backup_settings set sweep_problem = null`;

    // reconcile-backups ran just now (a real call).
    const swept = await fetchChecked(ctx.stack.fn("reconcile-backups"), {
      method: "POST",
      headers: { authorization: `Bearer ${SERVICE_KEY}` },
      body: "{}",
    }, [SERVICE_KEY]);
    assert.equal(swept.status, 200, swept.text);
    const now = await lastSweep(ctx.sql);
    assert.ok(Math.abs(Date.parse(now) - Date.now()) < 5000, now);
    assert.deepEqual(await sweeper(), {
      last_run_at: now,
      healthy: true,
      problem: null,
    });

    // Two minutes ago: still healthy (it runs every minute).
    await ctx.sql`
      update backup_settings set last_sweep_at = now() - interval '2 minutes'`;
    assert.deepEqual(await sweeper(), {
      last_run_at: await lastSweep(ctx.sql),
      healthy: true,
      problem: null,
    });

    // Four minutes ago: the schedule has stopped.
    await ctx.sql`
      update backup_settings
         set last_sweep_at = now() - interval '4 minutes',
             sweep_problem = 'Vault secret backup_service_key is not set'`;
    assert.deepEqual(await sweeper(), {
      last_run_at: await lastSweep(ctx.sql),
      healthy: false,
      problem: "Vault secret backup_service_key is not set",
    });
  },
);

behaviour(
  "backup-status's one-run answer has no sweeper, so a sweep does not change its ETag",
  async (ctx) => {
    const id = await insertFinished(ctx.sql);
    const a = await getRun(ctx, id);
    assert.deepEqual(Object.keys(a.body), ["run"]);
    const tag = a.headers.get("etag") ?? "";
    await ctx.sql`
      update backup_settings
         set last_sweep_at = now(), sweep_problem = 'pg_net is not enabled'`;
    const same = await status(ctx, `dispatch_id=${id}`, {
      headers: { "if-none-match": tag },
    });
    assert.equal(same.status, 304, same.text);
    assert.equal(same.headers.get("etag"), tag);
  },
);

// --- bad parameters --------------------------------------------------------------

behaviour(
  "backup-status refuses bad parameters with 400 invalid_parameter naming the parameter",
  async (ctx) => {
    const id = await insertFinished(ctx.sql);
    const cases: [query: string, name: string][] = [
      ["status=failed", "status"],
      [`dispatch_id=${id}&foo=1`, "foo"],
      [`dispatch_id=${id}&wait=26`, "wait"],
      [`dispatch_id=${id}&wait=-1`, "wait"],
      [`dispatch_id=${id}&wait=1.5`, "wait"],
      [`dispatch_id=${id}&wait=soon`, "wait"],
      [`dispatch_id=${id}&wait=`, "wait"],
      ["wait=5", "wait"],
      ["dispatch_id=12345", "dispatch_id"],
      ["dispatch_id=", "dispatch_id"],
      [`dispatch_id=${id}&limit=2`, "dispatch_id"],
      [`dispatch_id=${id}&cursor=1_1`, "dispatch_id"],
      ["limit=0", "limit"],
      ["limit=101", "limit"],
      ["limit=-1", "limit"],
      ["limit=ten", "limit"],
      ["cursor=abc", "cursor"],
      ["cursor=123", "cursor"],
      ["cursor=_", "cursor"],
      // Forged positions outside any timestamp PostgreSQL can hold.
      ["cursor=9223372036854775807_9223372036854775807", "cursor"],
      ["cursor=-1_1", "cursor"],
      ["cursor=1700000000000000_0", "cursor"],
    ];
    for (const [query, name] of cases) {
      const a = await status(ctx, query);
      const message = assertError(a, 400, "invalid_parameter");
      assert.ok(
        message.startsWith(name),
        `?${query}: the message names ${name}: ${message}`,
      );
    }
    // The limits themselves are fine.
    assert.equal((await status(ctx, "limit=1")).status, 200);
    assert.equal((await status(ctx, "limit=100")).status, 200);
    assert.equal((await getRun(ctx, id, "&wait=0")).status, 200);
    // The last position a cursor may name (the end of year 9999) is one.
    const last = await status(ctx, "cursor=253402300799999999_1");
    assert.equal(last.status, 200);
  },
);

// --- the runner ------------------------------------------------------------------

suite.register();

// --- long-polls where LISTEN cannot work ----------------------------------------
//
// Each server below is started with BACKUP_DB_URL; its long-polls must then
// re-read the run every second instead of waiting for a notification.

/** Occurrences of `needle` in `text`. */
function count(text: string, needle: string): number {
  return text.split(needle).length - 1;
}

const POOLER_LOG = "long-polls re-read the run every second: the database " +
  "URL says pgbouncer=true";
const LISTEN_FAILED_LOG = "long-polls re-read the run every second: LISTEN " +
  "backup_history could not be established (0A000 LISTEN is not supported here)";
// Trust authentication ignores it; it stands for the password a real URL
// holds, which no log line may show.
const URL_PASSWORD = "listen-test-password-never-logged";

Deno.test("backup-status long-polls where LISTEN cannot work, against PostgreSQL", async (t) => {
  const db = await freshDatabase();
  const gh = startScriptedGitHub();
  const proxy = startListenRefusingProxy(db.url);
  const stacks: Stack[] = [];
  try {
    await db.sql`insert into backup_admins (user_id) values (${ADMIN_ID})`;
    const token = await userToken(ADMIN_ID);
    const withPassword = (url: string) => {
      const u = new URL(url);
      u.password = URL_PASSWORD;
      return u.toString();
    };
    const fresh = () =>
      db.sql`truncate backup_history, backup_report_deliveries`;

    // SUPABASE_DB_URL points at a port nobody listens on.
    const closedPort = freePort();
    await assert.rejects(
      Deno.connect({ hostname: "127.0.0.1", port: closedPort }),
    );
    const pooled = await startStack({
      databaseUrl: `postgres://postgres@127.0.0.1:${closedPort}/postgres`,
      githubApiUrl: gh.url,
      env: { BACKUP_DB_URL: `${withPassword(db.url)}?pgbouncer=true` },
    });
    stacks.push(pooled);
    const viaPooler: Ctx = { stack: pooled, gh, sql: db.sql, token };

    await t.step(
      "a long-poll through a transaction-pooler URL (pgbouncer=true) wakes by polling within 1.5 s of a report, and never LISTENs",
      async () => {
        await fresh();
        gh.reset();
        const run = await dispatched(viaPooler, 3131);
        await send(viaPooler, run, "started");
        const dumped = await assertWakesUp(
          viaPooler,
          run.dispatch_id,
          () =>
            send(viaPooler, run, "progress", { progress: { phase: "dumped" } }),
          1500,
        );
        assert.equal(dumped.phase, "dumped");
        const done = await assertWakesUp(
          viaPooler,
          run.dispatch_id,
          () =>
            send(viaPooler, run, "succeeded", {
              s3_key: "backups/pooled.dump",
              size_bytes: 42,
            }),
          1500,
        );
        assert.equal(done.status, "success");
        const listening = await db.sql`
          select count(*)::int as n from pg_stat_activity
           where datname = current_database() and query ilike 'listen%'`;
        assert.equal(listening[0].n, 0, "a connection ran LISTEN");
        const log = pooled.output();
        assert.equal(count(log, POOLER_LOG), 1, log);
        assert.equal(count(log, "LISTEN backup_history could not"), 0, log);
        assert.ok(!log.includes(URL_PASSWORD), "the log shows the URL");
      },
    );

    await t.step(
      "BACKUP_DB_URL wins over SUPABASE_DB_URL: with SUPABASE_DB_URL at a closed port every function still reaches the database",
      async () => {
        await fresh();
        gh.reset();
        const run = await dispatched(viaPooler, 3232);
        await send(viaPooler, run, "started");
        const one = await getRun(viaPooler, run.dispatch_id);
        assert.equal(one.body.run.phase, "running");
        const page = await status(viaPooler, "limit=5");
        assert.equal(page.status, 200, page.text);
        assert.deepEqual(
          page.body.runs.map((r: Json) => r.dispatch_id),
          [run.dispatch_id],
        );
        const rows = await db.sql`
          select status, workflow_run_id from backup_history`;
        assert.deepEqual([...rows], [{
          status: "in_progress",
          workflow_run_id: "3232",
        }]);
      },
    );

    const refusing = await startStack({
      databaseUrl: db.url,
      githubApiUrl: gh.url,
      env: { BACKUP_DB_URL: withPassword(proxy.url) },
    });
    stacks.push(refusing);
    const viaProxy: Ctx = { stack: refusing, gh, sql: db.sql, token };

    await t.step(
      "when LISTEN cannot be established the long-poll still answers the change within 1.5 s, and LISTEN is not retried on every request",
      async () => {
        await fresh();
        gh.reset();
        const run = await dispatched(viaProxy, 3333);
        await send(viaProxy, run, "started");
        const dumped = await assertWakesUp(
          viaProxy,
          run.dispatch_id,
          () =>
            send(viaProxy, run, "progress", { progress: { phase: "dumped" } }),
          1500,
        );
        assert.equal(dumped.phase, "dumped");
        const failed = await assertWakesUp(
          viaProxy,
          run.dispatch_id,
          () => send(viaProxy, run, "failed", { error_text: "disk full" }),
          1500,
        );
        assert.equal(failed.status, "failed");
        assert.equal(failed.error_text, "disk full");
        assert.equal(proxy.refused(), 1, "LISTEN was tried once");
        const log = refusing.output();
        assert.equal(count(log, LISTEN_FAILED_LOG), 1, log);
        assert.ok(!log.includes(URL_PASSWORD), "the log shows the URL");
      },
    );
  } finally {
    for (const s of stacks) await s.close();
    await proxy.close();
    await gh.close();
    await db.close();
  }
});

// --- the client module (web/backup_client.js) against a scripted fetch -----------

type Reply = Response | Error | ((init: RequestInit) => Response | Error);

/** A fetch that answers from `replies` in order and records every call. */
function scriptedFetch(replies: Reply[]) {
  const calls: { url: string; init: RequestInit; at: number }[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const fetch = async (
    input: string | URL | Request,
    init: RequestInit = {},
  ) => {
    calls.push({ url: String(input), init, at: performance.now() });
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    try {
      await sleep(5);
      const next = replies.shift();
      if (!next) throw new Error("no more scripted replies");
      const reply = typeof next === "function" ? next(init) : next;
      if (reply instanceof Error) throw reply;
      return reply;
    } finally {
      inFlight--;
    }
  };
  return { fetch, calls, maxInFlight: () => maxInFlight };
}

function runJson(fields: Record<string, unknown>, etag: string): Response {
  return Response.json({
    run: {
      dispatch_id: MISSING,
      status: "in_progress",
      phase: "queued",
      duration_ms: null,
      ...fields,
    },
  }, { headers: { etag } });
}

function apiError(
  status: number,
  code: string,
  extra: Record<string, unknown> = {},
): Response {
  return Response.json({
    error: { code, message: `${code} message` },
    ...extra,
  }, {
    status,
  });
}

Deno.test("the client module (web/backup_client.js) against a scripted fetch", async (t) => {
  const client = await import("../web/backup_client.js");

  await t.step(
    "watchBackup long-polls one request at a time with If-None-Match, reports each new state once and stops at a final status",
    async () => {
      const f = scriptedFetch([
        runJson({}, '"a"'),
        new Response(null, { status: 304, headers: { etag: '"a"' } }),
        // The same state under another tag (e.g. a server that counts the
        // elapsed time into the body): not a new state.
        runJson({ duration_ms: 500 }, '"b"'),
        runJson({ phase: "running" }, '"c"'),
        runJson({ phase: "dumped" }, '"d"'),
        runJson({
          status: "success",
          phase: "success",
          size_bytes: 42,
          duration_ms: 1234,
        }, '"e"'),
      ]);
      const backups = client.createBackupClient({
        supabaseUrl: "https://example.supabase.co/",
        getAccessToken: () => Promise.resolve("tok"),
        fetch: f.fetch,
      });
      const seen: string[] = [];
      const final = await backups.watchBackup(
        MISSING,
        (run) => seen.push(run.phase),
        { minIntervalMs: 0 },
      );
      assert.equal(final.status, "success");
      assert.deepEqual(seen, ["queued", "running", "dumped", "success"]);
      assert.equal(f.calls.length, 6, "no request after the final status");
      assert.equal(f.maxInFlight(), 1);
      const headers = f.calls.map((c) => new Headers(c.init.headers));
      assert.deepEqual(
        headers.map((h) => h.get("if-none-match")),
        [null, '"a"', '"a"', '"b"', '"c"', '"d"'],
      );
      for (const [i, c] of f.calls.entries()) {
        assert.equal(
          c.url,
          `https://example.supabase.co/functions/v1/backup-status?dispatch_id=${MISSING}&wait=25`,
        );
        assert.equal(headers[i].get("authorization"), "Bearer tok");
      }
    },
  );

  await t.step(
    "watchBackup sends the next long-poll at once after a new state, and no sooner than minIntervalMs after an early answer without one",
    async () => {
      const replies: Reply[] = [
        runJson({}, '"q"'),
        runJson({ phase: "running" }, '"r"'),
      ];
      // A server (or proxy) that does not hold the request: the same state
      // at once, again and again.
      for (let i = 0; i < 3; i++) {
        replies.push(
          new Response(null, { status: 304, headers: { etag: '"r"' } }),
        );
        replies.push(runJson({ phase: "running", duration_ms: i }, `"t${i}"`));
      }
      replies.push(runJson({ status: "failed", phase: "failed" }, '"end"'));
      const f = scriptedFetch(replies);
      const backups = client.createBackupClient({
        supabaseUrl: "http://x",
        accessToken: "tok",
        fetch: f.fetch,
      });
      const t0 = performance.now();
      const final = await backups.watchBackup(MISSING, undefined, {
        minIntervalMs: 100,
      });
      assert.equal(final.status, "failed");
      const gaps = f.calls.slice(1).map((c, i) => c.at - f.calls[i].at);
      assert.equal(gaps.length, 8);
      assert.ok(
        gaps.slice(0, 2).every((g) => g < 60),
        `gaps ${gaps.join(", ")}`,
      );
      assert.ok(gaps.slice(2).every((g) => g >= 95), `gaps ${gaps.join(", ")}`);
      assert.ok(performance.now() - t0 >= 600);
    },
  );

  await t.step(
    "watchBackup retries network errors, 429 and 5xx with exponential, jittered, capped backoff, and gives up on a 4xx",
    async () => {
      const f = scriptedFetch([
        new TypeError("connection refused"),
        apiError(503, "database_unavailable"),
        apiError(429, "rate_limited"),
        apiError(500, "internal"),
        apiError(502, "bad_gateway"),
        runJson({ status: "success", phase: "success" }, '"z"'),
      ]);
      const backups = client.createBackupClient({
        supabaseUrl: "http://x",
        accessToken: "tok",
        fetch: f.fetch,
      });
      const retries: [number, string, number][] = [];
      const final = await backups.watchBackup(MISSING, undefined, {
        baseBackoffMs: 20,
        maxBackoffMs: 100,
        onError: (e, ms) => retries.push([e.status, e.code, ms]),
      });
      assert.equal(final.status, "success");
      assert.deepEqual(retries.map(([s, c]) => [s, c]), [
        [0, "network_error"],
        [503, "database_unavailable"],
        [429, "rate_limited"],
        [500, "internal"],
        [502, "bad_gateway"],
      ]);
      const caps = [20, 40, 80, 100, 100];
      for (const [i, [, , ms]] of retries.entries()) {
        assert.ok(
          ms >= caps[i] / 2 && ms <= caps[i],
          `retry ${i + 1}: ${ms} ms, expected within [${caps[i] / 2}, ${
            caps[i]
          }]`,
        );
      }
      const gaps = f.calls.slice(1).map((c, i) => c.at - f.calls[i].at);
      for (const [i, gap] of gaps.entries()) {
        assert.ok(
          gap >= retries[i][2],
          `gap ${gap} < backoff ${retries[i][2]}`,
        );
      }
      const delays = Array.from({ length: 200 }, () => client.backoffDelay(10));
      assert.ok(delays.every((d) => d >= 15_000 && d <= 30_000));
      assert.ok(new Set(delays).size > 50, "jittered");

      const denied = scriptedFetch([apiError(401, "invalid_token")]);
      const c2 = client.createBackupClient({
        supabaseUrl: "http://x",
        accessToken: "tok",
        fetch: denied.fetch,
      });
      await assert.rejects(
        c2.watchBackup(MISSING, undefined, { baseBackoffMs: 1 }),
        (e: Error) =>
          e instanceof client.BackupApiError && e.status === 401 &&
          e.code === "invalid_token",
      );
      assert.equal(denied.calls.length, 1);
    },
  );

  await t.step(
    "an answer cut off mid-body is a network error: watchBackup keeps its last ETag and asks again, getBackup rejects",
    async () => {
      const cutOff = (etag: string) =>
        new Response(
          new ReadableStream({
            start(c) {
              c.enqueue(new TextEncoder().encode('{"run":{"status":"succ'));
              c.error(new Error("connection reset"));
            },
          }),
          { status: 200, headers: { etag } },
        );
      const f = scriptedFetch([
        runJson({}, '"a"'),
        cutOff('"b"'),
        new Response("<html>proxy</html>", {
          status: 200,
          headers: { etag: '"b"' },
        }),
        runJson({ status: "success", phase: "success" }, '"b"'),
      ]);
      const backups = client.createBackupClient({
        supabaseUrl: "http://x",
        accessToken: "tok",
        fetch: f.fetch,
      });
      const seen: string[] = [];
      const errors: string[] = [];
      const final = await backups.watchBackup(
        MISSING,
        (run) => seen.push(run.status),
        {
          minIntervalMs: 0,
          baseBackoffMs: 1,
          onError: (e) => errors.push(`${e.status} ${e.code}`),
        },
      );
      assert.equal(final.status, "success");
      assert.deepEqual(seen, ["in_progress", "success"]);
      assert.deepEqual(errors, ["0 network_error", "0 network_error"]);
      assert.deepEqual(
        f.calls.map((c) => new Headers(c.init.headers).get("if-none-match")),
        [null, '"a"', '"a"', '"a"'],
        "the tag of an answer never read is never sent",
      );

      const once = scriptedFetch([cutOff('"z"')]);
      const c2 = client.createBackupClient({
        supabaseUrl: "http://x",
        accessToken: "tok",
        fetch: once.fetch,
      });
      await assert.rejects(
        c2.getBackup(MISSING),
        (e: Error) =>
          e instanceof client.BackupApiError && e.status === 0 &&
          e.code === "network_error" &&
          e.message.startsWith("network error: the answer was cut off"),
      );
    },
  );

  await t.step(
    "watchBackup stops on abort or stop(), with no further request",
    async () => {
      const hang = (init: RequestInit) =>
        new Promise<Response>((_, reject) => {
          init.signal?.addEventListener(
            "abort",
            () => reject(init.signal?.reason),
          );
        });
      const calls: RequestInit[] = [];
      const fetch = (_: string | URL | Request, init: RequestInit = {}) => {
        calls.push(init);
        return hang(init);
      };
      const backups = client.createBackupClient({
        supabaseUrl: "http://x",
        accessToken: "tok",
        fetch,
      });
      const controller = new AbortController();
      const watch = backups.watchBackup(MISSING, undefined, {
        signal: controller.signal,
      });
      await sleep(20);
      controller.abort();
      await assert.rejects(watch, (e: Error) => e.name === "AbortError");
      const stopped = backups.watchBackup(MISSING);
      await sleep(20);
      stopped.stop();
      await assert.rejects(stopped, (e: Error) => e.name === "AbortError");
      await sleep(50);
      assert.equal(calls.length, 2);
      assert.ok(calls.every((c) => c.signal?.aborted));
    },
  );

  await t.step(
    "triggerBackup turns 409 into “already running: <id>”, and every other non-2xx into a BackupApiError",
    async () => {
      const running = "01a22592-d21d-7612-9aad-bcfeb23f2727";
      const f = scriptedFetch([
        Response.json({
          dispatch_id: running,
          status: "in_progress",
          workflow_run_id: 7,
          run_url: "https://github.com/acme/app/actions/runs/7",
        }, { status: 202 }),
        apiError(409, "backup_in_progress", { dispatch_id: running }),
        apiError(502, "dispatch_failed", { dispatch_id: MISSING }),
        apiError(403, "not_admin"),
        new Response("<html>Bad Gateway</html>", {
          status: 504,
          statusText: "Gateway Timeout",
        }),
        new TypeError("Failed to fetch"),
      ]);
      const backups = client.createBackupClient({
        supabaseUrl: "http://x",
        accessToken: "tok",
        fetch: f.fetch,
      });
      const ok = await backups.triggerBackup({ reason: "pre-deploy" });
      assert.equal(ok.dispatch_id, running);
      assert.equal(f.calls[0].url, "http://x/functions/v1/trigger-backup");
      assert.equal(f.calls[0].init.method, "POST");
      assert.equal(f.calls[0].init.body, '{"reason":"pre-deploy"}');

      await assert.rejects(backups.triggerBackup(), (e: Error) => {
        assert.ok(e instanceof client.BackupInProgressError);
        assert.ok(e instanceof client.BackupApiError);
        assert.equal(e.message, `already running: ${running}`);
        assert.equal(e.dispatchId, running);
        assert.equal(e.status, 409);
        assert.equal(e.code, "backup_in_progress");
        return true;
      });
      await assert.rejects(backups.triggerBackup(), (e: Error) => {
        assert.ok(e instanceof client.BackupApiError);
        assert.ok(!(e instanceof client.BackupInProgressError));
        assert.deepEqual(
          [e.status, e.code, e.message, e.dispatchId],
          [502, "dispatch_failed", "dispatch_failed message", MISSING],
        );
        return true;
      });
      await assert.rejects(
        backups.triggerBackup(),
        (e: Error) =>
          e instanceof client.BackupApiError && e.status === 403 &&
          e.code === "not_admin" && e.dispatchId === undefined,
      );
      await assert.rejects(
        backups.triggerBackup(),
        (e: Error) =>
          e instanceof client.BackupApiError && e.status === 504 &&
          e.code === "http_504" && e.message === "HTTP 504 Gateway Timeout",
      );
      await assert.rejects(
        backups.triggerBackup(),
        (e: Error) =>
          e instanceof client.BackupApiError && e.status === 0 &&
          e.code === "network_error",
      );
    },
  );

  await t.step(
    "listBackups and getBackup build the documented queries",
    async () => {
      const f = scriptedFetch([
        Response.json({ runs: [], next_cursor: "17_4" }),
        Response.json({ runs: [], next_cursor: null }),
        runJson({}, '"x"'),
      ]);
      const backups = client.createBackupClient({
        supabaseUrl: "http://x",
        accessToken: "tok",
        fetch: f.fetch,
      });
      assert.equal((await backups.listBackups()).next_cursor, "17_4");
      await backups.listBackups({ limit: 5, cursor: "17_4" });
      assert.equal((await backups.getBackup(MISSING)).dispatch_id, MISSING);
      assert.deepEqual(f.calls.map((c) => c.url), [
        "http://x/functions/v1/backup-status",
        "http://x/functions/v1/backup-status?limit=5&cursor=17_4",
        `http://x/functions/v1/backup-status?dispatch_id=${MISSING}`,
      ]);
      assert.throws(
        () => client.createBackupClient({ supabaseUrl: "http://x" }),
        TypeError,
      );
    },
  );
});
