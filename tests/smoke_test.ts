// `deno task smoke`, the post-deploy check, run as a user runs it: against a
// real stack (the functions, the WebAssembly core, PostgreSQL) served at
// `/functions/v1/<name>` like a hosted project, against a stand-in whose
// functions fail the ways a deployment does, and against a closed port.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { freshDatabase } from "./support/db.ts";
import {
  ADMIN_ID,
  freePort,
  NON_ADMIN_ID,
  startStack,
  userToken,
} from "./support/stack.ts";
import {
  type Answer,
  describeSweeper,
  format,
  functionNames,
  judge,
} from "../scripts/smoke.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** Runs `deno task smoke ...args`; returns its exit code and stdout lines. */
async function smoke(
  ...args: string[]
): Promise<{ code: number; lines: string[]; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "smoke", ...args],
    cwd: ROOT,
    env: { DENO_NO_UPDATE_CHECK: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  return {
    code: out.code,
    lines: text.trimEnd().split("\n"),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** What a function whose core loaded answers a call without credentials. */
const LOADED = [
  "ok    backup-status      core loaded (GET without credentials: 401 missing_token)",
  "ok    finalize-backup    core loaded (POST without credentials: 401 invalid_signature)",
  "ok    reconcile-backups  core loaded (POST without credentials: 401 missing_token)",
  "ok    trigger-backup     core loaded (POST without credentials: 401 missing_token)",
];

Deno.test("deno task smoke against a local stack", async (t) => {
  const db = await freshDatabase();
  const stack = await startStack({ databaseUrl: db.url });
  try {
    await db.sql`insert into backup_admins (user_id) values (${ADMIN_ID})`;

    await t.step(
      "the functions checked are the directories under supabase/functions/",
      () => {
        assert.deepEqual(functionNames(), [
          "backup-status",
          "finalize-backup",
          "reconcile-backups",
          "trigger-backup",
        ]);
      },
    );

    await t.step(
      "smoke exits 0 and reports each function's core as loaded",
      async () => {
        const r = await smoke(stack.url);
        assert.equal(r.code, 0, r.lines.join("\n") + r.stderr);
        assert.deepEqual(r.lines, [
          `smoke check of ${stack.url}/functions/v1`,
          ...LOADED,
          "all 4 checks passed",
        ]);
        // A URL with a trailing /functions/v1/ is the same project.
        const again = await smoke(`${stack.url}/functions/v1/`);
        assert.deepEqual(again.lines, r.lines);
      },
    );

    await t.step(
      "smoke --token of an admin reports the admin and the sweeper's health from the history answer",
      async () => {
        const token = await userToken(ADMIN_ID);
        const history = await fetch(
          `${stack.url}/functions/v1/backup-status?limit=1`,
          { headers: { authorization: `Bearer ${token}` } },
        );
        assert.equal(history.status, 200);
        const sweeper = describeSweeper(await history.json());
        const r = await smoke(stack.url, "--token", token);
        // The sweeper's line(s) as the report lays them out beside the
        // longest function name.
        const widest = { ok: true, subject: "reconcile-backups", finding: "" };
        const sweeperLines = format("x", [widest, sweeper]).split("\n")
          .slice(2, -1);
        const expected = [
          "ok    admin              the token's user is a backup admin (backup-status: 200)",
          ...sweeperLines,
        ];
        assert.deepEqual(r.lines.slice(0, 5), [
          `smoke check of ${stack.url}/functions/v1`,
          ...LOADED,
        ]);
        assert.deepEqual(r.lines.slice(5, -1), expected);
        assert.equal(r.code, sweeper.ok ? 0 : 1, r.lines.join("\n"));
        assert.ok(
          !r.lines.join("\n").includes(token),
          "the token is never printed",
        );
      },
    );

    await t.step(
      "smoke --token of a non-admin exits 1 with 403 not_admin and the insert that makes them one",
      async () => {
        const r = await smoke(
          stack.url,
          `--token=${await userToken(NON_ADMIN_ID)}`,
        );
        assert.equal(r.code, 1);
        assert.deepEqual(r.lines.slice(5), [
          `FAIL  admin              the token's user ${NON_ADMIN_ID} is not a backup admin (403 not_admin)`,
          `                         fix: as the database owner: insert into backup_admins (user_id) values ('${NON_ADMIN_ID}');`,
          "1 of 5 checks failed",
        ]);
      },
    );

    await t.step(
      "smoke --token with an expired token exits 1 and says to pass a current one",
      async () => {
        const expired = await userToken(ADMIN_ID, {
          exp: Math.floor(Date.now() / 1000) - 60,
        });
        const r = await smoke(stack.url, "--token", expired);
        assert.equal(r.code, 1);
        assert.match(
          r.lines[5],
          /^FAIL {2}admin {14}the token was refused \(401 invalid_token: .+\)$/,
        );
        assert.match(r.lines[6], /fix: pass a current user access token/);
      },
    );
  } finally {
    await stack.close();
    await db.close();
  }
});

Deno.test("deno task smoke names a missing setting and how to set it", async () => {
  const db = await freshDatabase();
  const stack = await startStack({
    databaseUrl: db.url,
    env: { BACKUP_WEBHOOK_SECRET: null },
  });
  try {
    const r = await smoke(stack.url);
    assert.equal(r.code, 1);
    assert.deepEqual(r.lines, [
      `smoke check of ${stack.url}/functions/v1`,
      LOADED[0],
      "FAIL  finalize-backup    core loaded, but misconfigured (500 config_missing: server misconfigured: BACKUP_WEBHOOK_SECRET is not set)",
      '                         fix: `supabase secrets set BACKUP_WEBHOOK_SECRET=<value>` (README, "Configuration"); the next request reads it, no redeploy needed',
      LOADED[2],
      LOADED[3],
      "1 of 4 checks failed",
    ]);
  } finally {
    await stack.close();
    await db.close();
  }
});

Deno.test("deno task smoke exits 1 with a fix for each function that fails the way a deployment does", async () => {
  // A stand-in for a project where each function fails differently: a
  // crash at start (500, not JSON), the platform's boot error, the
  // gateway's JWT check, and a function that was never deployed.
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => {
      const name = new URL(req.url).pathname.replace("/functions/v1/", "");
      switch (name) {
        case "trigger-backup":
          return new Response("Internal Server Error", { status: 500 });
        case "finalize-backup":
          return Response.json({
            code: "BOOT_ERROR",
            message: "Function failed to start (please check logs)",
          }, { status: 503, headers: { "sb-error-code": "BOOT_ERROR" } });
        case "reconcile-backups":
          return Response.json(
            { code: 401, message: "Missing authorization header" },
            { status: 401 },
          );
        case "backup-status":
          return Response.json({
            code: "NOT_FOUND",
            message: "Requested function was not found",
          }, { status: 404 });
        default:
          return new Response(null, { status: 400 });
      }
    },
  );
  const url = `http://127.0.0.1:${server.addr.port}`;
  try {
    const r = await smoke(url);
    assert.equal(r.code, 1, r.lines.join("\n"));
    const fix = " ".repeat(25) + "fix: ";
    assert.deepEqual(r.lines, [
      `smoke check of ${url}/functions/v1`,
      'FAIL  backup-status      404: not deployed (body: {"code":"NOT_FOUND","message":"Requested function was not found"})',
      fix + "deploy it with `supabase functions deploy backup-status`",
      'FAIL  finalize-backup    503, not the core\'s answer (sb-error-code BOOT_ERROR, body: {"code":"BOOT_ERROR","message":"Function failed to start (please check logs)"})',
      fix +
      "the function crashed at start; read its logs (the server's output); redeploy with `supabase functions deploy finalize-backup` (it ships the embedded core, pkg/finalize-backup/backup_core_wasm.js, with the function)",
      'FAIL  reconcile-backups  401 from the gateway, not the core (body: {"code":401,"message":"Missing authorization header"})',
      fix +
      "the gateway checks JWTs for this function, and the workflow and pg_cron have none: redeploy with `supabase functions deploy reconcile-backups` --no-verify-jwt (supabase/config.toml says verify_jwt = false)",
      "FAIL  trigger-backup     500, not the core's answer (body: Internal Server Error)",
      fix +
      "the function crashed at start; read its logs (the server's output); redeploy with `supabase functions deploy trigger-backup` (it ships the embedded core, pkg/trigger-backup/backup_core_wasm.js, with the function)",
      "4 of 4 checks failed",
    ]);
  } finally {
    await server.shutdown();
  }
});

Deno.test("deno task smoke exits 1 when the project cannot be reached, and 2 without a URL", async () => {
  const url = `http://127.0.0.1:${freePort()}`;
  const r = await smoke(url);
  assert.equal(r.code, 1);
  assert.equal(r.lines.length, 1 + 4 * 2 + 1, r.lines.join("\n"));
  assert.match(r.lines[1], /^FAIL {2}backup-status {6}not reachable: .+/);
  assert.equal(
    r.lines[2].trim(),
    "fix: check the URL (https://<project-ref>.supabase.co) and the network; a paused project must be restored in the dashboard",
  );
  assert.equal(r.lines.at(-1), "4 of 4 checks failed");

  const usage = await smoke();
  assert.equal(usage.code, 2);
  assert.match(
    usage.stderr,
    /usage: deno task smoke https:\/\/<project-ref>\.supabase\.co \[--token <user access token>\]/,
  );
  assert.equal((await smoke("ftp://example.com")).code, 2);
});

Deno.test("smoke's fix for a crashed hosted function links the function's logs in the dashboard", () => {
  const answer: Answer = {
    status: 500,
    headers: new Headers(),
    text: '{"error":{"code":"internal","message":"internal error"}}',
    error: { code: "internal", message: "internal error" },
  };
  const check = judge(
    "https://abcdefghijklmnop.supabase.co",
    "trigger-backup",
    "POST without credentials",
    { ok: true, answer },
  );
  assert.deepEqual(check, {
    ok: false,
    subject: "trigger-backup",
    finding: "500 internal: the core did not load or crashed",
    fix: "the function crashed at start; read its logs " +
      "(https://supabase.com/dashboard/project/abcdefghijklmnop/functions/trigger-backup/logs); " +
      "redeploy with `supabase functions deploy trigger-backup` " +
      "(it ships the embedded core, pkg/trigger-backup/backup_core_wasm.js, with the function)",
  });
});

Deno.test("smoke reads the sweeper's health, and a missing field as an old deployment", () => {
  assert.deepEqual(describeSweeper({ runs: [], next_cursor: null }), {
    ok: true,
    subject: "sweeper",
    finding: "unknown (old deployment: the answer has no sweeper field)",
  });
  assert.deepEqual(
    describeSweeper({
      sweeper: {
        last_run_at: "2026-11-30T05:00:00.000Z",
        healthy: true,
        problem: null,
      },
    }),
    {
      ok: true,
      subject: "sweeper",
      finding: "healthy, last run 2026-11-30T05:00:00.000Z",
    },
  );
  const sick = describeSweeper({
    sweeper: {
      last_run_at: null,
      healthy: false,
      problem: "the sweep has not run for 2 hours",
    },
  });
  assert.equal(sick.ok, false);
  assert.equal(
    sick.finding,
    "not healthy, never run: the sweep has not run for 2 hours",
  );
  assert.match(sick.fix ?? "", /backup-sweep/);
  assert.match(sick.fix ?? "", /backup_functions_url/);
});
