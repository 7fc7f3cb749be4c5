// Alerts through the transactional outbox (issue 13), over HTTP against the
// real server process (scripts/serve.ts, the Rust core in WebAssembly), a
// real PostgreSQL and a loopback receiver standing in for Slack and for a
// signed JSON webhook.
//
// As in reconcile_test.ts there is no clock hook: the "clock" is the data.
// Retries are made due by moving next_attempt_at, a lease is expired by
// moving claimed_until, a day of failures by moving created_at, and a
// silence by moving backup_settings.last_success_at into the past.

import assert from "node:assert/strict";
// The official Standard Webhooks library: a json alert must verify with it.
// deno-lint-ignore no-import-prefix
import { Webhook } from "npm:standardwebhooks@1.1.1";
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
  freePort,
  type Json,
  NON_ADMIN_ID,
  report,
  type Stack,
  startStack,
  userToken,
} from "./support/stack.ts";

const SERVICE_KEY = "service-role-key-for-the-alert-tests-0123456789";
const ALERT_SECRET = "whsec_" + btoa("alert-receiver-secret-32-bytes!!");
const SHA = "0123456789abcdef".repeat(4);
const SLACK = "BACKUP_ALERT_WEBHOOK_URL";
const JSON_HOOK = "BACKUP_ALERT_WEBHOOK_URL_2";

// --- the loopback receiver ----------------------------------------------------

/** One request the receiver got. */
interface Received {
  path: string;
  headers: Headers;
  body: string;
}

/** What the receiver answers next on a path: a status, or no answer yet. */
type Script = number | "hang";

interface Receiver {
  port: number;
  /** `http://127.0.0.1:PORT/slack/<token>`: a Slack URL is a secret. */
  slackUrl: string;
  jsonUrl: string;
  received: Received[];
  /** Queues answers for a path ("slack" or "json"); 200 once they run out. */
  script(path: "slack" | "json", ...answers: Script[]): void;
  /** Resolves when `n` requests have arrived in all. */
  waitFor(n: number): Promise<void>;
  reset(): void;
  close(): Promise<void>;
}

function startReceiver(): Receiver {
  const port = freePort();
  const received: Received[] = [];
  const scripts: Record<string, Script[]> = { slack: [], json: [] };
  const hung: (() => void)[] = [];
  const waiters: [number, () => void][] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port, onListen() {} },
    async (req) => {
      const path = new URL(req.url).pathname.split("/")[1];
      received.push({ path, headers: req.headers, body: await req.text() });
      for (const [n, resolve] of waiters) if (received.length >= n) resolve();
      const next = scripts[path]?.shift() ?? 200;
      if (next === "hang") {
        await new Promise<void>((resolve) => hung.push(resolve));
        return new Response("too late", { status: 200 });
      }
      if (next >= 300 && next < 400) {
        // A redirect to the same path with a slash: what a receiver that
        // moved, or one that upgrades to https, answers.
        return new Response(null, {
          status: next,
          headers: { location: `/${path}/moved/` },
        });
      }
      return new Response(next < 300 ? "ok" : "unavailable", { status: next });
    },
  );
  const base = `http://127.0.0.1:${port}`;
  return {
    port,
    slackUrl: `${base}/slack/T0000/B0000/slack-url-token-is-a-secret`,
    jsonUrl: `${base}/json/hook`,
    received,
    script(path, ...answers) {
      scripts[path].push(...answers);
    },
    waitFor(n) {
      if (received.length >= n) return Promise.resolve();
      return new Promise((resolve) => waiters.push([n, resolve]));
    },
    reset() {
      received.length = 0;
      scripts.slack = [];
      scripts.json = [];
      waiters.length = 0;
    },
    async close() {
      for (const release of hung.splice(0)) release();
      await server.shutdown();
    },
  };
}

const receiver = startReceiver();

/** The stack's alert settings: Slack (the default format) and signed JSON. */
function alertEnv(): Record<string, string> {
  return {
    SUPABASE_SERVICE_ROLE_KEY: SERVICE_KEY,
    [SLACK]: receiver.slackUrl,
    [JSON_HOOK]: receiver.jsonUrl,
    BACKUP_ALERT_FORMAT_2: "json",
    BACKUP_ALERT_WEBHOOK_SECRET_2: ALERT_SECRET,
  };
}

