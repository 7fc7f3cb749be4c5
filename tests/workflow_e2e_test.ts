/**
 * End to end: trigger-backup -> GitHub (scripts/local_github.ts) -> the real
 * workflow under `act` (host mode) -> pg_dump of a real database -> S3 (moto)
 * -> signed reports -> finalize-backup -> backup_history, with the functions
 * served by scripts/serve.ts (tests/support/stack.ts).
 *
 * Needs TEST_DATABASE_URL and TEST_S3_ENDPOINT (scripts/test.sh sets both).
 * Skipped, with the reason printed, only when `act` is not installed.
 *
 * What act can and cannot simulate (act 0.2.89, host mode):
 *  - SIGINT to act = a GitHub cancel: act kills the running step (SIGKILL to
 *    its process group, so pg_dump dies too, without running traps) and then
 *    runs the `if: always()` / `if: cancelled()` steps with job.status =
 *    cancelled. Tested below.
 *  - SIGKILL to act and its process group = a lost runner: nothing more runs,
 *    no final report; only the server's reconciliation against GitHub's run
 *    conclusion can end the row. Tested below (with reconcile-backups).
 *  - SIGTERM to act stops it WITHOUT running `always()` steps (unlike GitHub).
 *  - Step `timeout-minutes` is enforced (integer minutes only, so >= 60 s; the
 *    step is killed, job.status = failure, `always()` steps run): tested only
 *    with WORKFLOW_E2E_SLOW=1.
 *  - Job-level `timeout-minutes` is NOT enforced by act, `concurrency:` is not
 *    honoured across separate act processes, and re-runs (run_attempt > 1)
 *    can only be imitated by passing GITHUB_RUN_ATTEMPT.
 */

import assert from "node:assert/strict";
import { startLocalGitHub } from "../scripts/local_github.ts";
import type { ActOptions, LocalGitHub } from "../scripts/local_github.ts";
import { freshDatabase } from "./support/db.ts";
import type { FreshDatabase } from "./support/db.ts";
import {
  ADMIN_ID,
  fetchChecked,
  freePort,
  NON_ADMIN_ID,
  startStack,
  TEST_WEBHOOK_SECRET,
  trigger,
  userToken,
  webhookHeaders,
} from "./support/stack.ts";
import type { Json, Stack } from "./support/stack.ts";
import { insertRun, SUCCESS } from "./support/runs.ts";
import {
  aws,
  createBucket,
  getObject,
  listKeys,
  pendingUploads,
  run,
  S3_ACCESS_KEY,
  S3_SECRET_KEY,
  s3Endpoint,
  sha256hex,
  skipWithoutAct,
  sourceDatabase,
  startFaultyS3,
  waitFor,
} from "./support/workflow_harness.ts";
import type { SourceDatabase } from "./support/workflow_harness.ts";

const SKIP = await skipWithoutAct();
const opts = { sanitizeOps: false, sanitizeResources: false, ignore: SKIP };
const SLOW = Deno.env.get("WORKFLOW_E2E_SLOW") === "1";

interface E2E {
  history: FreshDatabase;
  src: SourceDatabase;
  bucket: string;
  act: ActOptions;
  gh: LocalGitHub;
  stack: Stack;
  close(): Promise<void>;
}

async function startE2E(
  o: {
    secrets?: Record<string, string>;
    vars?: Record<string, string>;
    /** BACKUP_REPORT_AUTH of the functions; default both, as deployed.
     * In `oidc` mode neither side has a webhook secret. */
    reportAuth?: "both" | "oidc" | "webhook";
    /** Give the functions the BACKUP_S3_* secrets that sign download links. */
    downloads?: boolean;
  } = {},
): Promise<E2E> {
  const reportAuth = o.reportAuth ?? "both";
  const history = await freshDatabase();
  const src = await sourceDatabase();
  const bucket = await createBucket();
  const act: ActOptions = {
    secrets: {
      BACKUP_DATABASE_URL: src.url,
      BACKUP_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET,
      AWS_ACCESS_KEY_ID: S3_ACCESS_KEY,
      AWS_SECRET_ACCESS_KEY: S3_SECRET_KEY,
      ...o.secrets,
    },
    vars: {
      BACKUP_S3_BUCKET: bucket,
      BACKUP_S3_ENDPOINT_URL: s3Endpoint(),
      // pg_dump -Fc, as these tests were written for; the supabase format
      // (the default) runs end to end in restore_drill_test.ts.
      BACKUP_FORMAT: "custom",
      ...o.vars,
    },
    // Scheduled runs belong to the repository the functions expect.
    repo: "acme/app",
  };
  if (reportAuth === "oidc") delete act.secrets!.BACKUP_WEBHOOK_SECRET;
  const closers: (() => Promise<unknown>)[] = [
    () => src.close(),
    () => history.close(),
  ];
  try {
    await history.sql`insert into backup_admins (user_id) values (${ADMIN_ID})`;
    const gh = await startLocalGitHub({ act });
    closers.unshift(() => gh.close());
    // The stand-in is the OIDC issuer; the token's audience is this
    // stack's finalize-backup, so its URL is chosen before it starts.
    const port = freePort();
    const stack = await startStack({
      databaseUrl: history.url,
      githubApiUrl: gh.url,
      port,
      env: {
        BACKUP_REPORT_AUTH: reportAuth,
        GITHUB_OIDC_ISSUER: gh.oidcIssuer,
        SUPABASE_URL: `http://127.0.0.1:${port}`,
        ...(reportAuth === "oidc" ? { BACKUP_WEBHOOK_SECRET: null } : {}),
        ...(o.downloads ? downloadSecrets(bucket) : {}),
      },
    });
    closers.unshift(() => stack.close());
    // act reads its options at each run: the URL is known only now.
    act.vars!.BACKUP_FINALIZE_URL = stack.fn("finalize-backup");
    return {
      history,
      src,
      bucket,
      act,
      gh,
      stack,
      async close() {
        for (const c of closers) await c().catch((e) => console.error(e));
      },
    };
  } catch (e) {
    for (const c of closers) await c().catch(() => {});
    throw e;
  }
}

