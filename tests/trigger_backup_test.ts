// POST /functions/v1/trigger-backup over HTTP: the real server process
// (scripts/serve.ts, the Rust core in WebAssembly) against a real PostgreSQL,
// with a scripted stand-in for the GitHub API. One database, one server and
// one GitHub stand-in are shared by the steps below; each step starts from
// empty tables and an empty GitHub script.

import assert from "node:assert/strict";
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
  freePort,
  type Json,
  NON_ADMIN_ID,
  report,
  type Stack,
  startStack,
  TEST_GITHUB_TOKEN,
  userToken,
} from "./support/stack.ts";
import { runDetails, type ScriptedGitHub } from "./support/github_script.ts";

const ORIGIN = "http://localhost:3000";
const DISPATCH_PATH = "/repos/acme/app/actions/workflows/backup.yml/dispatches";

interface Ctx {
  stack: Stack;
  gh: ScriptedGitHub;
  sql: Sql;
  dbUrl: string;
}

/** Every value that must never appear in a response or the log. */
const secrets = (ctx: Ctx) => stackSecrets(ctx);

/** fetch, read the body, and check that it leaks no secret. */
const call = (ctx: Ctx, url: string, init: RequestInit = {}) =>
  callChecked(ctx, url, init);

/** POST /trigger-backup as the admin (or with `token`/`headers`). */
async function post(
  ctx: Ctx,
  opts: {
    body?: string;
    token?: string | null;
    headers?: Record<string, string>;
  } = {},
): Promise<Answer> {
  const headers: Record<string, string> = {
    "content-type": "application/json",
    ...opts.headers,
  };
  const token = opts.token === undefined
    ? await userToken(ADMIN_ID)
    : opts.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  return await call(ctx, ctx.stack.fn("trigger-backup"), {
    method: "POST",
    headers,
    body: opts.body,
  });
}

/** The backup_history rows, oldest first, with times as Dates. */
async function rows(sql: Sql): Promise<Json[]> {
  return [
    ...await sql`
    select dispatch_id::text, status, failure_reason, outcome_source,
           trigger_source, triggered_by::text, reason,
           workflow_run_id::float8 as workflow_run_id, run_attempt, run_url,
           s3_key, size_bytes::float8 as size_bytes, sha256, error_text,
           progress, created_at, started_at, finished_at
      from backup_history order by id`,
  ];
}

/** A row with its times replaced by whether they are set. */
function shape(row: Json): Json {
  const { created_at, started_at, finished_at, ...rest } = row;
  return {
    ...rest,
    created_at: created_at !== null,
    started_at: started_at !== null,
    finished_at: finished_at !== null,
  };
}

const UUID_V7 =
  /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** The row trigger-backup writes for a run still in progress. */
