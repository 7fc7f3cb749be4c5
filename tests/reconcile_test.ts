// POST /functions/v1/reconcile-backups over HTTP: the sweep that ends silent
// runs, against the real server process (scripts/serve.ts, the Rust core in
// WebAssembly), a real PostgreSQL and a scripted GitHub stand-in.
//
// There is no clock hook in the server: the "clock" is the data. Rows are
// placed in the past (created_at, started_at), GitHub's `updated_at` is
// placed in the past, and backup_settings' deadlines are lowered within their
// check constraints. One database, one server and one GitHub stand-in are
// shared by the steps below; each step starts from empty tables, default
// settings and an empty GitHub script.

import assert from "node:assert/strict";
import { insertRun } from "./support/runs.ts";
import {
  assertError,
  call as callChecked,
  serverSuite,
  stackSecrets,
} from "./support/suite.ts";
import type { Sql } from "./support/db.ts";
import {
  ADMIN_ID,
  type Answer,
  type Json,
  report,
  type Stack,
  startStack,
  TEST_GITHUB_TOKEN,
  TEST_JWT_SECRET,
  trigger,
  webhookHeaders,
} from "./support/stack.ts";
import {
  runDetails,
  type Scripted,
  type ScriptedGitHub,
} from "./support/github_script.ts";

const SERVICE_KEY = "service-role-key-for-the-reconcile-tests-0123456789";
const SHA = "0123456789abcdef".repeat(4);
const MIN = 60;
const HOUR = 3600;

interface Ctx {
  stack: Stack;
  gh: ScriptedGitHub;
  sql: Sql;
  dbUrl: string;
}

/** Every value that must never appear in a response or in the server log. */
/** Every value that must never appear in a response or the log. */
const secrets = (ctx: Ctx) => stackSecrets(ctx, SERVICE_KEY);

/** fetch, read the body, and check that it leaks no secret. */
const call = (ctx: Ctx, url: string, init: RequestInit = {}) =>
  callChecked(ctx, url, init, SERVICE_KEY);

/** POST /reconcile-backups with the service role key (or these headers). */
/** The body a signed sweep request must have: a signature alone does not
 * say which endpoint it was made for. */
const SIGNED_SWEEP = '{"sweep":true}';

function sweep(
  ctx: Ctx,
  opts: { headers?: Record<string, string>; method?: string; body?: string } =
    {},
): Promise<Answer> {
  const method = opts.method ?? "POST";
  return call(ctx, ctx.stack.fn("reconcile-backups"), {
    method,
    headers: opts.headers ?? {
      authorization: `Bearer ${SERVICE_KEY}`,
      "content-type": "application/json",
    },
    body: method === "GET" || method === "HEAD" ? undefined : opts.body ?? "{}",
  });
}

/** A sweep, with the wall-clock window it ran in. */
async function timedSweep(
  ctx: Ctx,
): Promise<{ a: Answer; before: number; after: number }> {
  const before = Date.now();
  const a = await sweep(ctx);
  const after = Date.now();
  assert.equal(a.status, 200, a.text);
  return { a, before, after };
}

/** The answer of a sweep that changed nothing. */
function nothing(github: string, checked = 1): Json {
  return { checked, changed: [], github };
}

/** The answer of a sweep that failed `id` with `reason`. */
function failedOne(id: string, reason: string, github: string): Json {
  return {
    checked: 1,
    changed: [{ dispatch_id: id, status: "failed", failure_reason: reason }],
    github,
  };
}

interface Row {
  dispatch_id: string;
  status: string;
  failure_reason: string | null;
  outcome_source: string | null;
  error_text: string | null;
  workflow_run_id: number | null;
  run_attempt: number;
  s3_key: string | null;
  version: number;
  /** Unix ms exactly as the core reads them (select_run.sql). */
  created_ms: number;
  started_ms: number | null;
  finished_ms: number | null;
}

/** src/sql/select_run.sql: the row as the core reads it. */
const SELECT_RUN = await Deno.readTextFile(
  new URL("../src/sql/select_run.sql", import.meta.url),
);

/** The row, read with the core's own query (so times match its rounding). */
async function row(sql: Sql, dispatchId: string): Promise<Row> {
  const found = await sql.unsafe(
    `${SELECT_RUN} where h.dispatch_id = $1::uuid`,
    [dispatchId],
  );
  assert.equal(found.length, 1, `one row for ${dispatchId}`);
  const run: Json = found[0].run;
  return {
    dispatch_id: run.dispatch_id,
    status: run.status,
    failure_reason: run.failure_reason,
    outcome_source: run.outcome_source,
    error_text: run.error_text,
    workflow_run_id: run.workflow_run_id,
    run_attempt: run.run_attempt,
    s3_key: run.s3_key,
    version: run.version,
    created_ms: run.created_at,
    started_ms: run.started_at,
    finished_ms: run.finished_at,
  };
}

async function rowCount(sql: Sql): Promise<number> {
  const [{ n }] = await sql`select count(*)::int as n from backup_history`;
  return n;
}

/** The row of a run still in progress, untouched since it was inserted. */
function untouched(r: Row): void {
  assert.equal(r.status, "in_progress");
  assert.equal(r.failure_reason, null);
  assert.equal(r.outcome_source, null);
  assert.equal(r.error_text, null);
  assert.equal(r.finished_ms, null);
  assert.equal(r.version, 0);
}

/** Asserts the row was failed by the sweep that ran in [before, after]. */
function assertFailed(
  r: Row,
  reason: string,
  source: string,
  errorText: string,
  window: { before: number; after: number },
): void {
  assert.equal(r.status, "failed");
  assert.equal(r.failure_reason, reason);
  assert.equal(r.outcome_source, source);
  assert.equal(r.error_text, errorText);
  assert.ok(r.finished_ms !== null, "finished_at is set");
  assert.ok(
    r.finished_ms >= window.before - 1 && r.finished_ms <= window.after + 1,
    `finished_at ${r.finished_ms} within the sweep [${window.before}, ${window.after}]`,
  );
  assert.equal(r.version, 1, "written once");
}

/** The core's timestamp format (src/time.rs iso8601). */
const iso = (ms: number) => new Date(ms).toISOString();

/** GitHub's own format: whole seconds, `Z`. */
function githubTime(agoSeconds: number): { text: string; ms: number } {
  const ms = Math.floor((Date.now() - agoSeconds * 1000) / 1000) * 1000;
  return { text: new Date(ms).toISOString().replace(".000Z", "Z"), ms };
}

/** A GET /actions/runs/{id} answer. */
function ghRun(
  id: number,
  status: string,
  conclusion: string | null,
  updatedAt: string,
  runAttempt = 1,
): Scripted {
  return {
    status: 200,
    body: {
      id,
      name: "Database backup",
      run_attempt: runAttempt,
      status,
      conclusion,
      html_url: `https://github.com/acme/app/actions/runs/${id}`,
      created_at: updatedAt,
      updated_at: updatedAt,
    },
  };
}

/**
 * Places a running manual backup in the past: created `createdAgo` seconds
 * ago, started `startedAgo` seconds ago (null: never).
 */