/** A key pair for links only: moto accepts any, a real store would get a
 * read-only one (README, "Download"). */
const READ_KEY_ID = "AKIAREADONLYEXAMPLE";
const READ_SECRET = "read-only-secret-not-in-any-answer";

function downloadSecrets(bucket: string): Record<string, string> {
  return {
    BACKUP_S3_BUCKET: bucket,
    BACKUP_S3_ENDPOINT_URL: s3Endpoint(),
    BACKUP_S3_ACCESS_KEY_ID: READ_KEY_ID,
    BACKUP_S3_SECRET_ACCESS_KEY: READ_SECRET,
  };
}

/** GET backup-status for one run as `sub`, checked for leaked secrets. */
async function statusOf(stack: Stack, dispatchId: string, sub = ADMIN_ID) {
  return await fetchChecked(
    `${stack.fn("backup-status")}?dispatch_id=${dispatchId}`,
    { headers: { authorization: `Bearer ${await userToken(sub)}` } },
    [READ_SECRET, S3_SECRET_KEY],
  );
}

/**
 * The signature AWS's own SDK (botocore, under the AWS CLI) computes for a
 * GET of `url` (its query dropped) at the URL's X-Amz-Date: an oracle
 * independent of src/presign.rs. moto (5.2.1) serves presigned URLs without
 * checking their signature or expiry, so a refusal cannot be observed here.
 */
async function botocoreSignature(url: URL, secret: string): Promise<string> {
  const p = url.searchParams;
  const [keyId, , region] = p.get("X-Amz-Credential")!.split("/");
  const script = `
import datetime, sys
from unittest import mock
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
url, when, key_id, secret, region, expires = sys.argv[1:]
at = datetime.datetime.strptime(when, "%Y%m%dT%H%M%SZ")
with mock.patch("botocore.auth.get_current_datetime", return_value=at):
    request = AWSRequest(method="GET", url=url)
    S3SigV4QueryAuth(Credentials(key_id, secret), "s3", region, expires=int(expires)).add_auth(request)
print(request.url)
`;
  const r = await run("python3", [
    "-c",
    script,
    `${url.origin}${url.pathname}`,
    p.get("X-Amz-Date")!,
    keyId,
    secret,
    region,
    p.get("X-Amz-Expires")!,
  ]);
  assert.equal(r.code, 0, r.stderr);
  return new URL(r.stdout.trim()).searchParams.get("X-Amz-Signature")!;
}

/** Presses the button; returns the dispatch id and the workflow run id. */
async function pressBackup(
  e: E2E,
): Promise<{ dispatchId: string; runId: number }> {
  const r = await trigger(e.stack, { body: JSON.stringify({ reason: "e2e" }) });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const runId = r.body.workflow_run_id;
  assert.ok(e.gh.actRuns.has(runId), "the dispatch started act");
  assert.equal(e.gh.actRuns.get(runId)!.dispatchId, r.body.dispatch_id);
  return { dispatchId: r.body.dispatch_id, runId };
}

async function row(e: E2E, dispatchId: string): Promise<Json> {
  const [r] = await e.history.sql`
    select * from backup_history where dispatch_id = ${dispatchId}`;
  return r;
}

function context(e: E2E, runId: number): string {
  return `\n--- act log ---\n${
    e.gh.runLog(runId)
  }\n--- functions ---\n${e.stack.output()}`;
}