/** What no answer, row or log line may show. */
const ALERT_SECRETS = [
  receiver.slackUrl,
  "slack-url-token-is-a-secret",
  ALERT_SECRET,
  ALERT_SECRET.slice("whsec_".length),
];

interface Ctx {
  stack: Stack;
  sql: Sql;
  dbUrl: string;
}

const suite = serverSuite<Ctx>("alerts through the outbox, over HTTP", {
  env: alertEnv(),
  context: async (base) => {
    await base.sql`truncate backup_notifications`;
    return { stack: base.stack, sql: base.sql, dbUrl: base.dbUrl };
  },
  logSecrets: {
    endpoint: "the alert sender",
    values: (base) => stackSecrets(base, SERVICE_KEY, ...ALERT_SECRETS),
  },
  after: () => void receiver.close(),
});
const behaviour = (name: string, fn: (ctx: Ctx) => Promise<void>) =>
  suite.behaviour(name, async (ctx) => {
    await ctx.sql`truncate backup_notifications`;
    await ctx.sql`
      update backup_alert_state
         set open_event = null, silence_from = null, since = now()`;
    await ctx.sql`update backup_settings set alert_after_hours = default`;
    receiver.reset();
    await fn(ctx);
  });

// --- helpers ------------------------------------------------------------------

const call = (ctx: Ctx, url: string, init: RequestInit = {}) =>
  callChecked(ctx, url, init, SERVICE_KEY, ...ALERT_SECRETS);

function sweep(ctx: Ctx, stack = ctx.stack): Promise<Answer> {
  return call(ctx, stack.fn("reconcile-backups"), {
    method: "POST",
    headers: {
      authorization: `Bearer ${SERVICE_KEY}`,
      "content-type": "application/json",
    },
    body: "{}",
  });
}

let workflowRunIds = 7000;

/** A run in progress that has started, as the workflow's report left it. */
async function running(
  ctx: Ctx,
): Promise<{ dispatch_id: string; workflow_run_id: number }> {
  const workflow_run_id = ++workflowRunIds;
  const { dispatch_id } = await insertRun(ctx.sql, {
    workflow_run_id,
    run_url: `https://github.com/acme/app/actions/runs/${workflow_run_id}`,
  }, { createdAgo: 120, startedAgo: 100 });
  return { dispatch_id, workflow_run_id };
}

type Run = { dispatch_id: string; workflow_run_id: number };

function failed(run: Run, error_text = "pg_dump: error: connection refused") {
  return { event: "failed", ...run, run_attempt: 1, error_text };
}

function succeeded(run: Run, verification?: Json) {
  return {
    event: "succeeded",
    ...run,
    run_attempt: 1,
    s3_key: `prod/20261130T000000Z_${run.dispatch_id}.dump`,
    size_bytes: 2048,
    sha256: SHA,
    ...(verification ? { verification } : {}),
  };
}

interface Note {
  id: string;
  event: string;
  dispatch_id: string | null;
  destination: string;
  status: string;
  attempts: number;
  webhook_id: string;
  last_error: string | null;
  leased: boolean;
  payload: Json;
}

async function notes(sql: Sql): Promise<Note[]> {
  return await sql<Note[]>`
    select id::text, event, dispatch_id::text, destination, status, attempts,
           webhook_id, last_error, coalesce(claimed_until > now(), false) as leased,
           payload
      from backup_notifications n order by n.id`;
}

/** (event, destination, status) of every row, oldest first. */
async function states(sql: Sql): Promise<string[][]> {
  return (await notes(sql)).map((n) => [n.event, n.destination, n.status]);
}

/** Makes every pending row due now. */
async function due(sql: Sql): Promise<void> {
  await sql`
    update backup_notifications set next_attempt_at = now() - interval '1 second'
     where status = 'pending'`;
}

const webhook = new Webhook(ALERT_SECRET);

/** Verifies a JSON delivery with the standardwebhooks library; its body. */
function verified(r: Received): Json {
  const headers = Object.fromEntries(
    ["webhook-id", "webhook-timestamp", "webhook-signature"].map((
      h,
    ) => [h, r.headers.get(h) ?? ""]),
  );
  return webhook.verify(r.body, headers);
}