async function insertRunning(
  sql: Sql,
  o: {
    createdAgo: number;
    startedAgo?: number | null;
    workflowRunId?: number | null;
  },
): Promise<string> {
  const runId = o.workflowRunId ?? null;
  const row = await insertRun(sql, {
    triggered_by: ADMIN_ID,
    workflow_run_id: runId,
    run_url: runId === null
      ? null
      : `https://github.com/acme/app/actions/runs/${runId}`,
  }, { createdAgo: o.createdAgo, startedAgo: o.startedAgo ?? null });
  return row.dispatch_id;
}

async function backoffUntilMs(sql: Sql): Promise<number | null> {
  const [{ ms }] = await sql`
    select ((extract(epoch from github_backoff_until) * 1000)::int8)::float8 as ms
      from backup_settings`;
  return ms;
}

function runPath(id: number): string {
  return `/repos/acme/app/actions/runs/${id}`;
}

/** The GitHub requests made so far are exactly these GETs of runs. */
function assertRunRequests(gh: ScriptedGitHub, ids: number[]): void {
  assert.deepEqual(
    gh.requests.map((r) => `${r.method} ${r.path}`),
    ids.map((id) => `GET ${runPath(id)}`),
  );
  for (const r of gh.requests) {
    assert.equal(r.headers["authorization"], `Bearer ${TEST_GITHUB_TOKEN}`);
  }
}

const startText = (created: number, seconds = 600) =>
  `start deadline passed: no started report within ${seconds} s of the dispatch at ${
    iso(created)
  } (deadline ${iso(created + seconds * 1000)})`;

const runtimeText = (since: number, seconds = 7200) =>
  `max runtime passed: no final report within ${seconds} s of the start at ${
    iso(since)
  } (deadline ${iso(since + seconds * 1000)})`;

const githubText = (
  runId: number,
  attempt: number,
  conclusion: string,
  completedMs: number,
  grace = 60,
) =>
  `GitHub reports workflow run ${runId} (attempt ${attempt}) completed with conclusion ${conclusion} at ${
    iso(completedMs)
  }, and no final report arrived within ${grace} s` +
  (conclusion === "success"
    ? ": the workflow succeeded but never reported its object, so the backup cannot be verified"
    : "");

const suite = serverSuite<Ctx>(
  "reconcile-backups over HTTP against PostgreSQL",
  {
    env: { SUPABASE_SERVICE_ROLE_KEY: SERVICE_KEY },
    context: (base) => base,
    logSecrets: { endpoint: "reconcile-backups", values: secrets },
  },
);
const behaviour = suite.behaviour;

// --- the start deadline -----------------------------------------------------------

behaviour(
  "a run never started is left alone at 9 minutes and failed/lost (source deadline) at 11",
  async (ctx) => {
    const id = await insertRunning(ctx.sql, { createdAgo: 9 * MIN });
    const early = await sweep(ctx);
    assert.equal(early.status, 200, early.text);
    assert.deepEqual(early.body, nothing("no_run_id"));
    untouched(await row(ctx.sql, id));

    await ctx.sql`
      update backup_history set created_at = now() - interval '11 minutes'
       where dispatch_id = ${id}::uuid`;
    const { created_ms } = await row(ctx.sql, id);
    const { a, before, after } = await timedSweep(ctx);
    assert.deepEqual(a.body, failedOne(id, "lost", "no_run_id"));
    assertFailed(
      await row(ctx.sql, id),
      "lost",
      "deadline",
      startText(created_ms),
      { before, after },
    );
    assert.equal(ctx.gh.requests.length, 0, "no run id: GitHub is not asked");

    // Terminal now: the next sweep finds nothing to do.
    assert.deepEqual((await sweep(ctx)).body, nothing("skipped", 0));
    assert.equal((await row(ctx.sql, id)).version, 1);
  },
);

behaviour(
  "the start deadline is read from backup_settings (60 s: a run 61 s old is lost)",
  async (ctx) => {
    await ctx.sql`update backup_settings set start_deadline_seconds = 60`;
    const young = await insertRunning(ctx.sql, { createdAgo: 50 });
    assert.deepEqual((await sweep(ctx)).body, nothing("no_run_id"));
    untouched(await row(ctx.sql, young));

    await ctx.sql`
      update backup_history set created_at = now() - interval '61 seconds'
       where dispatch_id = ${young}::uuid`;
    const { created_ms } = await row(ctx.sql, young);
    const { a, before, after } = await timedSweep(ctx);
    assert.deepEqual(a.body, failedOne(young, "lost", "no_run_id"));
    assertFailed(
      await row(ctx.sql, young),
      "lost",
      "deadline",
      startText(created_ms, 60),
      { before, after },
    );
  },
);

behaviour(
  "past the start deadline GitHub's 'queued' does not save a run, 'in_progress' does",
  async (ctx) => {
    const queued = await insertRunning(ctx.sql, {
      createdAgo: 11 * MIN,
      workflowRunId: 7001,
    });
    ctx.gh.script(ghRun(7001, "queued", null, githubTime(11 * MIN).text));
    const { created_ms } = await row(ctx.sql, queued);
    const { a, before, after } = await timedSweep(ctx);
    assert.deepEqual(a.body, failedOne(queued, "lost", "ok"));
    assertFailed(
      await row(ctx.sql, queued),
      "lost",
      "deadline",
      startText(created_ms),
      { before, after },
    );
    assertRunRequests(ctx.gh, [7001]);

    ctx.gh.reset();
    const running = await insertRunning(ctx.sql, {
      createdAgo: 11 * MIN,
      workflowRunId: 7002,
    });
    ctx.gh.script(ghRun(7002, "in_progress", null, githubTime(10).text));
    assert.deepEqual((await sweep(ctx)).body, nothing("ok"));
    untouched(await row(ctx.sql, running));
    assertRunRequests(ctx.gh, [7002]);
  },
);

// --- the max runtime --------------------------------------------------------------

behaviour(
  "a started run is left alone before the max runtime and failed/timed_out after it",
  async (ctx) => {
    const id = await insertRunning(ctx.sql, {
      createdAgo: 2 * HOUR,
      startedAgo: 2 * HOUR - 2 * MIN,
    });
    assert.deepEqual((await sweep(ctx)).body, nothing("no_run_id"));
    untouched(await row(ctx.sql, id));

    await ctx.sql`
      update backup_history
         set created_at = now() - interval '2 hours 2 minutes',
             started_at = now() - interval '2 hours 1 minute'
       where dispatch_id = ${id}::uuid`;
    const { started_ms } = await row(ctx.sql, id);
    assert.ok(started_ms !== null);
    const { a, before, after } = await timedSweep(ctx);
    assert.deepEqual(a.body, failedOne(id, "timed_out", "no_run_id"));
    assertFailed(
      await row(ctx.sql, id),
      "timed_out",
      "deadline",
      runtimeText(started_ms),
      { before, after },
    );
  },
);