Deno.test(
  "e2e: trigger -> workflow -> success, the object in S3 has the reported hash",
  opts,
  async () => {
    const t0 = Date.now();
    const e = await startE2E({ vars: { BACKUP_S3_PREFIX: "prod/nightly" } });
    try {
      const { dispatchId, runId } = await pressBackup(e);
      const res = await e.gh.waitForRun(runId);
      assert.equal(res.conclusion, "success", context(e, runId));
      assert.equal(e.gh.runs.get(runId)?.conclusion, "success");

      const r = await row(e, dispatchId);
      assert.equal(r.status, "success", context(e, runId));
      assert.equal(r.failure_reason, null);
      assert.equal(r.outcome_source, "report");
      assert.equal(Number(r.workflow_run_id), runId);
      assert.equal(r.run_attempt, 1);
      assert.equal(r.trigger_source, "manual");
      assert.match(
        r.s3_key,
        new RegExp(`^prod/nightly/\\d{8}T\\d{6}Z_${dispatchId}\\.dump$`),
      );
      assert.match(r.sha256, /^[0-9a-f]{64}$/);
      assert.ok(r.started_at && r.finished_at);
      assert.deepEqual(r.progress, { phase: "uploaded" });

      const bytes = await getObject(e.bucket, r.s3_key);
      assert.ok(bytes, "the object exists");
      assert.equal(bytes.length, Number(r.size_bytes));
      assert.equal(await sha256hex(bytes), r.sha256);
      assert.deepEqual(await listKeys(e.bucket), [r.s3_key]);

      const [settings] = await e.history.sql`select * from backup_settings`;
      assert.equal(settings.last_success_s3_key, r.s3_key);

      // No secret in the workflow's log.
      for (
        const s of [TEST_WEBHOOK_SECRET.slice(6), S3_SECRET_KEY, e.src.url]
      ) {
        assert.ok(!res.log.includes(s), `secret in the act log: ${s}`);
      }
      console.log(
        `  success run: act ${res.durationMs} ms, whole test ${
          Date.now() - t0
        } ms`,
      );
    } finally {
      await e.close();
    }
  },
);

Deno.test(
  "e2e: in oidc mode, with no webhook secret anywhere, the run's own GitHub OIDC token carries every report to success",
  opts,
  async () => {
    const e = await startE2E({ reportAuth: "oidc" });
    try {
      assert.equal(e.act.secrets!.BACKUP_WEBHOOK_SECRET, undefined);
      const { dispatchId, runId } = await pressBackup(e);
      const res = await e.gh.waitForRun(runId);
      assert.equal(res.conclusion, "success", context(e, runId));
      const r = await row(e, dispatchId);
      assert.equal(r.status, "success", context(e, runId));
      assert.equal(r.outcome_source, "report");
      assert.equal(Number(r.workflow_run_id), runId);
      assert.deepEqual(r.progress, { phase: "uploaded" });
      // Every report asked GitHub for a token and carried no signature.
      const tokenCalls = e.gh.requests.filter((q) => q.path === "/oidc/token");
      const deliveries = await e.history.sql`
        select count(*)::int as n from backup_report_deliveries
        where dispatch_id = ${dispatchId}`;
      assert.ok(tokenCalls.length >= deliveries[0].n, context(e, runId));
      assert.ok(deliveries[0].n >= 3, "started, progress and succeeded");
      assert.ok(
        !/webhook-signature|oidc_/.test(e.stack.output()),
        e.stack.output(),
      );
    } finally {
      await e.close();
    }
  },
);

Deno.test(
  "e2e: pg_dump fails -> failed / step_failed, error_text names the dump step",
  opts,
  async () => {
    const e = await startE2E();
    const role = `wf_limited_${crypto.randomUUID().slice(0, 8)}`;
    try {
      // 1. Credentials the server rejects (the test cluster trusts loopback,
      //    so a wrong password alone would pass: use a role that does not exist).
      const bad = new URL(e.src.url);
      bad.username = "wf_no_such_role";
      bad.password = "wrong-password";
      e.act.secrets!.BACKUP_DATABASE_URL = bad.toString();
      let { dispatchId, runId } = await pressBackup(e);
      let res = await e.gh.waitForRun(runId);
      assert.equal(res.conclusion, "failure");
      let r = await row(e, dispatchId);
      assert.equal(r.status, "failed", context(e, runId));
      assert.equal(r.failure_reason, "step_failed");
      assert.equal(r.outcome_source, "report");
      assert.match(
        r.error_text,
        /^Step "Dump database" failed \(exit code 1\)/,
      );
      // Trust auth (scripts/pg_cluster.sh) or password auth: either refusal.
      assert.match(
        r.error_text,
        /role "wf_no_such_role" does not exist|password authentication failed for user "wf_no_such_role"/,
      );
      assert.ok(!r.error_text.includes("wrong-password"));
      assert.ok(!res.log.includes("wrong-password"), "password in the act log");
      assert.deepEqual(await listKeys(e.bucket), []);

      // 2. pg_dump itself fails: a role that may connect but not read a table.
      await e.src.sql.unsafe(
        `create role ${role} login password 'wf-limited-pw'`,
      );
      await e.src.sql.unsafe(`grant select on public.items to ${role}`);
      const limited = new URL(e.src.url);
      limited.username = role;
      limited.password = "wf-limited-pw";
      e.act.secrets!.BACKUP_DATABASE_URL = limited.toString();
      ({ dispatchId, runId } = await pressBackup(e));
      res = await e.gh.waitForRun(runId);
      r = await row(e, dispatchId);
      assert.equal(r.status, "failed", context(e, runId));
      assert.equal(r.failure_reason, "step_failed");
      assert.match(r.error_text, /Dump database/);
      assert.match(
        r.error_text,
        /pg_dump: error: .*permission denied for table secrets_of_admin/,
      );
      assert.deepEqual(await listKeys(e.bucket), []);
    } finally {
      await e.src.sql.unsafe(
        `drop owned by ${role}; drop role if exists ${role}`,
      ).catch(() => {});
      await e.close();
    }
  },
);

