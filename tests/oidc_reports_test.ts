/**
 * Reports bound to the exact GitHub run (src/credentials/oidc.rs), through the real
 * functions (scripts/serve.ts), real PostgreSQL, and the OIDC issuer of the
 * loopback GitHub stand-in (scripts/local_github.ts): RS256 tokens signed
 * with its key and checked by the host's WebCrypto, claim by claim. Also
 * the hardening of issue 11 that only the real host can show: a body hash
 * kept in the database, and methods as the HTTP server hands them over.
 *
 * Needs TEST_DATABASE_URL (scripts/test.sh sets it).
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { startLocalGitHub } from "../scripts/local_github.ts";
import type { LocalGitHub, OidcTokenOptions } from "../scripts/local_github.ts";
import { freshDatabase } from "./support/db.ts";
import type { FreshDatabase } from "./support/db.ts";
import {
  ADMIN_ID,
  freePort,
  startStack,
  trigger,
  webhookHeaders,
} from "./support/stack.ts";
import type { Json, Stack } from "./support/stack.ts";

interface Ctx {
  db: FreshDatabase;
  gh: LocalGitHub;
  stack: Stack;
  audience: string;
}

const SERVICE_KEY = "sb_secret_oidc_test_service_key";

async function withStack(
  mode: "oidc" | "both",
  fn: (ctx: Ctx) => Promise<void>,
): Promise<void> {
  const db = await freshDatabase();
  await db.sql`insert into backup_admins (user_id) values (${ADMIN_ID})`;
  const gh = await startLocalGitHub();
  const port = freePort();
  const stack = await startStack({
    databaseUrl: db.url,
    githubApiUrl: gh.url,
    port,
    env: {
      BACKUP_REPORT_AUTH: mode,
      GITHUB_OIDC_ISSUER: gh.oidcIssuer,
      SUPABASE_URL: `http://127.0.0.1:${port}`,
      SUPABASE_SERVICE_ROLE_KEY: SERVICE_KEY,
      ...(mode === "oidc" ? { BACKUP_WEBHOOK_SECRET: null } : {}),
    },
  });
  try {
    await fn({ db, gh, stack, audience: stack.fn("finalize-backup") });
  } finally {
    await stack.close();
    await gh.close();
    await db.close();
  }
}

/** A dispatched run: its dispatch id and GitHub's run id. */
async function dispatched(ctx: Ctx): Promise<{ id: string; runId: number }> {
  const r = await trigger(ctx.stack, { body: "{}" });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return { id: r.body.dispatch_id, runId: r.body.workflow_run_id };
}

async function post(
  ctx: Ctx,
  payload: unknown,
  opts: { token?: string; signed?: boolean; id?: string; method?: string } = {},
): Promise<{ status: number; body: Json }> {
  const body = JSON.stringify(payload);
  const headers: Record<string, string> = opts.signed
    ? await webhookHeaders(body, { id: opts.id })
    : { "webhook-id": opts.id ?? `msg_${crypto.randomUUID()}` };
  headers["content-type"] = "application/json";
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  const r = await fetch(ctx.stack.fn("finalize-backup"), {
    method: opts.method ?? "POST",
    headers,
    body,
  });
  return { status: r.status, body: await r.json() };
}

function started(id: string, runId: number): Json {
  return {
    event: "started",
    dispatch_id: id,
    workflow_run_id: runId,
    run_attempt: 1,
  };
}

async function status(ctx: Ctx, id: string): Promise<string> {
  const [r] = await ctx.db.sql`
    select status, started_at from backup_history where dispatch_id = ${id}`;
  return `${r.status}${r.started_at ? " started" : ""}`;
}