behaviour(
  "the max runtime is read from backup_settings and counts from created_at when GitHub says running",
  async (ctx) => {
    await ctx.sql`update backup_settings set max_runtime_seconds = 60`;
    const started = await insertRunning(ctx.sql, {
      createdAgo: 50,
      startedAgo: 45,
    });
    assert.deepEqual((await sweep(ctx)).body, nothing("no_run_id"));
    untouched(await row(ctx.sql, started));
    await ctx.sql`
      update backup_history
         set created_at = now() - interval '70 seconds',
             started_at = now() - interval '61 seconds'`;
    const { started_ms } = await row(ctx.sql, started);
    assert.ok(started_ms !== null);
    const first = await timedSweep(ctx);
    assert.deepEqual(
      first.a.body,
      failedOne(started, "timed_out", "no_run_id"),
    );
    assertFailed(
      await row(ctx.sql, started),
      "timed_out",
      "deadline",
      runtimeText(started_ms, 60),
      first,
    );

    // Never reported `started`, but GitHub says it is running: no `lost`,
    // and the max runtime counts from the dispatch.
    await ctx.sql`update backup_settings set max_runtime_seconds = 120`;
    const silent = await insertRunning(ctx.sql, {
      createdAgo: 121,
      workflowRunId: 7010,
    });
    ctx.gh.script(ghRun(7010, "in_progress", null, githubTime(5).text));
    const { created_ms } = await row(ctx.sql, silent);
    const second = await timedSweep(ctx);
    assert.deepEqual(second.a.body, failedOne(silent, "timed_out", "ok"));
    assertFailed(
      await row(ctx.sql, silent),
      "timed_out",
      "deadline",
      runtimeText(created_ms, 120),
      second,
    );
  },
);

// --- GitHub's record -------------------------------------------------------------

const CONCLUSIONS: [conclusion: string, reason: string][] = [
  ["failure", "step_failed"],
  ["startup_failure", "step_failed"],
  ["cancelled", "cancelled"],
  ["timed_out", "timed_out"],
  ["success", "lost"],
  ["neutral", "lost"],
];

behaviour(
  "GitHub's conclusion after the grace period fails the run with the mapped reason, source github",
  async (ctx) => {
    let runId = 7100;
    for (const [conclusion, reason] of CONCLUSIONS) {
      await ctx.sql`truncate backup_history`;
      ctx.gh.reset();
      runId++;
      const id = await insertRunning(ctx.sql, {
        createdAgo: 5 * MIN,
        startedAgo: 4 * MIN,
        workflowRunId: runId,
      });
      const done = githubTime(2 * MIN);
      ctx.gh.script(ghRun(runId, "completed", conclusion, done.text));
      const { a, before, after } = await timedSweep(ctx);
      assert.deepEqual(a.body, failedOne(id, reason, "ok"), conclusion);
      const r = await row(ctx.sql, id);
      assertFailed(
        r,
        reason,
        "github",
        githubText(runId, 1, conclusion, done.ms),
        { before, after },
      );
      assert.equal(r.run_attempt, 1);
      assertRunRequests(ctx.gh, [runId]);
    }
  },
);

behaviour(
  "GitHub's conclusion of a later attempt is recorded with that attempt",
  async (ctx) => {
    const id = await insertRunning(ctx.sql, {
      createdAgo: 30 * MIN,
      startedAgo: 29 * MIN,
      workflowRunId: 7150,
    });
    const done = githubTime(90);
    ctx.gh.script(ghRun(7150, "completed", "cancelled", done.text, 2));
    const { a, before, after } = await timedSweep(ctx);
    assert.deepEqual(a.body, failedOne(id, "cancelled", "ok"));
    const r = await row(ctx.sql, id);
    assertFailed(
      r,
      "cancelled",
      "github",
      githubText(7150, 2, "cancelled", done.ms),
      { before, after },
    );
    assert.equal(r.run_attempt, 2);
  },
);

behaviour(
  "within the grace period a completed run is unchanged (even past the start deadline), after it is failed",
  async (ctx) => {
    for (const [conclusion] of CONCLUSIONS) {
      await ctx.sql`truncate backup_history`;
      ctx.gh.reset();
      const id = await insertRunning(ctx.sql, {
        createdAgo: 5 * MIN,
        startedAgo: 4 * MIN,
        workflowRunId: 7200,
      });
      ctx.gh.script(
        ghRun(7200, "completed", conclusion, githubTime(30).text),
      );
      assert.deepEqual((await sweep(ctx)).body, nothing("ok"), conclusion);
      untouched(await row(ctx.sql, id));
      assertRunRequests(ctx.gh, [7200]);
    }

    // Never started, past the start deadline, completed moments ago: the
    // final report may still be in flight, so it is not `lost` yet...
    await ctx.sql`truncate backup_history`;
    ctx.gh.reset();
    const id = await insertRunning(ctx.sql, {
      createdAgo: 11 * MIN,
      workflowRunId: 7201,
    });
    ctx.gh.script(ghRun(7201, "completed", "failure", githubTime(20).text));
    assert.deepEqual((await sweep(ctx)).body, nothing("ok"));
    untouched(await row(ctx.sql, id));

    // ...and once the grace period has passed, GitHub's word decides.
    const done = githubTime(61);
    ctx.gh.script(ghRun(7201, "completed", "failure", done.text));
    const { a, before, after } = await timedSweep(ctx);
    assert.deepEqual(a.body, failedOne(id, "step_failed", "ok"));
    assertFailed(
      await row(ctx.sql, id),
      "step_failed",
      "github",
      githubText(7201, 1, "failure", done.ms),
      { before, after },
    );
    assertRunRequests(ctx.gh, [7201, 7201]);
  },
);

behaviour(
  "a run younger than the grace period is not looked up on GitHub",
  async (ctx) => {
    const id = await insertRunning(ctx.sql, {
      createdAgo: 20,
      startedAgo: 10,
      workflowRunId: 7300,
    });
    assert.deepEqual((await sweep(ctx)).body, nothing("skipped"));
    untouched(await row(ctx.sql, id));
    assert.equal(ctx.gh.requests.length, 0);
  },
);

behaviour(
  "a completed run of another workflow run id (a 404) changes nothing",
  async (ctx) => {
    const id = await insertRunning(ctx.sql, {
      createdAgo: 5 * MIN,
      startedAgo: 4 * MIN,
      workflowRunId: 7400,
    });
    ctx.gh.script({ status: 404, body: { message: "Not Found" } });
    assert.deepEqual((await sweep(ctx)).body, nothing("not_found"));
    ctx.gh.script(
      ghRun(7401, "completed", "failure", githubTime(5 * MIN).text),
    );
    assert.deepEqual((await sweep(ctx)).body, nothing("ok"));
    untouched(await row(ctx.sql, id));
    assertRunRequests(ctx.gh, [7400, 7400]);
  },
);

// --- GitHub unavailable and rate limits -------------------------------------------