function inProgressRow(
  dispatch_id: string,
  fields: Record<string, unknown> = {},
): Json {
  return {
    dispatch_id,
    status: "in_progress",
    failure_reason: null,
    outcome_source: null,
    trigger_source: "manual",
    triggered_by: ADMIN_ID,
    reason: null,
    workflow_run_id: null,
    run_attempt: 1,
    run_url: null,
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

/** Marks every running backup as finished, so another may start. */
async function finishAll(sql: Sql): Promise<void> {
  await sql`
    update backup_history
       set status = 'success', s3_key = 'backups/done.dump',
           outcome_source = 'report', finished_at = now()
     where status = 'in_progress'`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const suite = serverSuite<Ctx>("trigger-backup over HTTP against PostgreSQL", {
  context: (base) => base,
  logSecrets: { endpoint: "trigger-backup", values: secrets },
});
const behaviour = suite.behaviour;

// --- success -------------------------------------------------------------------

behaviour(
  "trigger-backup returns 202, stores the run and dispatches the workflow as the contract says",
  async (ctx) => {
    ctx.gh.script(runDetails(424242));
    const before = Date.now();
    const a = await post(ctx, {
      body: JSON.stringify({ reason: "pre-deploy" }),
    });
    const after = Date.now();
    assert.equal(a.status, 202, a.text);
    assert.match(a.body.dispatch_id, UUID_V7);
    assert.deepEqual(a.body, {
      dispatch_id: a.body.dispatch_id,
      status: "in_progress",
      workflow_run_id: 424242,
      run_url: "https://github.com/acme/app/actions/runs/424242",
    });
    assert.match(a.headers.get("content-type") ?? "", /^application\/json/);

    assert.equal(ctx.gh.requests.length, 1);
    const [d] = ctx.gh.requests;
    assert.equal(d.method, "POST");
    assert.equal(d.path, DISPATCH_PATH);
    assert.equal(d.headers["authorization"], `Bearer ${TEST_GITHUB_TOKEN}`);
    assert.equal(d.headers["accept"], "application/vnd.github+json");
    assert.equal(d.headers["x-github-api-version"], "2022-11-28");
    assert.deepEqual(JSON.parse(d.body), {
      ref: "main",
      inputs: { dispatch_id: a.body.dispatch_id },
      return_run_details: true,
    });

    const all = await rows(ctx.sql);
    assert.deepEqual(all.map(shape), [
      inProgressRow(a.body.dispatch_id, {
        reason: "pre-deploy",
        workflow_run_id: 424242,
        run_url: "https://github.com/acme/app/actions/runs/424242",
      }),
    ]);
    const created = all[0].created_at.getTime();
    assert.ok(
      created >= before - 1000 && created <= after + 1000,
      "created_at is the time of the request",
    );
  },
);

behaviour(
  "trigger-backup returns 202 with null workflow_run_id and run_url when GitHub answers 204",
  async (ctx) => {
    ctx.gh.script({ status: 204 });
    const a = await post(ctx);
    assert.equal(a.status, 202, a.text);
    assert.deepEqual(a.body, {
      dispatch_id: a.body.dispatch_id,
      status: "in_progress",
      workflow_run_id: null,
      run_url: null,
    });
    assert.equal(ctx.gh.requests.length, 1);
    assert.deepEqual((await rows(ctx.sql)).map(shape), [
      inProgressRow(a.body.dispatch_id),
    ]);
  },
);

behaviour(
  "trigger-backup accepts an empty body, {} and a reason of exactly 500 characters",
  async (ctx) => {
    const reason = "r".repeat(500);
    const ids: string[] = [];
    for (const body of [undefined, "", "{}", JSON.stringify({ reason })]) {
      const a = await post(ctx, { body });
      assert.equal(a.status, 202, `${body}: ${a.text}`);
      ids.push(a.body.dispatch_id);
      await finishAll(ctx.sql);
    }
    const all = await rows(ctx.sql);
    assert.deepEqual(
      all.map((r) => [r.dispatch_id, r.reason]),
      [[ids[0], null], [ids[1], null], [ids[2], null], [ids[3], reason]],
    );
  },
);

behaviour(
  "trigger-backup issues UUIDv7 dispatch ids that sort by time",
  async (ctx) => {
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const before = Date.now();
      const a = await post(ctx);
      assert.equal(a.status, 202, a.text);
      const id: string = a.body.dispatch_id;
      assert.match(id, UUID_V7);
      // The first 48 bits are the unix time in milliseconds.
      const ms = parseInt(id.replaceAll("-", "").slice(0, 12), 16);
      assert.ok(
        Math.abs(ms - before) < 5000,
        `timestamp ${ms} vs ${before}`,
      );
      ids.push(id);
      await finishAll(ctx.sql);
      await sleep(3);
    }
    assert.deepEqual([...ids].sort(), ids, "later ids sort after earlier ones");
    assert.equal(new Set(ids).size, ids.length);
    const stored = (await rows(ctx.sql)).map((r) => r.dispatch_id);
    assert.deepEqual(stored, ids);
  },
);

// --- one backup at a time ------------------------------------------------------

behaviour(
  "trigger-backup returns 409 with the running dispatch_id while a backup runs",
  async (ctx) => {
    const first = await post(ctx);
    assert.equal(first.status, 202, first.text);
    const second = await post(ctx, {
      body: JSON.stringify({ reason: "again" }),
    });
    assertError(second, 409, "backup_in_progress", {
      dispatch_id: first.body.dispatch_id,
    });
    assert.equal(ctx.gh.requests.length, 1, "only the first was dispatched");
    const all = await rows(ctx.sql);
    assert.equal(all.length, 1);
    assert.equal(all[0].dispatch_id, first.body.dispatch_id);
    assert.equal(all[0].reason, null);
  },
);

behaviour(
  "trigger-backup accepts exactly one of 20 concurrent triggers and dispatches once",
  async (ctx) => {
    ctx.gh.fallback = () => ({ ...runDetails(), delayMs: 150 });
    const token = await userToken(ADMIN_ID);
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => post(ctx, { token })),
    );
    const accepted = answers.filter((a) => a.status === 202);
    const refused = answers.filter((a) => a.status === 409);
    assert.equal(
      accepted.length,
      1,
      answers.map((a) => `${a.status} ${a.text}`).join("\n"),
    );
    assert.equal(refused.length, 19);
    const id = accepted[0].body.dispatch_id;
    for (const a of refused) {
      assertError(a, 409, "backup_in_progress", { dispatch_id: id });
    }
    assert.equal(ctx.gh.requests.length, 1);
    assert.equal(JSON.parse(ctx.gh.requests[0].body).inputs.dispatch_id, id);
    const all = await rows(ctx.sql);
    assert.deepEqual(all.map((r) => [r.dispatch_id, r.status]), [
      [id, "in_progress"],
    ]);
  },
);