Deno.test(
  "e2e: upload fails (missing bucket) -> failed naming the streaming dump step and the S3 error, no progress",
  opts,
  async () => {
    const e = await startE2E({
      vars: { BACKUP_S3_BUCKET: "wf-bucket-that-does-not-exist" },
    });
    try {
      const { dispatchId, runId } = await pressBackup(e);
      await e.gh.waitForRun(runId);
      const r = await row(e, dispatchId);
      assert.equal(r.status, "failed", context(e, runId));
      assert.equal(r.failure_reason, "step_failed");
      // The custom format streams pg_dump into `aws s3 cp -` in the dump step.
      assert.match(
        r.error_text,
        /^Step "Dump database" failed \(exit code 1\)/,
      );
      assert.match(r.error_text, /NoSuchBucket/);
      assert.match(
        r.error_text,
        /Upload to s3:\/\/wf-bucket-that-does-not-exist\/backups\/\d{8}T\d{6}Z_[0-9a-f-]{36}\.dump failed \(see the error above\); nothing was stored\./,
      );
      assert.equal(r.progress, null);
      assert.equal(r.s3_key, null);
    } finally {
      await e.close();
    }
  },
);

Deno.test(
  "e2e: the upload breaks mid-stream -> failed, pg_dump stopped, no object and no pending multipart upload",
  opts,
  async () => {
    const faulty = startFaultyS3({ refuseParts: true });
    const e = await startE2E({
      vars: { BACKUP_S3_ENDPOINT_URL: faulty.url },
    });
    try {
      // ~13 MB of incompressible rows: more than the CLI's 8 MiB first part.
      await e.src.sql.unsafe(`
        create table public.noise as
          select g, decode(md5(random()::text) || md5(random()::text), 'hex') as b
            from generate_series(1, 400000) g`);
      const { dispatchId, runId } = await pressBackup(e);
      const res = await e.gh.waitForRun(runId);
      assert.equal(res.conclusion, "failure");
      assert.ok(faulty.refusedParts() >= 1, "an UploadPart was refused");
      const r = await row(e, dispatchId);
      assert.equal(r.status, "failed", context(e, runId));
      assert.equal(r.failure_reason, "step_failed");
      assert.match(
        r.error_text,
        /^Step "Dump database" failed \(exit code 1\)/,
      );
      assert.match(r.error_text, /AccessDenied/);
      assert.match(r.error_text, /nothing was stored\./);
      assert.equal(r.s3_key, null);
      assert.equal(r.sha256, null);
      assert.equal(r.progress, null);
      assert.deepEqual(await listKeys(e.bucket), []);
      assert.deepEqual(await pendingUploads(e.bucket), []);
      assert.equal(await dumpProcesses(e.src), 0);
    } finally {
      await e.close();
      await faulty.close();
    }
  },
);