behaviour(
  "a GitHub 500 or network error changes nothing before a deadline; the deadlines still apply",
  async (ctx) => {
    const id = await insertRunning(ctx.sql, {
      createdAgo: 5 * MIN,
      startedAgo: 4 * MIN,
      workflowRunId: 7500,
    });
    ctx.gh.script(
      { status: 500, body: { message: "Server Error" } },
      { networkError: true },
    );
    assert.deepEqual((await sweep(ctx)).body, nothing("unavailable"));
    untouched(await row(ctx.sql, id));
    assert.deepEqual((await sweep(ctx)).body, nothing("unavailable"));
    untouched(await row(ctx.sql, id));
    assertRunRequests(ctx.gh, [7500, 7500]);
    assert.equal(await backoffUntilMs(ctx.sql), null, "no backoff for a 500");

    // Past the start deadline, an outage does not keep a run alive.
    await ctx.sql`truncate backup_history`;
    const lost = await insertRunning(ctx.sql, {
      createdAgo: 11 * MIN,
      workflowRunId: 7501,
    });
    ctx.gh.script({ status: 502, body: "bad gateway" });
    const { created_ms } = await row(ctx.sql, lost);
    const { a, before, after } = await timedSweep(ctx);
    assert.deepEqual(a.body, failedOne(lost, "lost", "unavailable"));
    assertFailed(
      await row(ctx.sql, lost),
      "lost",
      "deadline",
      startText(created_ms),
      { before, after },
    );
  },
);

behaviour(
  "a 403 rate limit stores x-ratelimit-reset; until then no GitHub call, only deadlines",
  async (ctx) => {
    const id = await insertRunning(ctx.sql, {
      createdAgo: 5 * MIN,
      startedAgo: 4 * MIN,
      workflowRunId: 7600,
    });
    const reset = Math.floor(Date.now() / 1000) + 120;
    ctx.gh.script({
      status: 403,
      body: { message: "API rate limit exceeded" },
      headers: {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": String(reset),
      },
    });
    assert.deepEqual((await sweep(ctx)).body, nothing("rate_limited"));
    untouched(await row(ctx.sql, id));
    assert.equal(await backoffUntilMs(ctx.sql), reset * 1000);
    assertRunRequests(ctx.gh, [7600]);

    // The next sweeps make no request at all.
    ctx.gh.fallback = () =>
      ghRun(7600, "completed", "failure", "2020-01-01T00:00:00Z");
    for (let i = 0; i < 3; i++) {
      assert.deepEqual((await sweep(ctx)).body, nothing("rate_limited"));
    }
    untouched(await row(ctx.sql, id));
    assertRunRequests(ctx.gh, [7600]);

    // A deadline that passes during the backoff still ends the run.
    await ctx.sql`
      update backup_history
         set started_at = now() - interval '3 hours',
             created_at = now() - interval '3 hours'`;
    const { started_ms } = await row(ctx.sql, id);
    assert.ok(started_ms !== null);
    const { a, before, after } = await timedSweep(ctx);
    assert.deepEqual(a.body, failedOne(id, "timed_out", "rate_limited"));
    assertFailed(
      await row(ctx.sql, id),
      "timed_out",
      "deadline",
      runtimeText(started_ms),
      { before, after },
    );
    assertRunRequests(ctx.gh, [7600]);

    // Once the backoff has passed, GitHub is asked again.
    await ctx.sql`truncate backup_history`;
    await ctx.sql`
      update backup_settings set github_backoff_until = now() - interval '1 second'`;
    const next = await insertRunning(ctx.sql, {
      createdAgo: 5 * MIN,
      startedAgo: 4 * MIN,
      workflowRunId: 7601,
    });
    ctx.gh.reset();
    ctx.gh.script(ghRun(7601, "in_progress", null, githubTime(5).text));
    assert.deepEqual((await sweep(ctx)).body, nothing("ok"));
    untouched(await row(ctx.sql, next));
    assertRunRequests(ctx.gh, [7601]);
  },
);

behaviour(
  "a 429 with Retry-After stores now + Retry-After; the next sweep makes no GitHub call",
  async (ctx) => {
    const id = await insertRunning(ctx.sql, {
      createdAgo: 5 * MIN,
      startedAgo: 4 * MIN,
      workflowRunId: 7700,
    });
    ctx.gh.script({
      status: 429,
      body: { message: "You have exceeded a secondary rate limit" },
      headers: { "retry-after": "30" },
    });
    const { a, before, after } = await timedSweep(ctx);
    assert.deepEqual(a.body, nothing("rate_limited"));
    const until = await backoffUntilMs(ctx.sql);
    assert.ok(until !== null);
    assert.ok(
      until >= before + 30_000 - 1 && until <= after + 30_000 + 1,
      `backoff ${until} is 30 s after the sweep [${before}, ${after}]`,
    );
    assert.deepEqual((await sweep(ctx)).body, nothing("rate_limited"));
    untouched(await row(ctx.sql, id));
    assertRunRequests(ctx.gh, [7700]);

    // A 403 that is not a rate limit (a missing permission) stores nothing.
    await ctx.sql`update backup_settings set github_backoff_until = null`;
    ctx.gh.reset();
    ctx.gh.script({
      status: 403,
      body: { message: "Resource not accessible by personal access token" },
      headers: { "x-ratelimit-remaining": "4999" },
    });
    assert.deepEqual((await sweep(ctx)).body, nothing("unavailable"));
    assert.equal(await backoffUntilMs(ctx.sql), null);
    untouched(await row(ctx.sql, id));
  },
);

// --- concurrency ---------------------------------------------------------------

behaviour(
  "10 concurrent sweeps on a run past its deadline: exactly one changes it, version + 1",
  async (ctx) => {
    for (const workflowRunId of [null, 7800]) {
      await ctx.sql`truncate backup_history`;
      ctx.gh.reset();
      const id = await insertRunning(ctx.sql, {
        createdAgo: 11 * MIN,
        workflowRunId,
      });
      ctx.gh.fallback = () =>
        ghRun(7800, "queued", null, githubTime(11 * MIN).text);
      const answers = await Promise.all(
        Array.from({ length: 10 }, () => sweep(ctx)),
      );
      for (const a of answers) assert.equal(a.status, 200, a.text);
      const changed = answers.flatMap((a) => a.body.changed);
      assert.deepEqual(changed, [
        { dispatch_id: id, status: "failed", failure_reason: "lost" },
      ]);
      const r = await row(ctx.sql, id);
      assert.equal(r.status, "failed");
      assert.equal(r.failure_reason, "lost");
      assert.equal(r.outcome_source, "deadline");
      assert.equal(r.version, 1, "the version guard let exactly one write in");
    }
  },
);

behaviour(
  "the version guard under load: 16 concurrent progress reports on one run all answer 200 (3 rounds)",
  async (ctx) => {
    // The losers of the version guard re-read and decide again; a report
    // that keeps losing must not become a 500 (finalize.rs gives up after
    // MAX_RACES = 5 attempts with "too many concurrent writes").
    const id = await insertRunning(ctx.sql, {
      createdAgo: 2 * MIN,
      startedAgo: MIN,
      workflowRunId: 7850,
    });
    const statuses: number[] = [];
    let n = 0;
    for (let round = 0; round < 3; round++) {
      const answers = await Promise.all(
        Array.from({ length: 16 }, () =>
          report(ctx.stack, {
            event: "progress",
            dispatch_id: id,
            workflow_run_id: 7850,
            run_attempt: 1,
            progress: { phase: "dump", bytes: ++n },
          })),
      );
      statuses.push(...answers.map((a) => a.status));
    }
    const ok = statuses.filter((s) => s === 200).length;
    assert.equal((await row(ctx.sql, id)).version, ok, "each 200 wrote once");
    assert.deepEqual(
      statuses.filter((s) => s !== 200),
      [],
      `${statuses.length - ok} of ${statuses.length} reports were not 200`,
    );
  },
);