// --- authentication and authorization ------------------------------------------

behaviour(
  "trigger-backup refuses a request without a bearer token with 401 missing_token",
  async (ctx) => {
    const cases: Record<string, string>[] = [
      {},
      { authorization: `Basic ${btoa("admin:secret")}` },
      { authorization: "Bearer" },
      { authorization: await userToken(ADMIN_ID) },
    ];
    for (const headers of cases) {
      const a = await post(ctx, { token: null, headers });
      assertError(a, 401, "missing_token");
    }
    assert.deepEqual(await rows(ctx.sql), []);
    assert.equal(ctx.gh.requests.length, 0);
  },
);

behaviour(
  "trigger-backup refuses bad, expired, anon, non-uuid and alg-none tokens with 401 invalid_token",
  async (ctx) => {
    const b64url = (v: unknown) =>
      btoa(JSON.stringify(v)).replaceAll("+", "-").replaceAll("/", "_")
        .replace(/=+$/, "");
    const claims = {
      sub: ADMIN_ID,
      role: "authenticated",
      aud: "authenticated",
      exp: Math.floor(Date.now() / 1000) + 3600,
    };
    const tokens: Record<string, string> = {
      "bad signature": await userToken(
        ADMIN_ID,
        {},
        "another-secret-that-is-at-least-32-characters",
      ),
      "expired": await userToken(ADMIN_ID, {
        exp: Math.floor(Date.now() / 1000) - 3600,
      }),
      "role anon": await userToken(ADMIN_ID, { role: "anon" }),
      "sub not a uuid": await userToken("admin"),
      "alg none": `${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims)}.`,
      "not a jwt": "not-a-jwt",
    };
    for (const [what, token] of Object.entries(tokens)) {
      const a = await post(ctx, { token });
      assert.equal(a.status, 401, `${what}: ${a.text}`);
      assertError(a, 401, "invalid_token");
    }
    assert.deepEqual(await rows(ctx.sql), []);
    assert.equal(ctx.gh.requests.length, 0);
  },
);

behaviour(
  "trigger-backup refuses a signed-in user who is not an admin with 403 not_admin",
  async (ctx) => {
    const a = await post(ctx, { token: await userToken(NON_ADMIN_ID) });
    assertError(a, 403, "not_admin");
    assert.deepEqual(await rows(ctx.sql), []);
    assert.equal(ctx.gh.requests.length, 0);
  },
);

// --- the body ------------------------------------------------------------------

behaviour(
  "trigger-backup refuses a body that is not a JSON object with 400 invalid_body",
  async (ctx) => {
    for (const body of ["not json", "[1]", '"reason"', "42", "null", "{"]) {
      const a = await post(ctx, { body });
      assert.equal(a.status, 400, `${body}: ${a.text}`);
      assertError(a, 400, "invalid_body");
    }
    assert.deepEqual(await rows(ctx.sql), []);
    assert.equal(ctx.gh.requests.length, 0);
  },
);

behaviour(
  "trigger-backup refuses a bad reason or an unknown field with 400 invalid_field naming it",
  async (ctx) => {
    const cases: [unknown, string][] = [
      [{ reason: 5 }, "reason"],
      [{ reason: ["x"] }, "reason"],
      [{ reason: "r".repeat(501) }, "reason"],
      [{ reasn: "typo" }, "reasn"],
      [{ reason: "ok", dispatch_id: crypto.randomUUID() }, "dispatch_id"],
    ];
    for (const [body, field] of cases) {
      const a = await post(ctx, { body: JSON.stringify(body) });
      const message = assertError(a, 400, "invalid_field");
      assert.ok(
        message.startsWith(field),
        `${JSON.stringify(body)}: ${message}`,
      );
    }
    assert.deepEqual(await rows(ctx.sql), []);
    assert.equal(ctx.gh.requests.length, 0);
  },
);