Deno.test(
  "e2e: pg_dump dies mid-stream -> failed, and what the CLI stored of the truncated stream is removed",
  opts,
  async () => {
    const e = await startE2E();
    try {
      await e.src.sql.unsafe(`
        create table public.noise as
          select g, decode(md5(random()::text) || md5(random()::text), 'hex') as b
            from generate_series(1, 400000) g`);
      const { dispatchId, runId } = await pressBackup(e);
      // Kill pg_dump once it is streaming: its stdout closes, the CLI sees
      // EOF and completes an object of what it got.
      await waitFor(
        "pg_dump to stream",
        async () => {
          const rows = await e.src.sql`
          select pid from pg_stat_activity
           where datname = ${e.src.name} and application_name = 'github-backup'
             and query ilike 'copy%'`;
          return rows.length > 0;
        },
        60_000,
        20,
      );
      const pids = await dumpPids(e.src);
      assert.ok(pids.length > 0, "pg_dump is running");
      for (const pid of pids) Deno.kill(pid, "SIGKILL");
      const res = await e.gh.waitForRun(runId);
      assert.equal(res.conclusion, "failure");
      const r = await row(e, dispatchId);
      assert.equal(r.status, "failed", context(e, runId));
      assert.equal(r.failure_reason, "step_failed");
      assert.match(
        r.error_text,
        /^Step "Dump database" failed \(exit code 1\)/,
      );
      assert.match(
        r.error_text,
        /pg_dump failed \(see the error above\); nothing was stored\./,
      );
      assert.match(r.error_text, /Removed the incomplete object s3:\/\//);
      assert.equal(r.s3_key, null);
      assert.deepEqual(await listKeys(e.bucket), []);
    } finally {
      await e.close();
    }
  },
);

Deno.test(
  "e2e: BACKUP_VERIFY=restore restores the downloaded object and every table's rows equal the dump's snapshot",
  opts,
  async () => {
    const e = await startE2E({
      vars: { BACKUP_VERIFY: "restore" },
      secrets: {
        BACKUP_VERIFY_DATABASE_URL: Deno.env.get("TEST_DATABASE_URL")!,
      },
    });
    try {
      const { dispatchId, runId } = await pressBackup(e);
      const res = await e.gh.waitForRun(runId);
      assert.equal(res.conclusion, "success", context(e, runId));
      const r = await row(e, dispatchId);
      assert.equal(r.status, "success", context(e, runId));
      assert.deepEqual(r.verification, {
        mode: "restore",
        ok: true,
        tables: 2,
        rows: 2000,
        mismatches: [],
      });
      assert.ok(r.verified_at instanceof Date);
      assert.ok(r.verified_at >= r.finished_at);
      // The version job ran first (act runs both jobs; in host mode it
      // starts no service container), and the secret URL was the server.
      const [{ server_version_num }] = await e.src
        .sql`show server_version_num`;
      const major = Math.floor(Number(server_version_num) / 10000);
      assert.ok(
        res.log.includes(
          `The source is PostgreSQL ${major}: the scratch server is postgres:${major}.`,
        ),
        context(e, runId),
      );
      // The scratch database is gone.
      const left = await e.history.sql`
        select datname from pg_database where datname like 'backup_verify_%'`;
      assert.equal(left.length, 0);
    } finally {
      await e.close();
    }
  },
);

Deno.test(
  "e2e: a tampered object fails restore verification; the run stays success and backup-status says so",
  opts,
  async () => {
    // What the bucket will answer instead of the stored object: a valid
    // dump of the same database with half the items.
    const other = await sourceDatabase();
    await other.sql`delete from public.items where id > 1000`;
    const dumped = await new Deno.Command("pg_dump", {
      args: ["--format=custom", `--dbname=${other.url}`],
      stdout: "piped",
    }).output();
    await other.close();
    assert.equal(dumped.code, 0);
    const faulty = startFaultyS3({ tamperedGet: dumped.stdout });
    const e = await startE2E({
      vars: { BACKUP_VERIFY: "restore", BACKUP_S3_ENDPOINT_URL: faulty.url },
      secrets: {
        BACKUP_VERIFY_DATABASE_URL: Deno.env.get("TEST_DATABASE_URL")!,
      },
    });
    try {
      const { dispatchId, runId } = await pressBackup(e);
      const res = await e.gh.waitForRun(runId);
      assert.equal(res.conclusion, "success", context(e, runId));
      assert.ok(faulty.tamperedGets() >= 1);
      const r = await row(e, dispatchId);
      assert.equal(r.status, "success", context(e, runId));
      assert.deepEqual(r.verification, {
        mode: "restore",
        ok: false,
        tables: 2,
        rows: 1000,
        mismatches: [{ table: "public items", expected: 2000, actual: 1000 }],
        error:
          `the stored object has ${dumped.stdout.length} bytes, the dump had ${
            Number(r.size_bytes)
          }; row counts differ from the dump's snapshot`,
      });
      assert.ok(r.verified_at instanceof Date);
      // The status API says so, loudly, and the run is still a success.
      const status = await fetch(
        `${e.stack.fn("backup-status")}?dispatch_id=${dispatchId}`,
        { headers: { authorization: `Bearer ${await userToken(ADMIN_ID)}` } },
      );
      assert.equal(status.status, 200);
      const { run } = await status.json();
      assert.equal(run.status, "success");
      assert.equal(run.verification_failed, true);
      assert.deepEqual(run.verification, r.verification);
    } finally {
      await e.close();
      await faulty.close();
    }
  },
);

Deno.test(
  "e2e: retention prunes the old objects beyond retention_keep, never a foreign key, and the rows get pruned_at",
  opts,
  async () => {
    const e = await startE2E();
    try {
      await e.history.sql`
        update backup_settings set retention_days = 7, retention_keep = 3`;
      // Four old successes (30..33 days), their objects in the bucket; with
      // the new backup, the newest three successes are kept.
      const old: string[] = [];
      for (let n = 0; n < 4; n++) {
        const id = crypto.randomUUID();
        const key = `backups/2026100${n}T000000Z_${id}.dump`;
        await insertRun(e.history.sql, {
          ...SUCCESS,
          dispatch_id: id,
          s3_key: key,
        }, {
          createdAgo: 86_400 * (33 - n),
          startedAgo: 86_400 * (33 - n),
          finishedAgo: 86_400 * (33 - n),
        });
        old.push(key);
      }
      // Not this project's: no row, a row in another folder, a name that
      // is not its run's.
      const otherId = crypto.randomUUID();
      const foreign = [
        "backups/hand-made.dump",
        `elsewhere/20261001T000000Z_${otherId}.dump`,
        "backups/20261001T000000Z_not-its-id.dump",
      ];
      await insertRun(e.history.sql, {
        ...SUCCESS,
        dispatch_id: otherId,
        s3_key: foreign[1],
      }, {
        createdAgo: 86_400 * 40,
        startedAgo: 86_400 * 40,
        finishedAgo: 86_400 * 40,
      });
      await insertRun(e.history.sql, { ...SUCCESS, s3_key: foreign[2] }, {
        createdAgo: 86_400 * 40,
        startedAgo: 86_400 * 40,
        finishedAgo: 86_400 * 40,
      });
      const file = await Deno.makeTempFile();
      await Deno.writeTextFile(file, "old backup");
      for (const key of [...old, ...foreign]) {
        const put = await aws(["s3", "cp", file, `s3://${e.bucket}/${key}`]);
        assert.equal(put.code, 0, put.stderr);
      }
      await Deno.remove(file);

      const { dispatchId, runId } = await pressBackup(e);
      const res = await e.gh.waitForRun(runId);
      assert.equal(res.conclusion, "success", context(e, runId));
      const r = await row(e, dispatchId);
      assert.equal(r.status, "success");
      // Kept: the new one, and the two newest old ones (3 = retention_keep);
      // old[0] and old[1] (the two oldest) are pruned; foreign keys stay.
      assert.deepEqual(
        (await listKeys(e.bucket)).sort(),
        [r.s3_key, old[2], old[3], ...foreign].sort(),
      );
      const pruned = await e.history.sql`
        select s3_key from backup_history where pruned_at is not null order by s3_key`;
      assert.deepEqual(pruned.map((p) => p.s3_key), [old[0], old[1]]);
      assert.match(res.log, /Pruned 2 objects; reported\./);
    } finally {
      await e.close();
    }
  },
);

/**
 * Blocks pg_dump: a transaction holding ACCESS EXCLUSIVE on public.items
 * until release() — pg_dump waits for its ACCESS SHARE lock.
 */
function holdLock(
  src: SourceDatabase,
): { locked: Promise<void>; release: () => void; done: Promise<unknown> } {
  let release!: () => void;
  const released = new Promise<void>((r) => release = r);
  let locked!: () => void;
  const lockedP = new Promise<void>((r) => locked = r);
  const done = src.sql.begin(async (tx) => {
    await tx`lock table public.items in access exclusive mode`;
    locked();
    await released;
  });
  return { locked: lockedP, release, done };
}

async function waitForBlockedDump(src: SourceDatabase): Promise<void> {
  await waitFor("pg_dump waiting for its lock", async () => {
    const rows = await src.sql`
      select 1 from pg_stat_activity
       where datname = ${src.name} and application_name = 'github-backup'
         and wait_event_type = 'Lock'`;
    return rows.length > 0;
  }, 30_000);
}

/** pg_dump processes (on this machine) dumping the source database. */
async function dumpPids(src: SourceDatabase): Promise<number[]> {
  const pids: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmd = await Deno.readTextFile(`/proc/${entry.name}/cmdline`);
      if (/(^|\/)pg_dump\0/.test(cmd) && cmd.includes(src.name)) {
        pids.push(Number(entry.name));
      }
    } catch { /* gone meanwhile */ }
  }
  return pids;
}