// --- late reports ----------------------------------------------------------------

/** Creates a run through trigger-backup (GitHub run `runId`), placed in the past. */
async function triggered(
  ctx: Ctx,
  runId: number,
  o: { createdAgo: number; startedAgo?: number },
): Promise<string> {
  ctx.gh.script(runDetails(runId));
  const t = await trigger(ctx.stack);
  assert.equal(t.status, 202, JSON.stringify(t.body));
  const id: string = t.body.dispatch_id;
  await ctx.sql`
    update backup_history
       set created_at = now() - ${o.createdAgo}::float8 * interval '1 second',
           started_at = now() - ${
    o.startedAgo ?? null
  }::float8 * interval '1 second'
     where dispatch_id = ${id}::uuid`;
  ctx.gh.reset();
  return id;
}

async function lastSuccess(sql: Sql): Promise<Json> {
  const [s] = await sql`
    select last_success_dispatch_id::text as dispatch_id,
           last_success_s3_key as s3_key,
           (floor(extract(epoch from last_success_at) * 1000)::int8)::float8
             as at_ms
      from backup_settings`;
  return s;
}

behaviour(
  "a late succeeded report turns a lost, timed_out or GitHub-failed run into success",
  async (ctx) => {
    const cases: {
      name: string;
      reason: string;
      source: string;
      setup: (ctx: Ctx, runId: number) => Promise<string>;
    }[] = [
      {
        name: "lost (start deadline)",
        reason: "lost",
        source: "deadline",
        setup: (ctx, runId) => triggered(ctx, runId, { createdAgo: 11 * MIN }),
      },
      {
        name: "timed_out (max runtime)",
        reason: "timed_out",
        source: "deadline",
        setup: (ctx, runId) =>
          triggered(ctx, runId, {
            createdAgo: 2 * HOUR + 2 * MIN,
            startedAgo: 2 * HOUR + MIN,
          }),
      },
      {
        name: "lost (GitHub says success)",
        reason: "lost",
        source: "github",
        setup: async (ctx, runId) => {
          const id = await triggered(ctx, runId, {
            createdAgo: 5 * MIN,
            startedAgo: 4 * MIN,
          });
          ctx.gh.script(
            ghRun(runId, "completed", "success", githubTime(2 * MIN).text),
          );
          return id;
        },
      },
      {
        name: "timed_out (GitHub says timed_out)",
        reason: "timed_out",
        source: "github",
        setup: async (ctx, runId) => {
          const id = await triggered(ctx, runId, {
            createdAgo: 5 * MIN,
            startedAgo: 4 * MIN,
          });
          ctx.gh.script(
            ghRun(runId, "completed", "timed_out", githubTime(2 * MIN).text),
          );
          return id;
        },
      },
    ];
    let runId = 7900;
    for (const c of cases) {
      await ctx.sql`truncate backup_history, backup_report_deliveries`;
      await ctx.sql`
        update backup_settings
           set last_success_at = null, last_success_dispatch_id = null,
               last_success_s3_key = null`;
      ctx.gh.reset();
      runId++;
      const id = await c.setup(ctx, runId);
      const s = await sweep(ctx);
      assert.deepEqual(s.body.changed, [
        { dispatch_id: id, status: "failed", failure_reason: c.reason },
      ], c.name);
      const failed = await row(ctx.sql, id);
      assert.equal(failed.outcome_source, c.source, c.name);

      const key = `backups/late-${runId}.dump`;
      const before = Date.now();
      const late = await report(ctx.stack, {
        event: "succeeded",
        dispatch_id: id,
        workflow_run_id: runId,
        run_attempt: 1,
        s3_key: key,
        size_bytes: 4096,
        sha256: SHA,
      });
      const after = Date.now();
      assert.equal(late.status, 200, `${c.name}: ${JSON.stringify(late.body)}`);
      assert.deepEqual(late.body, {
        dispatch_id: id,
        status: "success",
        changed: true,
        prune: [],
      }, c.name);
      const r = await row(ctx.sql, id);
      assert.equal(r.status, "success", c.name);
      assert.equal(r.failure_reason, null, c.name);
      assert.equal(r.outcome_source, "report", c.name);
      assert.equal(r.error_text, null, c.name);
      assert.equal(r.s3_key, key, c.name);
      assert.equal(r.version, failed.version + 1, c.name);
      assert.ok(
        r.finished_ms !== null && r.finished_ms >= before - 1 &&
          r.finished_ms <= after + 1,
        `${c.name}: finished_at is the report's time`,
      );
      assert.deepEqual(await lastSuccess(ctx.sql), {
        dispatch_id: id,
        s3_key: key,
        at_ms: r.finished_ms,
      }, c.name);
    }
  },
);

behaviour(
  "a late started report is refused on a timed_out or GitHub-decided run and reopens a deadline-lost one",
  async (ctx) => {
    const started = (id: string, runId: number) =>
      report(ctx.stack, {
        event: "started",
        dispatch_id: id,
        workflow_run_id: runId,
        run_attempt: 1,
      });

    // timed_out by the max runtime: 409.
    const timedOut = await triggered(ctx, 8001, {
      createdAgo: 3 * HOUR,
      startedAgo: 3 * HOUR - MIN,
    });
    assert.equal((await sweep(ctx)).body.changed.length, 1);
    const before = await row(ctx.sql, timedOut);
    assert.equal(before.failure_reason, "timed_out");
    const refused = await started(timedOut, 8001);
    assert.equal(refused.status, 409, JSON.stringify(refused.body));
    assert.equal(refused.body.error.code, "illegal_transition");
    assert.deepEqual(await row(ctx.sql, timedOut), before);

    // lost by GitHub's record (conclusion success, never reported): 409.
    await ctx.sql`truncate backup_history, backup_report_deliveries`;
    const byGithub = await triggered(ctx, 8002, {
      createdAgo: 5 * MIN,
      startedAgo: 4 * MIN,
    });
    ctx.gh.script(
      ghRun(8002, "completed", "success", githubTime(2 * MIN).text),
    );
    assert.equal((await sweep(ctx)).body.changed.length, 1);
    const ghRow = await row(ctx.sql, byGithub);
    assert.equal(ghRow.failure_reason, "lost");
    assert.equal(ghRow.outcome_source, "github");
    const refused2 = await started(byGithub, 8002);
    assert.equal(refused2.status, 409, JSON.stringify(refused2.body));
    assert.equal(refused2.body.error.code, "illegal_transition");
    assert.deepEqual(await row(ctx.sql, byGithub), ghRow);

    // lost by the start deadline: the run evidently exists, so it reopens.
    await ctx.sql`truncate backup_history, backup_report_deliveries`;
    const lost = await triggered(ctx, 8003, { createdAgo: 11 * MIN });
    assert.equal((await sweep(ctx)).body.changed.length, 1);
    const reopened = await started(lost, 8003);
    assert.equal(reopened.status, 200, JSON.stringify(reopened.body));
    assert.deepEqual(reopened.body, {
      dispatch_id: lost,
      status: "in_progress",
      changed: true,
    });
    const r = await row(ctx.sql, lost);
    assert.equal(r.status, "in_progress");
    assert.equal(r.failure_reason, null);
    assert.equal(r.outcome_source, null);
    assert.equal(r.finished_ms, null);
    assert.equal(r.error_text, null);
    assert.ok(r.started_ms !== null);
    // Started now: the next sweep leaves it running (GitHub agrees).
    ctx.gh.script(ghRun(8003, "in_progress", null, githubTime(5).text));
    assert.deepEqual((await sweep(ctx)).body, nothing("ok"));
    assert.equal((await row(ctx.sql, lost)).version, r.version);

    // A late `progress` reopens a deadline-lost run the same way.
    await ctx.sql`truncate backup_history, backup_report_deliveries`;
    const lost2 = await triggered(ctx, 8004, { createdAgo: 11 * MIN });
    assert.equal((await sweep(ctx)).body.changed.length, 1);
    const progress = await report(ctx.stack, {
      event: "progress",
      dispatch_id: lost2,
      workflow_run_id: 8004,
      run_attempt: 1,
      progress: { phase: "dump" },
    });
    assert.equal(progress.status, 200, JSON.stringify(progress.body));
    assert.equal(progress.body.status, "in_progress");
    const r2 = await row(ctx.sql, lost2);
    assert.equal(r2.status, "in_progress");
    assert.ok(r2.started_ms !== null);
  },
);