behaviour(
  "trigger-backup refuses a body over 65536 bytes with 413 and accepts one of exactly 65536",
  async (ctx) => {
    const json = JSON.stringify({ reason: "big" });
    const over = json + " ".repeat(65537 - json.length);
    assert.equal(new TextEncoder().encode(over).length, 65537);
    assertError(await post(ctx, { body: over }), 413, "payload_too_large");
    assert.deepEqual(await rows(ctx.sql), []);

    const huge = json + " ".repeat(1024 * 1024);
    assertError(await post(ctx, { body: huge }), 413, "payload_too_large");
    assert.deepEqual(await rows(ctx.sql), []);
    assert.equal(ctx.gh.requests.length, 0);

    const exact = json + " ".repeat(65536 - json.length);
    const a = await post(ctx, { body: exact });
    assert.equal(a.status, 202, a.text);
    assert.equal((await rows(ctx.sql))[0].reason, "big");
  },
);

behaviour(
  "trigger-backup answers GET, PUT and DELETE with 405 method_not_allowed and an allow header",
  async (ctx) => {
    for (const method of ["GET", "PUT", "DELETE"]) {
      const a = await call(ctx, ctx.stack.fn("trigger-backup"), {
        method,
        headers: { authorization: `Bearer ${await userToken(ADMIN_ID)}` },
      });
      assertError(a, 405, "method_not_allowed");
      const allow = a.headers.get("allow") ?? "";
      assert.ok(/\bPOST\b/.test(allow), `${method}: allow = ${allow}`);
    }
    assert.deepEqual(await rows(ctx.sql), []);
  },
);

// --- GitHub refusing or failing --------------------------------------------------

behaviour(
  "trigger-backup returns 502 dispatch_failed without retrying when GitHub answers 422, and fails the row",
  async (ctx) => {
    const message = "Workflow does not have 'workflow_dispatch' trigger";
    ctx.gh.script({ status: 422, body: { message } });
    const a = await post(ctx, { body: JSON.stringify({ reason: "try" }) });
    assert.match(a.body?.dispatch_id ?? "", UUID_V7, a.text);
    assertError(a, 502, "dispatch_failed", {
      dispatch_id: a.body.dispatch_id,
    });
    assert.ok(!a.text.includes(message), "GitHub's answer stays server-side");
    assert.equal(ctx.gh.requests.length, 1, "a 4xx is not retried");
    assert.deepEqual((await rows(ctx.sql)).map(shape), [
      inProgressRow(a.body.dispatch_id, {
        status: "failed",
        failure_reason: "dispatch_failed",
        outcome_source: "dispatch",
        reason: "try",
        error_text:
          `GitHub did not accept the workflow dispatch: HTTP 422: ${message}`,
        finished_at: true,
      }),
    ]);

    // The failed run does not block the next one.
    const next = await post(ctx);
    assert.equal(next.status, 202, next.text);
  },
);

behaviour(
  "trigger-backup does not retry 401, 403 or 404 from GitHub",
  async (ctx) => {
    for (const status of [401, 403, 404]) {
      ctx.gh.reset();
      ctx.gh.script({ status, body: { message: `nope ${status}` } });
      const a = await post(ctx);
      assertError(a, 502, "dispatch_failed", {
        dispatch_id: a.body?.dispatch_id,
      });
      assert.equal(ctx.gh.requests.length, 1, `${status} is not retried`);
      const [row] = (await rows(ctx.sql)).filter((r) =>
        r.dispatch_id === a.body.dispatch_id
      );
      assert.equal(
        row.error_text,
        `GitHub did not accept the workflow dispatch: HTTP ${status}: nope ${status}`,
      );
    }
  },
);

behaviour(
  "trigger-backup retries a 503 three times with backoff, then returns 502 and fails the row",
  async (ctx) => {
    ctx.gh.fallback = () => ({
      status: 503,
      body: { message: "Service unavailable" },
    });
    const a = await post(ctx);
    assertError(a, 502, "dispatch_failed", {
      dispatch_id: a.body?.dispatch_id,
    });
    const at = ctx.gh.requests.map((r) => r.at);
    assert.equal(at.length, 3, "three attempts");
    assert.ok(at[1] - at[0] >= 200, `first backoff ${at[1] - at[0]} ms`);
    assert.ok(at[2] - at[1] >= 900, `second backoff ${at[2] - at[1]} ms`);
    for (const r of ctx.gh.requests) {
      assert.equal(
        JSON.parse(r.body).inputs.dispatch_id,
        a.body.dispatch_id,
        "every attempt dispatches the same id",
      );
    }
    const [row] = await rows(ctx.sql);
    assert.deepEqual(
      shape({ ...row, error_text: null }),
      inProgressRow(a.body.dispatch_id, {
        status: "failed",
        failure_reason: "dispatch_failed",
        outcome_source: "dispatch",
        finished_at: true,
      }),
    );
    assert.ok(
      row.error_text.startsWith("GitHub did not accept the workflow dispatch:"),
      row.error_text,
    );
    assert.ok(row.error_text.includes("HTTP 503"), row.error_text);
    assert.ok(row.error_text.includes("after 3 attempts"), row.error_text);
  },
);