async function dumpProcesses(src: SourceDatabase): Promise<number> {
  return (await dumpPids(src)).length;
}

Deno.test(
  "e2e: cancelled mid-dump (SIGINT) -> the final step reports cancelled",
  opts,
  async () => {
    const e = await startE2E();
    const lock = holdLock(e.src);
    try {
      await lock.locked;
      const { dispatchId, runId } = await pressBackup(e);
      await waitForBlockedDump(e.src);
      assert.equal((await row(e, dispatchId)).status, "in_progress");

      await e.gh.cancel(runId, "SIGINT");
      const res = await e.gh.waitForRun(runId);
      assert.equal(res.conclusion, "cancelled");
      assert.equal(e.gh.runs.get(runId)?.conclusion, "cancelled");
      assert.match(res.log, /Report outcome/);

      const r = await row(e, dispatchId);
      assert.equal(r.status, "failed", context(e, runId));
      assert.equal(r.failure_reason, "cancelled");
      assert.equal(r.outcome_source, "report");
      assert.match(r.error_text, /cancelled.*"Dump database"/s);
      // act killed the step's whole process group: no pg_dump left behind.
      // (Its server backend stays until the lock is released: PostgreSQL does
      // not notice a dead client while the backend waits for a lock.)
      await waitFor(
        "pg_dump to exit",
        async () => (await dumpProcesses(e.src)) === 0,
        10_000,
      );
      assert.deepEqual(await listKeys(e.bucket), []);
    } finally {
      lock.release();
      await lock.done.catch(() => {});
      await e.close();
    }
  },
);