// --- trigger-backup and a stuck row -------------------------------------------------

behaviour(
  "trigger-backup ends a stuck run (11 minutes, never started) and starts a new backup with 202",
  async (ctx) => {
    const stuck = await insertRunning(ctx.sql, {
      createdAgo: 11 * MIN,
      workflowRunId: 8100,
    });
    const { created_ms } = await row(ctx.sql, stuck);
    ctx.gh.script(
      ghRun(8100, "queued", null, githubTime(11 * MIN).text),
      runDetails(8101),
    );
    const before = Date.now();
    const t = await trigger(ctx.stack);
    const after = Date.now();
    assert.equal(t.status, 202, JSON.stringify(t.body));
    assert.equal(t.body.status, "in_progress");
    assert.equal(t.body.workflow_run_id, 8101);
    assert.notEqual(t.body.dispatch_id, stuck);
    assertFailed(
      await row(ctx.sql, stuck),
      "lost",
      "deadline",
      startText(created_ms),
      { before, after },
    );
    const fresh = await row(ctx.sql, t.body.dispatch_id);
    assert.equal(fresh.status, "in_progress");
    assert.equal(fresh.workflow_run_id, 8101);
    assert.deepEqual(
      ctx.gh.requests.map((r) => `${r.method} ${r.path}`),
      [
        `GET ${runPath(8100)}`,
        "POST /repos/acme/app/actions/workflows/backup.yml/dispatches",
      ],
    );

    // The old run's late `started` cannot reopen it beside the new one.
    const late = await report(ctx.stack, {
      event: "started",
      dispatch_id: stuck,
      workflow_run_id: 8100,
      run_attempt: 1,
    });
    assert.equal(late.status, 409, JSON.stringify(late.body));
    assert.equal(late.body.error.code, "backup_in_progress");
    assert.equal(late.body.dispatch_id, t.body.dispatch_id);
    assert.equal((await row(ctx.sql, stuck)).status, "failed");
  },
);

behaviour(
  "trigger-backup still answers 409 for a run that is not stuck (9 minutes, GitHub queued)",
  async (ctx) => {
    const running = await insertRunning(ctx.sql, {
      createdAgo: 9 * MIN,
      workflowRunId: 8200,
    });
    ctx.gh.script(ghRun(8200, "queued", null, githubTime(9 * MIN).text));
    const t = await trigger(ctx.stack);
    assert.equal(t.status, 409, JSON.stringify(t.body));
    assert.equal(t.body.error.code, "backup_in_progress");
    assert.equal(t.body.dispatch_id, running);
    untouched(await row(ctx.sql, running));
    assert.equal(await rowCount(ctx.sql), 1);
    assertRunRequests(ctx.gh, [8200]);
  },
);

behaviour(
  "trigger-backup waits at most about 3 s for GitHub during its sweep; the deadline still applies",
  async (ctx) => {
    const stuck = await insertRunning(ctx.sql, {
      createdAgo: 11 * MIN,
      workflowRunId: 8300,
    });
    ctx.gh.script(
      {
        delayMs: 6_000,
        ...ghRun(8300, "in_progress", null, githubTime(1).text),
      },
      runDetails(8301),
    );
    const started = Date.now();
    const t = await trigger(ctx.stack);
    const took = Date.now() - started;
    assert.equal(t.status, 202, JSON.stringify(t.body));
    assert.ok(took >= 2_900 && took < 5_500, `took ${took} ms`);
    const old = await row(ctx.sql, stuck);
    assert.equal(old.status, "failed");
    assert.equal(old.failure_reason, "lost");
    assert.equal(old.outcome_source, "deadline");
  },
);

behaviour(
  "10 concurrent triggers with a stuck row: exactly one 202 and one dispatch, the rest 409",
  async (ctx) => {
    const stuck = await insertRunning(ctx.sql, { createdAgo: 11 * MIN });
    ctx.gh.script(runDetails(8400));
    ctx.gh.fallback = () => runDetails(8499);
    const answers = await Promise.all(
      Array.from({ length: 10 }, () => trigger(ctx.stack)),
    );
    const accepted = answers.filter((a) => a.status === 202);
    const refused = answers.filter((a) => a.status === 409);
    assert.equal(accepted.length, 1, JSON.stringify(answers));
    assert.equal(refused.length, 9, JSON.stringify(answers));
    for (const r of refused) {
      assert.equal(r.body.error.code, "backup_in_progress");
    }
    assert.equal(
      ctx.gh.requests.filter((r) => r.method === "POST").length,
      1,
      "one dispatch",
    );
    const old = await row(ctx.sql, stuck);
    assert.equal(old.failure_reason, "lost");
    assert.equal(old.version, 1, "the stuck row was failed once");
    assert.equal(await rowCount(ctx.sql), 2);
  },
);

behaviour(
  "every 409 of triggers racing over a stuck row names the running backup (5 rounds of 10)",
  async (ctx) => {
    // The contract: 409 backup_in_progress "plus dispatch_id of the running
    // backup". A loser whose sweep runs after the winner failed the stuck row
    // but before the winner inserted its own finds no running row, and
    // answers 409 without dispatch_id instead of retrying the insert.
    const missing: string[] = [];
    for (let round = 0; round < 5; round++) {
      await ctx.sql`truncate backup_history, backup_report_deliveries`;
      ctx.gh.reset();
      ctx.gh.fallback = () => runDetails();
      await insertRunning(ctx.sql, { createdAgo: 11 * MIN });
      const answers = await Promise.all(
        Array.from({ length: 10 }, () => trigger(ctx.stack)),
      );
      const accepted = answers.filter((a) => a.status === 202);
      assert.equal(accepted.length, 1, JSON.stringify(answers));
      for (const a of answers.filter((a) => a.status === 409)) {
        if (a.body.dispatch_id !== accepted[0].body.dispatch_id) {
          missing.push(JSON.stringify(a.body));
        }
      }
    }
    assert.deepEqual(
      missing,
      [],
      "409 answers without the running dispatch_id",
    );
  },
);