/**
 * Slack's incoming webhook takes a JSON object whose `text` (a string, the
 * message, with `&`, `<` and `>` escaped) is required when no `blocks` are
 * sent: https://docs.slack.dev/messaging/sending-messages-using-incoming-webhooks
 */
function slackText(r: Received): string {
  assert.equal(r.headers.get("content-type"), "application/json");
  const body = JSON.parse(r.body);
  assert.deepEqual(Object.keys(body), ["text"]);
  assert.equal(typeof body.text, "string");
  assert.ok(body.text.length > 0);
  assert.doesNotMatch(body.text, /<(?![@#!]|https?:)/, "no stray markup");
  return body.text;
}

const byPath = (path: string) =>
  receiver.received.filter((r) => r.path === path);

// --- the events ---------------------------------------------------------------

behaviour(
  "a failed run raises one alert per destination, sent right away: Slack's text shape and a json body that standardwebhooks verifies",
  async (ctx) => {
    const run = await running(ctx);
    const r = await report(
      ctx.stack,
      failed(run, "pg_dump: role <backup> & friends denied"),
    );
    assert.equal(r.status, 200);
    assert.deepEqual(await states(ctx.sql), [
      ["failed", SLACK, "delivered"],
      ["failed", JSON_HOOK, "delivered"],
    ]);
    const [slack] = byPath("slack");
    assert.equal(
      slackText(slack),
      `:red_circle: Backup failed (step_failed), run ${run.dispatch_id}\n` +
        "Error: pg_dump: role &lt;backup&gt; &amp; friends denied\n" +
        `Run: https://github.com/acme/app/actions/runs/${run.workflow_run_id}\n` +
        "Last good backup: none recorded",
    );
    const [json] = byPath("json");
    const body = verified(json);
    const rows = await notes(ctx.sql);
    assert.equal(json.headers.get("webhook-id"), rows[1].webhook_id);
    assert.equal(slack.headers.get("webhook-id"), rows[0].webhook_id);
    assert.notEqual(rows[0].webhook_id, rows[1].webhook_id);
    assert.equal(body.type, "backup.failed");
    assert.equal(body.data.event, "failed");
    assert.equal(body.data.last_success, null);
    assert.deepEqual(
      {
        dispatch_id: body.data.run.dispatch_id,
        status: body.data.run.status,
        failure_reason: body.data.run.failure_reason,
        workflow_run_id: body.data.run.workflow_run_id,
      },
      {
        dispatch_id: run.dispatch_id,
        status: "failed",
        failure_reason: "step_failed",
        workflow_run_id: run.workflow_run_id,
      },
    );
    // A tampered body is refused by the library.
    assert.throws(() =>
      verified({ ...json, body: json.body.replace("failed", "frailed") })
    );
  },
);

behaviour(
  "concurrent duplicate reports raise each event exactly once: ten failed reports, then ten successes of a re-run (one recovery)",
  async (ctx) => {
    const run = await running(ctx);
    const answers = await Promise.all(
      Array.from(
        { length: 10 },
        (_, i) => report(ctx.stack, failed(run), { id: `dup-failed-${i}` }),
      ),
    );
    assert.deepEqual(answers.map((a) => a.status), Array(10).fill(200));
    assert.deepEqual(
      answers.filter((a) => a.body.changed).length,
      1,
      "one report made the transition",
    );
    const again = await running(ctx);
    const oks = await Promise.all(
      Array.from(
        { length: 10 },
        (_, i) => report(ctx.stack, succeeded(again), { id: `dup-ok-${i}` }),
      ),
    );
    assert.deepEqual(oks.map((a) => a.status), Array(10).fill(200));
    assert.deepEqual(await states(ctx.sql), [
      ["failed", SLACK, "delivered"],
      ["failed", JSON_HOOK, "delivered"],
      ["recovery", SLACK, "delivered"],
      ["recovery", JSON_HOOK, "delivered"],
    ]);
    assert.equal(receiver.received.length, 4, "each sent once");
    const recovery = verified(byPath("json")[1]);
    assert.equal(recovery.type, "backup.recovery");
    assert.equal(recovery.data.run.dispatch_id, again.dispatch_id);
    assert.match(
      slackText(byPath("slack")[1]),
      new RegExp(
        `^:large_green_circle: Backups recovered: run ${again.dispatch_id} succeeded\n`,
      ),
    );
    // No recovery without an open problem.
    const third = await running(ctx);
    await report(ctx.stack, succeeded(third));
    assert.equal((await notes(ctx.sql)).length, 4);
  },
);

behaviour(
  "a transition that does not commit leaves no alert, and its retry alerts once: the rows are written by the transition's own statement",
  async (ctx) => {
    const run = await running(ctx);
    // The database refuses to fail a run, as a full disk or a lost
    // connection would at the last moment.
    await ctx.sql.unsafe(`
      create function alerts_test_refuse() returns trigger language plpgsql
      as $$ begin raise exception 'refused by the test'; end $$`);
    await ctx.sql.unsafe(`
      create trigger alerts_test_refuse before update on backup_history
      for each row when (new.status = 'failed')
      execute function alerts_test_refuse()`);
    try {
      const refused = await report(ctx.stack, failed(run), { id: "r-1" });
      assert.equal(refused.status, 500);
      assert.equal(refused.body.error.code, "internal");
      assert.deepEqual(await states(ctx.sql), []);
    } finally {
      await ctx.sql.unsafe(`
        drop trigger alerts_test_refuse on backup_history;
        drop function alerts_test_refuse()`);
    }
    await sweep(ctx);
    assert.equal(receiver.received.length, 0, "nothing was sent");
    // The workflow retries its report, which now commits.
    const retried = await report(ctx.stack, failed(run), { id: "r-1" });
    assert.equal(retried.status, 200);
    assert.deepEqual(await states(ctx.sql), [
      ["failed", SLACK, "delivered"],
      ["failed", JSON_HOOK, "delivered"],
    ]);
  },
);

behaviour(
  "a receiver that redirects is a failed send, not a delivery: the POST is not followed as a bodiless GET",
  async (ctx) => {
    receiver.script("json", 301);
    await report(ctx.stack, failed(await running(ctx)));
    const [slack, json] = await notes(ctx.sql);
    assert.equal(slack.status, "delivered");
    assert.deepEqual(
      [json.status, json.attempts, json.last_error],
      [
        "pending",
        1,
        "HTTP 301: a redirect, which alerts do not follow (set the URL it points to)",
      ],
    );
    assert.deepEqual(
      byPath("json").map((r) => r.body.length > 0),
      [true],
      "one POST with its body, and no GET after it",
    );
  },
);

behaviour(
  "the receiver failing 5xx, then recovering: the row is retried by the sweep and delivered once more with the same webhook-id",
  async (ctx) => {
    receiver.script("json", 503);
    await report(ctx.stack, failed(await running(ctx)));
    let [slack, json] = await notes(ctx.sql);
    assert.equal(slack.status, "delivered");
    assert.deepEqual(
      [json.status, json.attempts, json.last_error, json.leased],
      ["pending", 1, "HTTP 503", false],
    );
    // Not due yet: a sweep leaves it.
    assert.equal((await sweep(ctx)).status, 200);
    assert.equal(byPath("json").length, 1);
    await due(ctx.sql);
    assert.equal((await sweep(ctx)).status, 200);
    [slack, json] = await notes(ctx.sql);
    assert.deepEqual(
      [json.status, json.attempts, json.last_error],
      ["delivered", 2, null],
    );
    const sent = byPath("json");
    assert.equal(sent.length, 2);
    assert.deepEqual(
      sent.map((r) => r.headers.get("webhook-id")),
      [json.webhook_id, json.webhook_id],
    );
    assert.deepEqual(verified(sent[0]), verified(sent[1]), "the same body");
    assert.equal(byPath("slack").length, 1, "the delivered row is not resent");
  },
);

behaviour(
  "concurrent senders never send one attempt twice: five sweeps at once claim disjoint rows",
  async (ctx) => {
    for (let i = 0; i < 3; i++) {
      receiver.script("slack", 503);
      receiver.script("json", 503);
      await report(ctx.stack, failed(await running(ctx)));
    }
    assert.equal(receiver.received.length, 6);
    await due(ctx.sql);
    const sweeps = await Promise.all(
      Array.from({ length: 5 }, () => sweep(ctx)),
    );
    assert.deepEqual(sweeps.map((a) => a.status), Array(5).fill(200));
    const rows = await notes(ctx.sql);
    assert.deepEqual(
      rows.map((n) => [n.status, n.attempts]),
      Array(6).fill(["delivered", 2]),
    );
    for (const n of rows) {
      const sent = receiver.received.filter((r) =>
        r.headers.get("webhook-id") === n.webhook_id
      );
      assert.equal(sent.length, 2, `${n.webhook_id}: a 503, then one send`);
    }
    assert.equal(receiver.received.length, 12);
  },
);

behaviour(
  "a sender killed between sending and settling: no one takes the row during its lease, then it is sent again with the same webhook-id, never a second id",
  async (ctx) => {
    receiver.script("slack", 503);
    receiver.script("json", 503);
    await report(ctx.stack, failed(await running(ctx)));
    await due(ctx.sql);
    const before = await notes(ctx.sql);
    assert.deepEqual(before.map((n) => n.attempts), [1, 1]);
    // A second server process: its sweep claims both rows and is killed
    // while the first send waits for its answer.
    receiver.script("slack", "hang");
    const doomed = await startStack({
      databaseUrl: ctx.dbUrl,
      env: alertEnv(),
    });
    const inFlight = sweep(ctx, doomed).catch(() => null);
    await receiver.waitFor(3);
    await doomed.close();
    await inFlight;
    let rows = await notes(ctx.sql);
    assert.deepEqual(
      rows.map((n) => [n.status, n.attempts, n.leased]),
      [["pending", 2, true], ["pending", 2, true]],
    );
    // Within the lease another sender leaves them alone.
    await sweep(ctx);
    assert.equal(receiver.received.length, 3);
    await ctx.sql`
      update backup_notifications set claimed_until = now() - interval '1 second'`;
    await sweep(ctx);
    rows = await notes(ctx.sql);
    assert.deepEqual(
      rows.map((n) => [n.status, n.attempts]),
      [["delivered", 3], ["delivered", 3]],
    );
    const slackIds = byPath("slack").map((r) => r.headers.get("webhook-id"));
    assert.deepEqual(slackIds, Array(3).fill(rows[0].webhook_id));
    const jsonIds = byPath("json").map((r) => r.headers.get("webhook-id"));
    assert.deepEqual(jsonIds, Array(2).fill(rows[1].webhook_id));
  },
);

/** src/sql/claim_notifications.sql with its columns, as store.rs runs it. */
const CLAIM = await Promise.all(
  ["claim_notifications.sql", "notification_columns.sql"].map((f) =>
    Deno.readTextFile(new URL(`../src/sql/${f}`, import.meta.url))
  ),
).then(([claim, columns]) => `${claim}${columns} from claimed n order by n.id`);

behaviour(
  "a sender whose clock trails the database's still claims the alert it just raised, and nothing due later",
  async (ctx) => {
    // One transaction, so now() is the raising clock: the host's clock
    // trails it by 5 ms, as its truncation to ms or a skew between the
    // function's machine and the database's can make it.
    const claimed = await ctx.sql.begin(async (tx) => {
      await tx`
        insert into backup_notifications (event, destination, payload)
        values ('test', ${SLACK}, '{}'),
               ('test', ${JSON_HOOK}, '{}')`;
      await tx`
        update backup_notifications
           set next_attempt_at = now() + interval '1 second'
         where destination = ${JSON_HOOK}`;
      const [{ ms }] = await tx`
        select floor(extract(epoch from now()) * 1000)::int8 - 5 as ms`;
      return await tx.unsafe(CLAIM, [String(ms), "60000", "10"]);
    });
    assert.deepEqual(
      claimed.map((r) => [r.note.destination, r.note.attempts]),
      [[SLACK, 1]],
    );
  },
);

behaviour(
  "a row still failing a day after its event is marked dead, with the status code as its only error, and shown by backup-status",
  async (ctx) => {
    receiver.script("slack", 500);
    receiver.script("json", 500);
    await report(ctx.stack, failed(await running(ctx)));
    await ctx.sql`
      update backup_notifications
         set created_at = now() - interval '23 hours 59 minutes 50 seconds',
             next_attempt_at = now() - interval '1 second'`;
    receiver.script("slack", 500);
    receiver.script("json", 502);
    await sweep(ctx);
    const rows = await notes(ctx.sql);
    assert.deepEqual(
      rows.map((n) => [n.status, n.attempts, n.last_error]),
      [["dead", 2, "HTTP 500"], ["dead", 2, "HTTP 502"]],
    );
    await due(ctx.sql);
    await sweep(ctx);
    assert.equal(receiver.received.length, 4, "a dead row is not sent");
    const page = await call(ctx, ctx.stack.fn("backup-status"), {
      headers: { authorization: `Bearer ${await userToken(ADMIN_ID)}` },
    });
    assert.equal(page.status, 200, page.text);
    assert.deepEqual(
      page.body.notifications.map((
        n: Json,
      ) => [n.event, n.destination, n.status, n.attempts, n.last_error]),
      [
        ["failed", JSON_HOOK, "dead", 2, "HTTP 502"],
        ["failed", SLACK, "dead", 2, "HTTP 500"],
      ],
    );
    assert.deepEqual(Object.keys(page.body.notifications[0]).sort(), [
      "attempts",
      "created_at",
      "delivered_at",
      "destination",
      "dispatch_id",
      "event",
      "id",
      "last_error",
      "next_attempt_at",
      "status",
      "webhook_id",
    ]);
  },
);

behaviour(
  "a run the sweep fails (no start within the deadline) raises the failed alert, sent by that sweep",
  async (ctx) => {
    const { dispatch_id } = await insertRun(ctx.sql, {}, { createdAgo: 660 });
    const a = await sweep(ctx);
    assert.equal(a.body.changed[0].failure_reason, "lost");
    assert.deepEqual(await states(ctx.sql), [
      ["failed", SLACK, "delivered"],
      ["failed", JSON_HOOK, "delivered"],
    ]);
    const body = verified(byPath("json")[0]);
    assert.equal(body.data.run.dispatch_id, dispatch_id);
    assert.equal(body.data.run.failure_reason, "lost");
  },
);

behaviour(
  "a silence read just before a success committed is not raised: raise_silence.sql checks its start again",
  async (ctx) => {
    await ctx.sql`
      update backup_settings set last_success_at = now() - interval '27 hours'`;
    // The sweep's reading of the clock (alert_clock in store.rs).
    const [{ since }] = await ctx.sql`
      select floor(extract(epoch from coalesce(st.last_success_at, a.since))
                   * 1000)::float8 as since
        from backup_settings st, backup_alert_state a where st.id and a.id`;
    // A success lands before the sweep raises.
    await ctx.sql`update backup_settings set last_success_at = now()`;
    const statement = Deno.readTextFileSync(
      new URL("../src/sql/raise_silence.sql", import.meta.url),
    ).split("\n").filter((l) => !l.startsWith("--")).join("\n");
    const facts = JSON.stringify({ alert_after_hours: 26 });
    const raised = await ctx.sql.unsafe(statement, [
      since,
      facts,
      JSON.stringify([SLACK]),
    ]);
    assert.deepEqual([...raised], []);
    assert.deepEqual(await states(ctx.sql), []);
    const [state] = await ctx.sql`
      select open_event, silence_from from backup_alert_state`;
    assert.deepEqual({ ...state }, { open_event: null, silence_from: null });
    // The clock as it is now raises, once.
    const [{ now }] = await ctx.sql`
      select floor(extract(epoch from last_success_at) * 1000)::float8 as now
        from backup_settings`;
    const again = await ctx.sql.unsafe(statement, [
      now,
      facts,
      JSON.stringify([SLACK]),
    ]);
    assert.deepEqual([...again].map((r) => ({ ...r })), [{ raised: true }]);
  },
);

behaviour(
  "the dead man's switch: no success for alert_after_hours raises one silence per silence; a success recovers; the next silence is new",
  async (ctx) => {
    const last = await insertRun(ctx.sql, {
      status: "success",
      outcome_source: "report",
      s3_key: "prod/old.dump",
    }, {
      createdAgo: 27 * 3600,
      startedAgo: 27 * 3600,
      finishedAgo: 27 * 3600,
    });
    const [{ at }] = await ctx.sql`
      select to_char(last_success_at at time zone 'UTC',
                     'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as at
        from backup_settings`;
    // 27 hours is within a 48-hour setting.
    await ctx.sql`update backup_settings set alert_after_hours = 48`;
    await sweep(ctx);
    assert.deepEqual(await states(ctx.sql), []);
    await ctx.sql`update backup_settings set alert_after_hours = default`;
    for (let i = 0; i < 3; i++) await sweep(ctx);
    assert.deepEqual(await states(ctx.sql), [
      ["silence", SLACK, "delivered"],
      ["silence", JSON_HOOK, "delivered"],
    ]);
    assert.equal(
      slackText(byPath("slack")[0]),
      `:warning: No successful backup for more than 26 hours (since ${at})\n` +
        `Last good backup: ${at} (prod/old.dump)`,
    );
    const body = verified(byPath("json")[0]);
    assert.deepEqual(body.data, {
      event: "silence",
      silent_since: at,
      alert_after_hours: 26,
      last_success: {
        dispatch_id: last.dispatch_id,
        s3_key: "prod/old.dump",
        finished_at: at,
      },
    });
    const run = await running(ctx);
    await report(ctx.stack, succeeded(run));
    assert.deepEqual((await states(ctx.sql)).slice(2), [
      ["recovery", SLACK, "delivered"],
      ["recovery", JSON_HOOK, "delivered"],
    ]);
    // Silent again, since that success: a new silence.
    await ctx.sql`
      update backup_settings set last_success_at = now() - interval '30 hours'`;
    await sweep(ctx);
    assert.deepEqual(
      (await states(ctx.sql)).slice(4).map((s) => s[0]),
      ["silence", "silence"],
    );
  },
);

behaviour(
  "a failed verification alerts with the workflow's finding, and the next verified success recovers",
  async (ctx) => {
    const run = await running(ctx);
    await report(
      ctx.stack,
      succeeded(run, {
        mode: "restore",
        ok: false,
        error: "2 tables differ",
        tables: 3,
      }),
    );
    assert.deepEqual(await states(ctx.sql), [
      ["verification_failed", SLACK, "delivered"],
      ["verification_failed", JSON_HOOK, "delivered"],
    ]);
    const text = slackText(byPath("slack")[0]);
    assert.match(
      text,
      /^:large_orange_circle: Backup stored but its verification failed/,
    );
    assert.match(text, /\nVerification: 2 tables differ\n/);
    const body = verified(byPath("json")[0]);
    assert.equal(body.type, "backup.verification_failed");
    assert.equal(body.data.run.verification.ok, false);
    await report(
      ctx.stack,
      succeeded(await running(ctx), { mode: "list", ok: true }),
    );
    assert.deepEqual(
      (await states(ctx.sql)).slice(2).map((s) => s[0]),
      ["recovery", "recovery"],
    );
  },
);

// --- the test alert -----------------------------------------------------------

behaviour(
  "POST backup-status {action: send_test_alert} sends a test to every destination for admins; others get 401, 403, 400, 415",
  async (ctx) => {
    const url = ctx.stack.fn("backup-status");
    const post = async (
      body: string,
      opts: { sub?: string | null; type?: string } = {},
    ) =>
      await call(ctx, url, {
        method: "POST",
        headers: {
          ...(opts.sub === null ? {} : {
            authorization: `Bearer ${await userToken(opts.sub ?? ADMIN_ID)}`,
          }),
          "content-type": opts.type ?? "application/json",
        },
        body,
      });
    const action = '{"action":"send_test_alert"}';
    assertError(await post(action, { sub: null }), 401, "missing_token");
    assertError(await post(action, { sub: NON_ADMIN_ID }), 403, "not_admin");
    assertError(await post('{"action":"reboot"}'), 400, "invalid_field");
    assertError(await post("{}"), 400, "invalid_field");
    assertError(await post("[]"), 400, "invalid_body");
    assertError(
      await post(action, { type: "text/plain" }),
      415,
      "unsupported_media_type",
    );
    assert.deepEqual(await states(ctx.sql), []);

    receiver.script("json", 500);
    const a = await post(action);
    assert.equal(a.status, 200, a.text);
    assert.deepEqual(a.body.sent, { delivered: 1, retrying: 1, dead: 0 });
    assert.deepEqual(
      a.body.notifications.map((n: Json) => [n.event, n.destination, n.status]),
      [["test", JSON_HOOK, "pending"], ["test", SLACK, "delivered"]],
    );
    assert.equal(a.body.notifications[0].last_error, "HTTP 500");
    assert.equal(
      slackText(byPath("slack")[0]),
      ":bell: Test alert from the backup control plane: this destination works.",
    );
    assert.equal(verified(byPath("json")[0]).type, "backup.test");
  },
);

suite.register();