behaviour(
  "trigger-backup retries 429s, and gives up after 3 attempts",
  async (ctx) => {
    ctx.gh.script(
      { status: 429, body: { message: "slow down" } },
      { status: 429, body: { message: "slow down" } },
      { status: 429, body: { message: "slow down" } },
    );
    const a = await post(ctx);
    assertError(a, 502, "dispatch_failed", {
      dispatch_id: a.body?.dispatch_id,
    });
    assert.equal(ctx.gh.requests.length, 3);
    const [row] = await rows(ctx.sql);
    assert.equal(row.status, "failed");
    assert.equal(row.failure_reason, "dispatch_failed");
    assert.equal(row.outcome_source, "dispatch");
    assert.ok(row.finished_at instanceof Date);
    assert.ok(row.error_text.includes("after 3 attempts"), row.error_text);
  },
);

behaviour(
  "trigger-backup succeeds with 202 when a 5xx is followed by a 200",
  async (ctx) => {
    ctx.gh.script({ status: 502, body: "bad gateway" }, runDetails(5151));
    const a = await post(ctx);
    assert.equal(a.status, 202, a.text);
    assert.deepEqual(a.body, {
      dispatch_id: a.body.dispatch_id,
      status: "in_progress",
      workflow_run_id: 5151,
      run_url: "https://github.com/acme/app/actions/runs/5151",
    });
    assert.equal(ctx.gh.requests.length, 2);
    assert.deepEqual((await rows(ctx.sql)).map(shape), [
      inProgressRow(a.body.dispatch_id, {
        workflow_run_id: 5151,
        run_url: "https://github.com/acme/app/actions/runs/5151",
      }),
    ]);
  },
);

behaviour(
  "trigger-backup does not send again a dispatch whose answer was lost, as GitHub may have started the run: 502, and the run's first report reopens the row",
  async (ctx) => {
    // GitHub reads the request, then the connection drops unanswered.
    ctx.gh.script({ networkError: true }, runDetails(6161));
    const a = await post(ctx);
    assertError(a, 502, "dispatch_failed", {
      dispatch_id: a.body?.dispatch_id,
    });
    assert.equal(ctx.gh.requests.length, 1, "one dispatch, not a second run");
    const [row] = await rows(ctx.sql);
    assert.equal(row.failure_reason, "dispatch_failed");
    assert.ok(
      row.error_text.endsWith(
        "(not sent again: if GitHub started the run after all, its first report reopens this one)",
      ),
      row.error_text,
    );
    // It had: the run reports its start.
    const started = await report(ctx.stack, {
      event: "started",
      dispatch_id: a.body.dispatch_id,
      workflow_run_id: 6161,
      run_attempt: 1,
    });
    assert.equal(started.status, 200, JSON.stringify(started.body));
    assert.deepEqual(
      { status: started.body.status, changed: started.body.changed },
      { status: "in_progress", changed: true },
    );
  },
);

behaviour(
  "trigger-backup honours Retry-After on a 429 before retrying",
  async (ctx) => {
    ctx.gh.script(
      { status: 429, headers: { "retry-after": "2" }, body: { message: "x" } },
      runDetails(7171),
    );
    const a = await post(ctx);
    assert.equal(a.status, 202, a.text);
    assert.equal(a.body.workflow_run_id, 7171);
    const at = ctx.gh.requests.map((r) => r.at);
    assert.equal(at.length, 2);
    assert.ok(at[1] - at[0] >= 1900, `waited ${at[1] - at[0]} ms, not 2 s`);
  },
);