behaviour(
  "a late succeeded report for a replaced stuck run is still recorded beside the new run",
  async (ctx) => {
    const stuck = await insertRunning(ctx.sql, {
      createdAgo: 11 * MIN,
      workflowRunId: 8500,
    });
    ctx.gh.script(
      ghRun(8500, "queued", null, githubTime(11 * MIN).text),
      runDetails(8501),
    );
    const t = await trigger(ctx.stack);
    assert.equal(t.status, 202, JSON.stringify(t.body));
    const late = await report(ctx.stack, {
      event: "succeeded",
      dispatch_id: stuck,
      workflow_run_id: 8500,
      run_attempt: 1,
      s3_key: "backups/late.dump",
      sha256: SHA,
    });
    assert.equal(late.status, 200, JSON.stringify(late.body));
    assert.deepEqual(late.body, {
      dispatch_id: stuck,
      status: "success",
      changed: true,
      prune: [],
    });
    const old = await row(ctx.sql, stuck);
    assert.equal(old.status, "success");
    assert.equal(old.outcome_source, "report");
    assert.equal(
      (await row(ctx.sql, t.body.dispatch_id)).status,
      "in_progress",
    );
    assert.equal((await lastSuccess(ctx.sql)).dispatch_id, stuck);
  },
);

// --- a sweep racing the workflow's own report -------------------------------------

behaviour(
  "a sweep racing a started or succeeded report: the report's word stands either way",
  async (ctx) => {
    for (let i = 0; i < 8; i++) {
      const event = i % 2 === 0 ? "started" : "succeeded";
      await ctx.sql`truncate backup_history, backup_report_deliveries`;
      const id = await insertRunning(ctx.sql, {
        createdAgo: 11 * MIN,
        workflowRunId: 8600 + i,
      });
      ctx.gh.reset();
      ctx.gh.fallback = () =>
        ghRun(8600 + i, "queued", null, githubTime(11 * MIN).text);
      const [s, r] = await Promise.all([
        sweep(ctx),
        report(ctx.stack, {
          event,
          dispatch_id: id,
          workflow_run_id: 8600 + i,
          run_attempt: 1,
          ...(event === "succeeded" ? { s3_key: `backups/${i}.dump` } : {}),
        }),
      ]);
      assert.equal(s.status, 200, s.text);
      assert.equal(r.status, 200, `${event}: ${JSON.stringify(r.body)}`);
      const final = await row(ctx.sql, id);
      const swept = s.body.changed.length;
      assert.ok(swept <= 1);
      assert.equal(final.version, 1 + swept, `${event}, swept ${swept}`);
      assert.equal(final.failure_reason, null);
      if (event === "started") {
        assert.equal(final.status, "in_progress");
        assert.equal(final.outcome_source, null);
        assert.ok(final.started_ms !== null);
      } else {
        assert.equal(final.status, "success");
        assert.equal(final.outcome_source, "report");
      }
      assert.deepEqual(r.body, {
        dispatch_id: id,
        status: final.status,
        changed: true,
        // A success's answer lists what retention prunes: nothing here.
        ...(event === "succeeded" ? { prune: [] } : {}),
      });
    }
  },
);

behaviour(
  "GitHub's odd answers: malformed JSON, a past x-ratelimit-reset, a body over 64 KiB",
  async (ctx) => {
    const id = await insertRunning(ctx.sql, {
      createdAgo: 5 * MIN,
      startedAgo: 4 * MIN,
      workflowRunId: 8700,
    });
    ctx.gh.script({ status: 200, body: "{not json" });
    assert.deepEqual((await sweep(ctx)).body, nothing("unavailable"));
    assert.equal(await backoffUntilMs(ctx.sql), null);

    // A reset already in the past: back off a minute instead.
    ctx.gh.script({
      status: 403,
      body: { message: "API rate limit exceeded" },
      headers: {
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": String(Math.floor(Date.now() / 1000) - 10),
      },
    });
    const { a, before, after } = await timedSweep(ctx);
    assert.deepEqual(a.body, nothing("rate_limited"));
    const until = await backoffUntilMs(ctx.sql);
    assert.ok(until !== null);
    assert.ok(
      until >= before + 60_000 - 1 && until <= after + 60_000 + 1,
      `backoff ${until} is 60 s after the sweep [${before}, ${after}]`,
    );
    untouched(await row(ctx.sql, id));

    const big = await call(ctx, ctx.stack.fn("reconcile-backups"), {
      method: "POST",
      headers: { authorization: `Bearer ${SERVICE_KEY}` },
      body: " ".repeat(65537),
    });
    assertError(big, 413, "payload_too_large");
  },
);

// --- auth and method ----------------------------------------------------------------

behaviour(
  "reconcile-backups answers 401 without or with a wrong key or a replayed report signature, 405 for GET, 200 with a signed sweep request",
  async (ctx) => {
    const id = await insertRunning(ctx.sql, { createdAgo: 11 * MIN });
    const none = await sweep(ctx, {
      headers: { "content-type": "application/json" },
    });
    assertError(none, 401, "missing_token");
    for (
      const wrong of [
        "wrong",
        SERVICE_KEY.slice(0, -1) + "x",
        SERVICE_KEY + "x",
        SERVICE_KEY.slice(0, -1),
      ]
    ) {
      const a = await sweep(ctx, {
        headers: { authorization: `Bearer ${wrong}` },
      });
      assertError(a, 401, "invalid_token");
    }
    const user = await sweep(ctx, {
      headers: { authorization: `Bearer ${TEST_JWT_SECRET}` },
    });
    assertError(user, 401, "invalid_token");

    const badSig = await sweep(ctx, {
      headers: {
        ...await webhookHeaders(SIGNED_SWEEP, {
          secret: "whsec_" + btoa("another-secret-of-32-bytes-long!!"),
        }),
      },
    });
    assertError(badSig, 401, "invalid_signature");
    // A report signed for finalize-backup, replayed here, is not a sweep.
    const report = JSON.stringify({
      event: "started",
      workflow_run_id: 1,
      run_attempt: 1,
    });
    const replayed = await sweep(ctx, {
      headers: await webhookHeaders(report),
      body: report,
    });
    assertError(replayed, 401, "invalid_signature");

    const get = await sweep(ctx, { method: "GET" });
    assertError(get, 405, "method_not_allowed");
    assert.equal(get.headers.get("allow"), "POST");
    const getWithKey = await call(ctx, ctx.stack.fn("reconcile-backups"), {
      headers: { authorization: `Bearer ${SERVICE_KEY}` },
    });
    assertError(getWithKey, 405, "method_not_allowed");

    untouched(await row(ctx.sql, id));

    const signed = await sweep(ctx, {
      headers: await webhookHeaders(SIGNED_SWEEP),
      body: SIGNED_SWEEP,
    });
    assert.equal(signed.status, 200, signed.text);
    assert.deepEqual(signed.body, failedOne(id, "lost", "no_run_id"));
  },
);