Deno.test(
  "e2e: cancelled during Verify (SIGINT), after the upload -> success with the object, the verdict saying the verification did not finish",
  opts,
  async () => {
    // A scratch server that accepts connections and never answers: the
    // Verify step waits on it (PGCONNECT_TIMEOUT) until it is cancelled.
    const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const held: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const conn of silent) held.push(conn);
    })().catch(() => {});
    const e = await startE2E({
      vars: { BACKUP_VERIFY: "restore" },
      secrets: {
        BACKUP_VERIFY_DATABASE_URL:
          `postgresql://postgres@127.0.0.1:${silent.addr.port}/postgres`,
      },
    });
    try {
      const { dispatchId, runId } = await pressBackup(e);
      await waitFor(
        "the Verify step to connect",
        () => held.length > 0,
        60_000,
      );
      const stored = await listKeys(e.bucket);
      assert.equal(stored.length, 1, "uploaded before Verify");

      await e.gh.cancel(runId, "SIGINT");
      const res = await e.gh.waitForRun(runId);
      assert.equal(res.conclusion, "cancelled");
      const r = await row(e, dispatchId);
      assert.equal(r.status, "success", context(e, runId));
      assert.equal(r.outcome_source, "report");
      assert.equal(r.s3_key, stored[0]);
      const bytes = await getObject(e.bucket, r.s3_key);
      assert.ok(bytes);
      assert.equal(await sha256hex(bytes), r.sha256);
      assert.deepEqual(r.verification, {
        mode: "restore",
        ok: false,
        tables: null,
        rows: null,
        mismatches: [],
        error: "the verification did not finish: the run was cancelled",
      });
      // Retention runs only after a success of the job: not this time.
      assert.doesNotMatch(res.log, /Nothing to prune|Pruned \d+ objects/);
    } finally {
      await e.close();
      silent.close();
      for (const c of held) c.close();
      await accepting;
    }
  },
);

Deno.test(
  "e2e: runner lost mid-dump (SIGKILL) -> no report; reconciliation ends the row from GitHub",
  opts,
  async () => {
    const e = await startE2E();
    const lock = holdLock(e.src);
    try {
      await lock.locked;
      const { dispatchId, runId } = await pressBackup(e);
      await waitForBlockedDump(e.src);

      await e.gh.cancel(runId, "SIGKILL", "cancelled");
      const res = await e.gh.waitForRun(runId);
      assert.equal(res.signal, "SIGKILL");
      assert.doesNotMatch(
        res.log,
        /Run Main Report outcome/,
        "nothing runs after SIGKILL",
      );
      await waitFor(
        "pg_dump to exit",
        async () => (await dumpProcesses(e.src)) === 0,
        10_000,
      );

      // The workflow could not report: the row is still in progress...
      assert.equal((await row(e, dispatchId)).status, "in_progress");
      assert.deepEqual(e.gh.runs.get(runId)?.status, "completed");

      // ...until the sweep asks GitHub (no grace period for the report here).
      await e.history.sql`update backup_settings set report_grace_seconds = 0`;
      const body = JSON.stringify({ sweep: true });
      const sweep = await fetch(e.stack.fn("reconcile-backups"), {
        method: "POST",
        headers: await webhookHeaders(body),
        body,
      });
      assert.equal(sweep.status, 200, await sweep.clone().text());
      await sweep.body?.cancel();
      const r = await row(e, dispatchId);
      assert.equal(r.status, "failed", context(e, runId));
      assert.equal(r.failure_reason, "cancelled");
      assert.equal(r.outcome_source, "github");
    } finally {
      lock.release();
      await lock.done.catch(() => {});
      await e.close();
    }
  },
);