behaviour(
  "trigger-backup does not wait longer than 5 s for a Retry-After",
  async (ctx) => {
    ctx.gh.fallback = () => ({
      status: 429,
      headers: { "retry-after": "60" },
      body: { message: "rate limited" },
    });
    const started = Date.now();
    const a = await post(ctx);
    const took = Date.now() - started;
    assertError(a, 502, "dispatch_failed", {
      dispatch_id: a.body?.dispatch_id,
    });
    assert.ok(took < 6000, `the request took ${took} ms`);
    const [row] = await rows(ctx.sql);
    assert.equal(row.status, "failed");
    assert.equal(row.failure_reason, "dispatch_failed");
  },
);

// --- configuration and the database ------------------------------------------------

behaviour(
  "trigger-backup returns 500 config_missing naming GITHUB_TOKEN and writes no row when it is unset",
  async (ctx) => {
    const stack = await startStack({
      databaseUrl: ctx.dbUrl,
      githubApiUrl: ctx.gh.url,
      env: { GITHUB_TOKEN: null },
    });
    try {
      const a = await post({ ...ctx, stack });
      const message = assertError(a, 500, "config_missing");
      assert.ok(message.includes("GITHUB_TOKEN"), message);
    } finally {
      await stack.close();
    }
    assert.deepEqual(await rows(ctx.sql), []);
    assert.equal(ctx.gh.requests.length, 0);
  },
);

behaviour(
  "trigger-backup returns 503 database_unavailable when the database cannot be reached",
  async (ctx) => {
    const closed =
      `postgres://postgres:db-password-never-shown@127.0.0.1:${freePort()}/backups`;
    const stack = await startStack({
      databaseUrl: closed,
      githubApiUrl: ctx.gh.url,
    });
    try {
      const a = await post({ ...ctx, stack });
      assertError(a, 503, "database_unavailable");
      assert.ok(!a.text.includes("db-password-never-shown"), a.text);
      assert.ok(!a.text.includes(closed), a.text);
    } finally {
      await stack.close();
    }
    assert.equal(ctx.gh.requests.length, 0);
  },
);

// --- CORS ----------------------------------------------------------------------------

behaviour(
  "trigger-backup answers a preflight from an allowed origin with 204 and CORS headers",
  async (ctx) => {
    const a = await call(ctx, ctx.stack.fn("trigger-backup"), {
      method: "OPTIONS",
      headers: {
        origin: ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
      },
    });
    assert.equal(a.status, 204, a.text);
    assert.equal(a.text, "");
    assert.equal(a.headers.get("access-control-allow-origin"), ORIGIN);
    const methods = a.headers.get("access-control-allow-methods") ?? "";
    assert.ok(/\bPOST\b/.test(methods), methods);
    const allowed = (a.headers.get("access-control-allow-headers") ?? "")
      .toLowerCase();
    assert.ok(allowed.includes("authorization"), allowed);
    assert.ok(allowed.includes("content-type"), allowed);
    assert.deepEqual(await rows(ctx.sql), []);
  },
);

behaviour(
  "trigger-backup refuses a preflight from another origin with 403 origin_not_allowed",
  async (ctx) => {
    for (
      const origin of ["https://evil.example.com", "http://localhost:3001"]
    ) {
      const a = await call(ctx, ctx.stack.fn("trigger-backup"), {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": "POST" },
      });
      assertError(a, 403, "origin_not_allowed");
      assert.equal(a.headers.get("access-control-allow-origin"), null);
    }
  },
);

behaviour(
  "trigger-backup adds CORS headers to actual responses for the allowed origin only",
  async (ctx) => {
    const denied = await post(ctx, {
      token: null,
      headers: { origin: ORIGIN },
    });
    assertError(denied, 401, "missing_token");
    assert.equal(denied.headers.get("access-control-allow-origin"), ORIGIN);

    const evil = await post(ctx, {
      token: null,
      headers: { origin: "https://evil.example.com" },
    });
    assertError(evil, 401, "missing_token");
    assert.equal(evil.headers.get("access-control-allow-origin"), null);

    const noOrigin = await post(ctx, { token: null });
    assert.equal(noOrigin.headers.get("access-control-allow-origin"), null);

    const ok = await post(ctx, { headers: { origin: ORIGIN } });
    assert.equal(ok.status, 202, ok.text);
    assert.equal(ok.headers.get("access-control-allow-origin"), ORIGIN);

    const busy = await post(ctx, { headers: { origin: ORIGIN } });
    assertError(busy, 409, "backup_in_progress", {
      dispatch_id: ok.body.dispatch_id,
    });
    assert.equal(busy.headers.get("access-control-allow-origin"), ORIGIN);
  },
);

// --- the runner ------------------------------------------------------------------------

suite.register();