behaviour(
  "reconcile-backups answers 500 config_missing naming SUPABASE_SERVICE_ROLE_KEY when it is unset",
  async (ctx) => {
    const stack = await startStack({
      databaseUrl: ctx.dbUrl,
      githubApiUrl: ctx.gh.url,
      env: { SUPABASE_SERVICE_ROLE_KEY: null },
    });
    try {
      const a = await sweep({ ...ctx, stack });
      const message = assertError(a, 500, "config_missing");
      assert.ok(message.includes("SUPABASE_SERVICE_ROLE_KEY"), message);
      // The webhook signature still works without the key.
      const signed = await sweep({ ...ctx, stack }, {
        headers: await webhookHeaders(SIGNED_SWEEP),
        body: SIGNED_SWEEP,
      });
      assert.equal(signed.status, 200, signed.text);
      assert.deepEqual(signed.body, nothing("skipped", 0));
    } finally {
      await stack.close();
    }
  },
);

// --- the candidate query's plan -----------------------------------------------------

/** Every node of an EXPLAIN (FORMAT JSON) plan. */
function planNodes(plan: Json): Json[] {
  const out: Json[] = [plan];
  for (const child of plan.Plans ?? []) out.push(...planNodes(child));
  return out;
}

behaviour(
  "the sweep's candidate query is an Index Scan on backup_history_one_in_progress with 100k history rows",
  async (ctx) => {
    // Finished history rows, without the per-row triggers (notify, last
    // success): the check constraints still apply.
    await ctx.sql.begin(async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`
        insert into backup_history
          (dispatch_id, status, failure_reason, s3_key, outcome_source,
           trigger_source, created_at, updated_at, started_at, finished_at,
           workflow_run_id)
        select gen_random_uuid(),
               case when g % 10 = 0 then 'failed' else 'success' end,
               case when g % 10 = 0 then 'step_failed' end,
               case when g % 10 <> 0 then 'backups/' || g || '.dump' end,
               'report', 'schedule',
               now() - g * interval '1 hour', now() - g * interval '1 hour',
               now() - g * interval '1 hour',
               now() - g * interval '1 hour' + interval '5 minutes',
               g
          from generate_series(1, 100000) g`;
    });
    const id = await insertRunning(ctx.sql, { createdAgo: MIN });
    await ctx.sql`analyze backup_history`;
    assert.equal(await rowCount(ctx.sql), 100_001);

    // The query the core runs (src/ports/store.rs `running`): select_run.sql
    // with the sweep's condition.
    const [{ "QUERY PLAN": plans }] = await ctx.sql.unsafe(
      `explain (analyze, buffers, format json)
       ${SELECT_RUN} where h.status = 'in_progress'`,
    );
    const plan = plans[0].Plan;
    const shown = JSON.stringify(plan);
    const nodes = planNodes(plan);
    assert.ok(
      !nodes.some((n) => n["Node Type"] === "Seq Scan"),
      `no Seq Scan: ${shown}`,
    );
    // An Index Scan, or a Bitmap Index Scan under a Bitmap Heap Scan (the
    // planner's choice for an estimate of a few rows): either way a lookup
    // in the one-row partial index, whatever the history's size.
    const lookups = nodes.filter((n) =>
      ["Index Scan", "Index Only Scan", "Bitmap Index Scan"].includes(
        n["Node Type"],
      )
    );
    assert.deepEqual(
      lookups.map((n) => n["Index Name"]),
      ["backup_history_one_in_progress"],
      shown,
    );
    assert.equal(lookups[0]["Actual Rows"], 1, shown);
    assert.equal(plan["Actual Rows"], 1, shown);
    const blocks = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"];
    assert.ok(blocks <= 4, `${blocks} blocks read: ${shown}`);

    // And the sweep itself still finds exactly that row.
    assert.deepEqual((await sweep(ctx)).body, nothing("no_run_id"));
    untouched(await row(ctx.sql, id));
  },
);

// --- the sweep's record --------------------------------------------------------

/** backup_settings' record of the last sweep (ms as the core writes it). */
async function sweepRecord(sql: Sql): Promise<Json> {
  const [r] = await sql`
    select (floor(extract(epoch from last_sweep_at) * 1000)::int8)::float8
             as at_ms,
           last_sweep_outcome as outcome
      from backup_settings`;
  return { ...r };
}

behaviour(
  "reconcile-backups records when it swept and what it did in backup_settings; trigger-backup's quick sweep does not",
  async (ctx) => {
    const never = { at_ms: null, outcome: null };
    assert.deepEqual(await sweepRecord(ctx.sql), never);

    // trigger-backup ends a stuck run with its own quick sweep before it
    // inserts the new one: that sweep is not the schedule, and is not
    // recorded.
    const stuck = await insertRunning(ctx.sql, { createdAgo: 11 * MIN });
    ctx.gh.script(runDetails(7601));
    const t = await trigger(ctx.stack);
    assert.equal(t.status, 202, JSON.stringify(t.body));
    assert.equal((await row(ctx.sql, stuck)).failure_reason, "lost");
    assert.deepEqual(await sweepRecord(ctx.sql), never);

    // A sweep of the endpoint is, with GitHub's word when nothing changed...
    const quiet = await timedSweep(ctx);
    assert.deepEqual(quiet.a.body, nothing("skipped"));
    const first = await sweepRecord(ctx.sql);
    assert.equal(first.outcome, "skipped");
    assert.ok(
      first.at_ms >= quiet.before - 1 && first.at_ms <= quiet.after + 1,
      `last_sweep_at ${first.at_ms} within [${quiet.before}, ${quiet.after}]`,
    );

    // ...and `changed` when it ended a run.
    await ctx.sql`
      update backup_history set created_at = now() - interval '11 minutes'
       where dispatch_id = ${t.body.dispatch_id}::uuid`;
    ctx.gh.script(ghRun(7601, "queued", null, githubTime(11 * MIN).text));
    const ended = await timedSweep(ctx);
    assert.deepEqual(
      ended.a.body,
      failedOne(t.body.dispatch_id, "lost", "ok"),
    );
    const second = await sweepRecord(ctx.sql);
    assert.equal(second.outcome, "changed");
    assert.ok(
      second.at_ms >= ended.before - 1 && second.at_ms <= ended.after + 1,
      `last_sweep_at ${second.at_ms} within [${ended.before}, ${ended.after}]`,
    );

    // A refused caller did not sweep.
    const refused = await sweep(ctx, {
      headers: { authorization: "Bearer not-the-key" },
    });
    assertError(refused, 401, "invalid_token");
    assert.deepEqual(await sweepRecord(ctx.sql), second);
  },
);

// --- the runner ----------------------------------------------------------------

suite.register();