Deno.test(
  "e2e: backup-status gives an admin a 5-minute presigned link whose bytes hash to the recorded sha256; non-admins and unconfigured functions get none",
  opts,
  async () => {
    const e = await startE2E({ downloads: true });
    try {
      const { dispatchId, runId } = await pressBackup(e);
      const res = await e.gh.waitForRun(runId);
      assert.equal(res.conclusion, "success", context(e, runId));
      const r = await row(e, dispatchId);
      assert.equal(r.status, "success", context(e, runId));

      const before = Date.now();
      const answer = await statusOf(e.stack, dispatchId);
      assert.equal(answer.status, 200, answer.text);
      const link = answer.body.run.download_url;
      assert.equal(typeof link, "string", answer.text);
      const url = new URL(link);
      assert.equal(
        `${url.origin}${url.pathname}`,
        `${s3Endpoint()}/${e.bucket}/${r.s3_key}`,
      );
      assert.deepEqual([...url.searchParams.keys()], [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
      ]);
      assert.equal(url.searchParams.get("X-Amz-Expires"), "300");
      assert.equal(url.searchParams.get("X-Amz-SignedHeaders"), "host");
      assert.match(
        url.searchParams.get("X-Amz-Credential")!,
        new RegExp(`^${READ_KEY_ID}/\\d{8}/us-east-1/s3/aws4_request$`),
      );
      const signedAt = Date.parse(
        url.searchParams.get("X-Amz-Date")!.replace(
          /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/,
          "$1-$2-$3T$4:$5:$6Z",
        ),
      );
      assert.ok(
        signedAt >= before - 2000 && signedAt <= Date.now() + 1000,
        `signed now, not earlier: ${url.searchParams.get("X-Amz-Date")}`,
      );
      assert.equal(
        url.searchParams.get("X-Amz-Signature"),
        await botocoreSignature(url, READ_SECRET),
        "the AWS SDK signs the same request identically",
      );
      assert.notEqual(
        url.searchParams.get("X-Amz-Signature"),
        await botocoreSignature(url, READ_SECRET + "x"),
      );

      // The link itself, fetched from S3 (moto) as a browser would.
      const got = await fetch(link);
      assert.equal(got.status, 200);
      const bytes = new Uint8Array(await got.arrayBuffer());
      assert.equal(bytes.length, Number(r.size_bytes));
      assert.equal(await sha256hex(bytes), r.sha256);

      // The history carries a link for the run too.
      const page = await fetchChecked(
        `${e.stack.fn("backup-status")}?limit=5`,
        {
          headers: { authorization: `Bearer ${await userToken(ADMIN_ID)}` },
        },
        [READ_SECRET],
      );
      assert.equal(page.status, 200);
      assert.match(page.body.runs[0].download_url, /X-Amz-Signature=/);

      // A non-admin gets no run at all, so no link.
      const other = await statusOf(e.stack, dispatchId, NON_ADMIN_ID);
      assert.equal(other.status, 403);
      assert.equal(other.body.error.code, "not_admin");
      assert.ok(!other.text.includes("X-Amz"), other.text);

      // The same history served without the secrets: the member is absent.
      const plain = await startStack({
        databaseUrl: e.history.url,
        env: { BACKUP_REPORT_AUTH: "webhook" },
      });
      try {
        const without = await statusOf(plain, dispatchId);
        assert.equal(without.status, 200);
        assert.equal(without.body.run.status, "success");
        assert.ok(!("download_url" in without.body.run), without.text);
        assert.equal(
          without.headers.get("etag"),
          answer.headers.get("etag"),
          "the link is left out of the ETag",
        );
      } finally {
        await plain.close();
      }
      assert.ok(!e.stack.output().includes(READ_SECRET), "never logged");
    } finally {
      await e.close();
    }
  },
);

Deno.test(
  "e2e: a scheduled run registers, backs up and reports success (trigger_source=schedule)",
  opts,
  async () => {
    const e = await startE2E();
    try {
      const runId = await e.gh.startScheduledRun();
      const res = await e.gh.waitForRun(runId);
      assert.equal(res.conclusion, "success", context(e, runId));
      const [r] = await e.history.sql`
      select * from backup_history where workflow_run_id = ${runId}`;
      assert.ok(r, "a row was registered for the scheduled run");
      assert.equal(r.trigger_source, "schedule");
      assert.equal(r.triggered_by, null);
      assert.equal(r.status, "success");
      assert.equal(r.outcome_source, "report");
      assert.match(
        r.s3_key,
        new RegExp(`^backups/\\d{8}T\\d{6}Z_${r.dispatch_id}\\.dump$`),
      );
      const bytes = await getObject(e.bucket, r.s3_key);
      assert.ok(bytes);
      assert.equal(await sha256hex(bytes), r.sha256);
      assert.equal(bytes.length, Number(r.size_bytes));
    } finally {
      await e.close();
    }
  },
);

Deno.test({
  name:
    "e2e: the dump step's timeout-minutes -> failed, 'timed out' (WORKFLOW_E2E_SLOW=1, ~65 s)",
  ...opts,
  ignore: SKIP || !SLOW,
  async fn() {
    const e = await startE2E({ vars: { BACKUP_DUMP_TIMEOUT_MINUTES: "1" } });
    const lock = holdLock(e.src);
    try {
      await lock.locked;
      const { dispatchId, runId } = await pressBackup(e);
      const res = await e.gh.waitForRun(runId, 150_000);
      assert.equal(res.conclusion, "failure");
      const r = await row(e, dispatchId);
      assert.equal(r.status, "failed", context(e, runId));
      assert.equal(r.failure_reason, "step_failed");
      assert.match(
        r.error_text,
        /Step "Dump database" timed out after 1 minutes/,
      );
    } finally {
      lock.release();
      await lock.done.catch(() => {});
      await e.close();
    }
  },
});