/** A token with the header's payload and signature made by hand. */
function unsigned(header: Json, claims: Json): string {
  const b64 = (v: Json) =>
    btoa(JSON.stringify(v)).replace(/\+/g, "-").replace(/\//g, "_")
      .replace(/=+$/, "");
  return `${b64(header)}.${b64(claims)}.`;
}

Deno.test("finalize-backup in oidc mode refuses a token for another repository, workflow, ref, event, run or attempt, each by name, with WebCrypto checking real RS256 signatures", async () => {
  await withStack("oidc", async (ctx) => {
    const { id, runId } = await dispatched(ctx);
    const mint = (o: OidcTokenOptions) =>
      ctx.gh.mintOidcToken(runId, ctx.audience, o);
    const workflow = (ref: string) =>
      `acme/app/.github/workflows/backup.yml@${ref}`;
    const cases: [string, OidcTokenOptions][] = [
      ["oidc_repository", { claims: { repository: "evil/app" } }],
      ["oidc_workflow_ref", {
        claims: {
          workflow_ref: "acme/app/.github/workflows/x.yml@refs/heads/main",
        },
      }],
      ["oidc_ref", {
        claims: {
          ref: "refs/heads/feature",
          workflow_ref: workflow("refs/heads/feature"),
        },
      }],
      ["oidc_event_name", { claims: { event_name: "push" } }],
      ["oidc_run_id", { claims: { run_id: String(runId + 1) } }],
      ["oidc_run_attempt", { claims: { run_attempt: "2" } }],
      ["oidc_exp", { claims: { exp: Math.floor(Date.now() / 1000) - 120 } }],
      ["oidc_aud", { claims: { aud: "https://elsewhere.example/finalize" } }],
      ["oidc_iss", {
        claims: { iss: "https://token.actions.githubusercontent.com" },
      }],
      ["oidc_kid", { header: { kid: "not-published" } }],
      ["oidc_signature", { foreignKey: true }],
    ];
    for (const [code, o] of cases) {
      const r = await post(ctx, started(id, runId), { token: await mint(o) });
      assert.equal(r.status, 401, `${code}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error.code, code);
      assert.equal(
        r.body.error.message,
        "the GitHub OIDC token was refused (see the code)",
      );
    }
    const good = await mint({});
    const claims = JSON.parse(atob(
      good.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"),
    ));
    for (
      const [code, token] of [
        ["oidc_alg", unsigned({ alg: "none" }, claims)],
        ["oidc_alg", unsigned({ alg: "HS256", kid: "local-github-1" }, claims)],
        ["oidc_malformed", "not.a-token"],
      ]
    ) {
      const r = await post(ctx, started(id, runId), { token });
      assert.equal(r.status, 401);
      assert.equal(r.body.error.code, code);
    }
    const none = await post(ctx, started(id, runId));
    assert.equal(none.status, 401);
    assert.equal(none.body.error.code, "missing_token");
    assert.equal(await status(ctx, id), "in_progress", "nothing was applied");

    const ok = await post(ctx, started(id, runId), { token: good });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.deepEqual(ok.body, {
      dispatch_id: id,
      status: "in_progress",
      changed: true,
    });
    assert.equal(await status(ctx, id), "in_progress started");
  });
});

Deno.test("finalize-backup in both mode needs the signature and the run's token together", async () => {
  await withStack("both", async (ctx) => {
    const { id, runId } = await dispatched(ctx);
    const token = await ctx.gh.mintOidcToken(runId, ctx.audience);
    const tokenOnly = await post(ctx, started(id, runId), { token });
    assert.equal(tokenOnly.status, 401);
    assert.equal(tokenOnly.body.error.code, "invalid_signature");
    const signedOnly = await post(ctx, started(id, runId), { signed: true });
    assert.equal(signedOnly.status, 401);
    assert.equal(signedOnly.body.error.code, "missing_token");
    const both = await post(ctx, started(id, runId), { token, signed: true });
    assert.equal(both.status, 200, JSON.stringify(both.body));
    assert.equal(both.body.changed, true);
  });
});

Deno.test("in oidc mode a token for one run cannot mark another run's backups pruned, a request without credentials is 401 before anything else, and a signed sweep is 401 without a signing secret", async () => {
  await withStack("oidc", async (ctx) => {
    // An older success whose object retention would delete, and the run
    // that succeeds now.
    await ctx.db
      .sql`update backup_settings set retention_days = 1, retention_keep = 1`;
    const old = crypto.randomUUID();
    const oldKey = `backups/20261101T000000Z_${old}.dump`;
    await ctx.db.sql`
      insert into backup_history (dispatch_id, trigger_source, status, s3_key,
        outcome_source, workflow_run_id, started_at, finished_at)
      values (${old}, 'manual', 'success', ${oldKey}, 'report', 41,
        now() - interval '30 days', now() - interval '30 days')`;
    const { id, runId } = await dispatched(ctx);
    const succeeded = {
      event: "succeeded",
      dispatch_id: id,
      workflow_run_id: runId,
      run_attempt: 1,
      s3_key: `backups/20261201T000000Z_${id}.dump`,
    };
    const done = await post(ctx, succeeded, {
      token: await ctx.gh.mintOidcToken(runId, ctx.audience),
    });
    assert.deepEqual([done.status, done.body.prune], [200, [oldKey]]);

    // The next backup's own token, naming this success.
    const next = await dispatched(ctx);
    const other = await post(ctx, {
      event: "pruned",
      dispatch_id: id,
      workflow_run_id: next.runId,
      run_attempt: 1,
      pruned: [oldKey],
    }, { token: await ctx.gh.mintOidcToken(next.runId, ctx.audience) });
    assert.deepEqual([other.status, other.body.error.code], [
      409,
      "illegal_transition",
    ]);
    const [row] = await ctx.db.sql`
      select pruned_at from backup_history where dispatch_id = ${old}`;
    assert.equal(row.pruned_at, null);
    // The success's own report marks it.
    const own = await post(ctx, {
      event: "pruned",
      dispatch_id: id,
      workflow_run_id: runId,
      run_attempt: 1,
      pruned: [oldKey],
    }, { token: await ctx.gh.mintOidcToken(runId, ctx.audience) });
    assert.deepEqual(own, {
      status: 200,
      body: { dispatch_id: id, status: "success", changed: false },
    });
    const [marked] = await ctx.db.sql`
      select pruned_at is not null as pruned from backup_history
       where dispatch_id = ${old}`;
    assert.equal(marked.pruned, true);

    // No credentials and no webhook-id: 401, not a 400 about the header.
    const bare = await fetch(ctx.stack.fn("finalize-backup"), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    assert.deepEqual([bare.status, (await bare.json()).error.code], [
      401,
      "missing_token",
    ]);

    // A signature on a sweep where no signing secret is set.
    const sweep = await fetch(ctx.stack.fn("reconcile-backups"), {
      method: "POST",
      headers: { "webhook-signature": "v1,AAAA", apikey: SERVICE_KEY },
      body: '{"sweep":true}',
    });
    assert.deepEqual([sweep.status, (await sweep.json()).error.code], [
      401,
      "invalid_signature",
    ]);
    assert.ok(
      !ctx.stack.output().includes('"level":"error"'),
      ctx.stack.output(),
    );
  });
});

Deno.test("a re-used webhook-id with another body gets 409 webhook_id_reused, the same body 200 changed:false", async () => {
  await withStack("oidc", async (ctx) => {
    const { id, runId } = await dispatched(ctx);
    const token = await ctx.gh.mintOidcToken(runId, ctx.audience);
    const first = await post(ctx, started(id, runId), { token, id: "msg_1" });
    assert.equal(first.status, 200);
    const again = await post(ctx, started(id, runId), { token, id: "msg_1" });
    assert.deepEqual(again, {
      status: 200,
      body: { dispatch_id: id, status: "in_progress", changed: false },
    });
    const progress = { ...started(id, runId), event: "progress" };
    const reused = await post(ctx, progress, { token, id: "msg_1" });
    assert.deepEqual(reused, {
      status: 409,
      body: {
        error: {
          code: "webhook_id_reused",
          message: "this webhook-id was delivered before with another body",
        },
      },
    });
    // The delivery keeps the first body's hash, which told the reuse.
    const [d] = await ctx.db.sql`
      select encode(body_sha256, 'hex') as body_sha256
        from backup_report_deliveries where webhook_id = 'msg_1'`;
    assert.equal(
      d.body_sha256,
      createHash("sha256").update(JSON.stringify(started(id, runId)))
        .digest("hex"),
    );
  });
});

Deno.test("a lowercase method is answered 405, not served as POST", async () => {
  await withStack("oidc", async (ctx) => {
    const { id, runId } = await dispatched(ctx);
    const token = await ctx.gh.mintOidcToken(runId, ctx.audience);
    // curl, because fetch() upper-cases "post" before sending it.
    const out = await new Deno.Command("curl", {
      args: [
        "-sS",
        "-X",
        "post",
        "-H",
        "content-type: application/json",
        "-H",
        "webhook-id: msg_lower",
        "-H",
        `authorization: Bearer ${token}`,
        "--data-binary",
        JSON.stringify(started(id, runId)),
        "-w",
        "\n%{http_code}",
        ctx.audience,
      ],
    }).output();
    const [body, code] = new TextDecoder().decode(out.stdout).split("\n");
    assert.equal(code, "405", body);
    assert.equal(JSON.parse(body).error.code, "method_not_allowed");
    assert.equal(await status(ctx, id), "in_progress");
  });
});

Deno.test("a client that disconnects mid-body is logged at debug level, not as an error", async () => {
  const stack = await startStack({
    databaseUrl: "postgres://127.0.0.1:9/none",
  });
  try {
    const { port } = new URL(stack.url);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: +port });
    await conn.write(new TextEncoder().encode(
      "POST /functions/v1/finalize-backup HTTP/1.1\r\nhost: x\r\n" +
        'content-type: application/json\r\ncontent-length: 5000\r\n\r\n{"ev',
    ));
    await new Promise((r) => setTimeout(r, 200));
    conn.close();
    const deadline = Date.now() + 5_000;
    while (!stack.output().includes("client disconnected")) {
      assert.ok(Date.now() < deadline, stack.output());
      await new Promise((r) => setTimeout(r, 50));
    }
    const lines = stack.output().split("\n").filter((l) => l.startsWith("{"));
    const logged = lines.map((l) => JSON.parse(l));
    assert.deepEqual(
      logged.filter((l) => l.fn === "finalize-backup").map((l) => l.level),
      ["debug"],
      stack.output(),
    );
  } finally {
    await stack.close();
  }
});
