// The demo page (web/demo/) in headless Chromium against the real functions
// and a real PostgreSQL: it reads its settings from /dev/session, shows the
// history, presses "Back up now", and follows the run live (long-polls) as
// the workflow's signed reports arrive, without a reload. The page is served
// from its own origin (tests/support/browser.ts), so every call is a real
// cross-origin request through the functions' CORS. Takes a screenshot
// (docs/demo.png with BACKUP_UPDATE_SCREENSHOT=1).

import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix
import type { Page } from "npm:playwright-core@1.65.1";
import { freshDatabase, type Sql } from "./support/db.ts";
import {
  ADMIN_ID,
  freePort,
  NON_ADMIN_ID,
  report,
  type Stack,
  startStack,
  trigger,
  userToken,
} from "./support/stack.ts";
import {
  runDetails,
  type ScriptedGitHub,
  startScriptedGitHub,
} from "./support/github_script.ts";
import {
  aws,
  createBucket,
  s3Endpoint,
  sha256hex,
} from "./support/workflow_harness.ts";
import {
  type Browser,
  chromiumMissing,
  launchChromium,
  serveWeb,
  type WebServer,
} from "./support/browser.ts";

// The README's screenshot is refreshed only on request
// (BACKUP_UPDATE_SCREENSHOT=1); otherwise it goes to a temporary file, so a
// test run leaves the work tree clean.
const SCREENSHOT = Deno.env.get("BACKUP_UPDATE_SCREENSHOT") === "1"
  ? new URL("../docs/demo.png", import.meta.url)
  : new URL(
    `file://${Deno.makeTempDirSync({ prefix: "backup-demo-" })}/demo.png`,
  );
const SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const SERVICE_KEY = "service-role-key-for-the-demo-tests-0123456789";
const MiB = 1024 * 1024;

interface Ctx {
  stack: Stack;
  gh: ScriptedGitHub;
  sql: Sql;
  web: WebServer;
  browser: Browser;
  adminToken: string;
}

/** Waits until `selector`'s text contains `text` (in the page). */
async function waitText(
  page: Page,
  selector: string,
  text: string,
  timeout = 10_000,
): Promise<void> {
  const sel = JSON.stringify(selector);
  const want = JSON.stringify(text);
  try {
    await page.waitForFunction(
      `(() => { const e = document.querySelector(${sel});
        return !!e && !e.closest("[hidden]") && e.textContent.includes(${want}); })()`,
      undefined,
      { timeout, polling: 50 },
    );
  } catch (error) {
    const now = await page.locator(selector).first().textContent().catch(
      () => null,
    );
    throw new Error(
      `${selector} never showed ${want} within ${timeout} ms (it shows ${
        JSON.stringify(now)
      }): ${error}`,
    );
  }
}

async function text(page: Page, selector: string): Promise<string> {
  return ((await page.locator(selector).first().textContent()) ?? "").trim();
}

/** The workflow's signed report for a run; asserts it was applied. */
async function send(
  ctx: Ctx,
  dispatchId: string,
  event: string,
  fields: Record<string, unknown> = {},
): Promise<void> {
  const [row] = await ctx.sql`
    select workflow_run_id::float8 as id from backup_history
     where dispatch_id = ${dispatchId}`;
  const r = await report(ctx.stack, {
    event,
    dispatch_id: dispatchId,
    workflow_run_id: row.id,
    run_attempt: 1,
    ...fields,
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.changed, true, JSON.stringify(r.body));
}

/** A realistic history: two weeks of nightly backups, two failures. */
async function seed(sql: Sql): Promise<number> {
  const rows: Record<string, string | number | null>[] = [];
  let runId = 8_100_000;
  for (let day = 12; day >= 1; day--) {
    const size = Math.round((640 + (12 - day) * 7.5 + (day % 3) * 4) * MiB);
    const seconds = 150 + (12 - day) * 4 + (day % 4) * 9;
    const base = {
      dispatch_id: crypto.randomUUID(),
      trigger_source: "schedule",
      workflow_run_id: ++runId,
      run_url: `https://github.com/acme/app/actions/runs/${runId}`,
      created_at: `${day * 24 - 3} hours`,
      started_at: `${day * 24 - 3} hours -20 seconds`,
      finished_at: `${day * 24 - 3} hours -${20 + seconds} seconds`,
    };
    if (day === 9) {
      rows.push({
        ...base,
        status: "failed",
        failure_reason: "step_failed",
        outcome_source: "report",
        finished_at: `${day * 24 - 3} hours -61 seconds`,
        error_text:
          'pg_dump: error: connection to server at "db.example.supabase.co" ' +
          "failed: FATAL: remaining connection slots are reserved for " +
          "non-replication superuser connections\nError: Process completed " +
          "with exit code 1.",
      });
      continue;
    }
    if (day === 5) {
      rows.push({
        ...base,
        trigger_source: "manual",
        triggered_by: ADMIN_ID,
        reason: "before the pricing migration",
        status: "failed",
        failure_reason: "dispatch_failed",
        outcome_source: "dispatch",
        workflow_run_id: null,
        run_url: null,
        started_at: null,
        finished_at: `${day * 24 - 3} hours -2 seconds`,
        error_text:
          "GitHub answered 422: No ref found for: release/2026-11 (the workflow was not started)",
      });
      continue;
    }
    rows.push({
      ...base,
      ...(day === 3
        ? {
          trigger_source: "manual",
          triggered_by: ADMIN_ID,
          reason: "before deploying v2.4",
        }
        : {}),
      status: "success",
      outcome_source: "report",
      s3_key: `backups/2026/11/${base.dispatch_id}.dump`,
      size_bytes: size,
      sha256: SHA,
    });
  }
  for (const r of rows) {
    const ago = (v: string | number | null | undefined) =>
      v === null || v === undefined ? null : String(v);
    await sql`
      insert into backup_history
        (dispatch_id, status, failure_reason, outcome_source, trigger_source,
         triggered_by, reason, workflow_run_id, run_url, s3_key, size_bytes,
         sha256, error_text, created_at, started_at, finished_at)
      values (${r.dispatch_id}, ${r.status}, ${r.failure_reason ?? null},
              ${r.outcome_source}, ${r.trigger_source}, ${
      r.triggered_by ?? null
    }, ${r.reason ?? null}, ${r.workflow_run_id}, ${r.run_url},
              ${r.s3_key ?? null}, ${r.size_bytes ?? null}, ${r.sha256 ?? null},
              ${r.error_text ?? null},
              now() - ${ago(r.created_at)}::interval,
              now() - ${ago(r.started_at)}::interval,
              now() - ${ago(r.finished_at)}::interval)`;
  }
  return rows.length;
}

/** A page that records its errors, reloads and status requests. */
async function openPage(ctx: Ctx): Promise<{
  page: Page;
  errors: string[];
  navigations: () => number;
  statusRequests: { url: string; at: number }[];
  close: () => Promise<void>;
}> {
  const context = await ctx.browser.newContext({
    viewport: { width: 1000, height: 700 },
    locale: "en-US",
    timezoneId: "UTC",
  });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    // A failed request's console line is expected where the test causes it.
    if (m.type() === "error" && !/Failed to load resource/.test(m.text())) {
      errors.push(`console: ${m.text()}`);
    }
  });
  let navigations = 0;
  page.on("framenavigated", (f) => {
    if (f === page.mainFrame()) navigations++;
  });
  const statusRequests: { url: string; at: number }[] = [];
  page.on("request", (r) => {
    if (r.url().includes("/functions/v1/backup-status")) {
      statusRequests.push({ url: r.url(), at: performance.now() });
    }
  });
  return {
    page,
    errors,
    navigations: () => navigations,
    statusRequests,
    close: () => context.close(),
  };
}

Deno.test({
  name: "the demo page in headless Chromium",
  ignore: chromiumMissing() !== null,
  async fn(t) {
    const db = await freshDatabase();
    const gh = startScriptedGitHub();
    // trigger-backup asks GitHub about a running backup before refusing a
    // second one: the run is still going.
    gh.fallback = (req) => {
      const run = /\/actions\/runs\/(\d+)$/.exec(req.path);
      if (req.method === "GET" && run) {
        return {
          status: 200,
          body: {
            id: Number(run[1]),
            run_attempt: 1,
            status: "in_progress",
            conclusion: null,
            html_url: `https://github.com/acme/app/actions/runs/${run[1]}`,
          },
        };
      }
      return runDetails();
    };
    const web = serveWeb();
    // The alert destination: a loopback Slack stand-in that takes anything.
    const alerted: string[] = [];
    const hookPort = freePort();
    const hook = Deno.serve(
      { hostname: "127.0.0.1", port: hookPort, onListen() {} },
      async (req) => {
        alerted.push(await req.text());
        return new Response("ok");
      },
    );
    let stack: Stack | undefined;
    let browser: Browser | undefined;
    try {
      stack = await startStack({
        databaseUrl: db.url,
        githubApiUrl: gh.url,
        env: {
          ALLOWED_ORIGINS: web.url,
          SUPABASE_SERVICE_ROLE_KEY: SERVICE_KEY,
          BACKUP_ALERT_WEBHOOK_URL: `http://127.0.0.1:${hookPort}/services/x`,
        },
      });
      await db.sql`insert into backup_admins (user_id) values (${ADMIN_ID})`;
      const seeded = await seed(db.sql);
      // The sweeper ran a minute ago, as pg_cron would have it: healthy, so
      // no warning until a step says otherwise.
      await db.sql`
        update backup_settings set last_sweep_at = now() - interval '1 minute'`;
      const adminToken = await userToken(ADMIN_ID);
      web.session = { supabase_url: stack.url, access_token: adminToken };
      browser = await launchChromium();
      const ctx: Ctx = { stack, gh, sql: db.sql, web, browser, adminToken };
      const main = await openPage(ctx);
      const { page } = main;

      await t.step(
        "loads its settings from /dev/session and shows the history with badges, failure reasons, sizes and the chart",
        async () => {
          await page.goto(web.url + "/");
          await page.waitForSelector("body[data-ready]");
          await page.waitForFunction(
            `document.querySelectorAll("#history tbody tr[data-dispatch-id]").length === ${seeded}`,
            undefined,
            { timeout: 10_000 },
          );
          assert.ok(web.requests.includes("/dev/session"));
          assert.match(await text(page, "#connection"), /local dev session/);
          assert.equal(
            await page.locator('#history tbody .badge[data-status="success"]')
              .count(),
            10,
          );
          const failed = page.locator(
            '#history tbody tr[data-status="failed"]',
          );
          assert.equal(await failed.count(), 2);
          const details = await failed.first().locator("td.details")
            .textContent();
          assert.match(details ?? "", /GitHub did not start it/);
          assert.match(
            (await failed.first().locator("td.details").getAttribute(
              "title",
            )) ?? "",
            /No ref found/,
            "the error text on hover",
          );
          const sizes = await page.locator("#history tbody td.num")
            .allTextContents();
          assert.ok(
            sizes.some((s) => /^\d+(\.\d+)? MiB$/.test(s)),
            sizes.join(),
          );
          assert.ok(sizes.some((s) => /^\d+ min \d+ s$/.test(s)), sizes.join());
          assert.equal(await page.locator("#chart svg rect").count(), 10);
          assert.equal(await page.locator("#chart svg polyline").count(), 1);
          assert.match(await text(page, "#live-empty"), /No backup is running/);
          assert.ok(await page.locator("#sweeper").isHidden(), "healthy");
          assert.equal(
            await page.locator('#history a[href^="https://github.com/"]')
              .count(),
            11,
          );
        },
      );

      await t.step(
        "says “already running” (409) with a link to the running backup, then follows that one",
        async () => {
          // Another admin presses the button elsewhere.
          const other = await trigger(stack!);
          assert.equal(other.status, 202, JSON.stringify(other.body));
          const otherId: string = other.body.dispatch_id;
          await page.click("#backup-now");
          await waitText(page, "#message", "already running");
          const link = page.locator("#message a[data-dispatch-id]");
          assert.equal(await link.getAttribute("data-dispatch-id"), otherId);
          await link.click();
          await page.waitForSelector(
            `#live-run[data-dispatch-id="${otherId}"]`,
            { timeout: 5000 },
          );
          await waitText(page, "#live-status", "In progress");
          await send(ctx, otherId, "started");
          await send(ctx, otherId, "succeeded", {
            s3_key: `backups/${otherId}.dump`,
            size_bytes: 745 * MiB,
            sha256: SHA,
          });
          await waitText(page, "#live-status", "Success");
          await waitText(page, "#message", "succeeded");
        },
      );

      await t.step(
        "Back up now: the live status goes queued → running → dumped → uploaded → success without a reload",
        async () => {
          const navigations = main.navigations();
          const before = new Set(
            (await db.sql`select dispatch_id::text as id from backup_history`)
              .map((r) => r.id),
          );
          await page.click("#backup-now");
          await waitText(page, "#message", "started");
          await waitText(page, "#live-status", "In progress");
          await waitText(page, "#live-phase", "queued");
          const id = await page.locator("#live-run").getAttribute(
            "data-dispatch-id",
          );
          assert.ok(id && !before.has(id), `a new run: ${id}`);
          const [row] = await db.sql`
            select status, trigger_source, reason from backup_history
             where dispatch_id = ${id}`;
          assert.deepEqual({ ...row }, {
            status: "in_progress",
            trigger_source: "manual",
            reason: "Back up now (demo page)",
          });
          await waitText(page, `#run-${id} .badge`, "In progress");

          const watchStart = performance.now();
          const latencies: number[] = [];
          const step = async (
            event: string,
            fields: Record<string, unknown>,
            selector: string,
            shows: string,
          ) => {
            await new Promise((r) => setTimeout(r, 300));
            const sent = performance.now();
            await send(ctx, id, event, fields);
            await waitText(page, selector, shows);
            latencies.push(performance.now() - sent);
          };
          await step("started", {}, "#live-phase", "running");
          assert.match(await text(page, "#live-elapsed"), /^\d+ m?s elapsed$/);
          await step(
            "progress",
            { progress: { phase: "dumped" } },
            "#live-phase",
            "dumped",
          );
          await step(
            "progress",
            { progress: { phase: "uploaded", bytes: 731 * MiB } },
            "#live-phase",
            "uploaded",
          );
          await step(
            "succeeded",
            {
              s3_key: `backups/2026/11/${id}.dump`,
              size_bytes: 731 * MiB,
              sha256: SHA,
            },
            "#live-status",
            "Success",
          );
          const watchSeconds = (performance.now() - watchStart) / 1000;
          console.log(
            `page updated ${
              latencies.map((ms) => ms.toFixed(0)).join(", ")
            } ms after each report`,
          );
          assert.equal(await text(page, "#live-phase"), "success");
          await waitText(page, `#run-${id} .badge`, "Success");
          await waitText(page, `#run-${id}`, "731 MiB");
          await waitText(page, "#message", "succeeded: 731 MiB");
          assert.equal(
            await page.locator("#live-steps li.done").count(),
            5,
            "every step done",
          );
          assert.equal(main.navigations(), navigations, "no reload");

          // No polling storm: at most about one status request a second
          // while the run was followed, and none once it was final.
          const watched = main.statusRequests.filter((r) =>
            r.url.includes(`dispatch_id=${id}`)
          );
          console.log(
            `${watched.length} long-poll requests over ${
              watchSeconds.toFixed(1)
            } s`,
          );
          // One answer per state (queued, running, dumped, uploaded,
          // success): each long-poll waited for the next change.
          assert.ok(
            watched.length <= 7,
            `${watched.length} requests in ${watchSeconds.toFixed(1)} s`,
          );
          assert.ok(watched.every((r) => r.url.includes("wait=25")));
          const count = main.statusRequests.length;
          await new Promise((r) => setTimeout(r, 1500));
          assert.equal(
            main.statusRequests.filter((r) =>
              r.url.includes(`dispatch_id=${id}`)
            ).length,
            watched.length,
            "the watch stopped at success",
          );
          assert.ok(main.statusRequests.length - count <= 1);

          await Deno.mkdir(new URL(".", SCREENSHOT), { recursive: true });
          await page.evaluate("window.scrollTo(0, 0)");
          await page.screenshot({ path: SCREENSHOT.pathname });
          const shot = await Deno.stat(SCREENSHOT);
          assert.ok(
            shot.size > 10_000,
            `a real screenshot (${shot.size} bytes)`,
          );
          assert.deepEqual(main.errors, []);
        },
      );

      await t.step(
        "shows 502 when GitHub refuses the dispatch",
        async () => {
          gh.script({
            status: 422,
            body: { message: "No ref found for: main" },
          });
          await page.click("#backup-now");
          await waitText(page, "#message", "GitHub did not start");
          await waitText(page, "#message", "502 dispatch_failed");
          await page.waitForFunction(
            `document.querySelectorAll('#history tbody tr[data-status="failed"]').length === 3`,
            undefined,
            { timeout: 10_000 },
          );
          const refused = page.locator(
            '#history tbody tr[data-status="failed"]',
          )
            .first();
          assert.match(
            (await refused.textContent()) ?? "",
            /GitHub did not start it/,
          );
        },
      );

      await t.step(
        "warns when the sweeper has not run for 4 minutes, with the database's problem and the fix, and not once it runs",
        async () => {
          assert.ok(await page.locator("#sweeper").isHidden());
          const problem =
            "pg_net is not enabled; Vault secret backup_service_key is not set";
          await db.sql`
            update backup_settings
               set last_sweep_at = now() - interval '4 minutes',
                   sweep_problem = ${problem}`;
          await page.click("#refresh");
          await waitText(page, "#sweeper", "The sweeper is not running");
          assert.match(await text(page, "#sweeper-last"), /\(4 min ago\)\.$/);
          assert.equal(await text(page, "#sweeper-problem-text"), problem);
          const warning = await text(page, "#sweeper");
          for (
            const fix of [
              "Database → Extensions",
              "create extension pg_net with schema extensions;",
              "select public.backup_schedule_sweep();",
            ]
          ) {
            assert.ok(warning.includes(fix), `${fix} in: ${warning}`);
          }
          assert.equal(
            await text(page, "#sweeper-secrets"),
            `select vault.create_secret('${
              stack!.url
            }/functions/v1', 'backup_functions_url');\n` +
              "select vault.create_secret('<secret key>', 'backup_service_key');",
          );

          // Never run, and no problem recorded: the warning without one.
          await db.sql`
            update backup_settings
               set last_sweep_at = null, sweep_problem = null`;
          await page.click("#refresh");
          await waitText(page, "#sweeper-last", "It has never run.");
          assert.ok(await page.locator("#sweeper-problem").isHidden());

          // reconcile-backups runs (as pg_cron would call it): healthy again.
          const swept = await fetch(stack!.fn("reconcile-backups"), {
            method: "POST",
            headers: { authorization: `Bearer ${SERVICE_KEY}` },
            body: "{}",
          });
          assert.equal(swept.status, 200, await swept.text());
          await page.click("#refresh");
          await page.waitForSelector("#sweeper", {
            state: "hidden",
            timeout: 5000,
          });
          assert.deepEqual(main.errors, []);
        },
      );

      await t.step(
        "lists the alerts with their delivery state, and sends a test alert",
        async () => {
          await db.sql`truncate backup_notifications`;
          await db.sql`
            insert into backup_notifications
              (event, destination, payload, status, attempts, last_error,
               created_at)
            values ('failed', 'BACKUP_ALERT_WEBHOOK_URL', '{}', 'dead', 14,
                    'HTTP 500', now() - interval '1 day')`;
          await page.click("#refresh");
          await waitText(page, "#alerts", "Gave up");
          const dead = page.locator('#alerts tbody tr[data-status="dead"]');
          assert.match((await dead.textContent()) ?? "", /Backup failed/);
          assert.match((await dead.textContent()) ?? "", /HTTP 500/);
          // (The dispatch GitHub refused above raised a failed alert, sent
          // by the sweep.)
          const before = alerted.length;
          await page.click("#test-alert");
          await waitText(page, "#message", "Test alert: 1 delivered.");
          const test = page.locator(
            '#alerts tbody tr[data-event="test"][data-status="delivered"]',
          );
          await test.waitFor({ timeout: 5000 });
          assert.match((await test.textContent()) ?? "", /Delivered/);
          assert.equal(alerted.length, before + 1);
          assert.deepEqual(JSON.parse(alerted[before]), {
            text:
              ":bell: Test alert from the backup control plane: this destination works.",
          });
          assert.deepEqual(main.errors, []);
        },
      );

      await t.step(
        "a failed verification names its mismatches and how many more there are",
        async () => {
          const [newest] = await db.sql`
            select dispatch_id::text from backup_history
             where status = 'success' order by finished_at desc limit 1`;
          await db.sql`
            update backup_history
               set verification = ${
            db.sql.json({
              mode: "restore",
              ok: false,
              tables: 300,
              rows: 1000,
              mismatches: [{ table: "public t1", expected: 6, actual: 5 }],
              mismatches_omitted: 249,
            })
          }, verified_at = now()
             where dispatch_id = ${newest.dispatch_id}`;
          await page.click("#refresh");
          // The history row's details, folded until clicked.
          const warning = page.locator(
            `#run-${newest.dispatch_id} details pre`,
          );
          await warning.waitFor({ state: "attached", timeout: 5000 });
          assert.equal(
            await warning.textContent(),
            `Backup ${
              newest.dispatch_id.slice(0, 8)
            }… is stored, but its restore verification FAILED: see the workflow run.\n` +
              "public t1: 5 rows, expected 6\nand 249 more tables",
          );
          await db.sql`
            update backup_history set verification = null, verified_at = null
             where dispatch_id = ${newest.dispatch_id}`;
          assert.deepEqual(main.errors, []);
        },
      );

      await t.step(
        "names the download secrets when links are off, and with them a Download button saves the object from S3",
        async () => {
          // This stack has no BACKUP_S3_* secrets: successes, no links.
          assert.equal(
            await page.locator("#history button.download").count(),
            0,
          );
          const hint = page.locator("#download-hint");
          assert.ok(await hint.isVisible());
          for (
            const name of [
              "BACKUP_S3_BUCKET",
              "BACKUP_S3_ACCESS_KEY_ID",
              "BACKUP_S3_SECRET_ACCESS_KEY",
            ]
          ) {
            assert.ok((await hint.textContent())!.includes(name), name);
          }

          // The newest success's object, in a bucket of moto's.
          const [newest] = await db.sql`
            select dispatch_id::text, s3_key from backup_history
             where status = 'success' order by created_at desc limit 1`;
          const successes = await db.sql`
            select 1 from backup_history where status = 'success'`;
          const bucket = await createBucket();
          const bytes = crypto.getRandomValues(new Uint8Array(60_000));
          const file = await Deno.makeTempFile();
          await Deno.writeFile(file, bytes);
          const put = await aws([
            "s3",
            "cp",
            file,
            `s3://${bucket}/${newest.s3_key}`,
          ]);
          assert.equal(put.code, 0, put.stderr);
          await Deno.remove(file);
          const linked = await startStack({
            databaseUrl: db.url,
            githubApiUrl: gh.url,
            env: {
              ALLOWED_ORIGINS: web.url,
              BACKUP_S3_BUCKET: bucket,
              BACKUP_S3_ENDPOINT_URL: s3Endpoint(),
              BACKUP_S3_ACCESS_KEY_ID: "AKIAREADONLYDEMO",
              BACKUP_S3_SECRET_ACCESS_KEY: "demo-read-only-secret",
            },
          });
          const session = web.session;
          web.session = { supabase_url: linked.url, access_token: adminToken };
          const other = await openPage(ctx);
          try {
            await other.page.goto(web.url + "/");
            await other.page.waitForSelector("#history button.download");
            assert.equal(
              await other.page.locator("#history button.download").count(),
              successes.length,
            );
            assert.ok(await other.page.locator("#download-hint").isHidden());
            const [download] = await Promise.all([
              other.page.waitForEvent("download"),
              other.page.click(`#run-${newest.dispatch_id} button.download`),
            ]);
            assert.equal(
              download.suggestedFilename(),
              newest.s3_key.split("/").pop(),
            );
            const saved = await Deno.readFile(await download.path());
            assert.equal(saved.length, bytes.length);
            assert.equal(await sha256hex(saved), await sha256hex(bytes));
            assert.deepEqual(other.errors, []);
          } finally {
            await other.close();
            web.session = session;
            await linked.close();
          }
        },
      );
      await t.step(
        "after Load older, a refresh that brings a new run keeps every row listed",
        async () => {
          const insertLost = (count: number, hoursAgo: number) =>
            db.sql`
              insert into backup_history
                (dispatch_id, trigger_source, status, failure_reason,
                 outcome_source, created_at, updated_at, finished_at)
              select gen_random_uuid(), 'manual', 'failed', 'lost', 'deadline',
                     t, t, t
                from generate_series(1, ${count}::int) g,
                     lateral (select now() - make_interval(hours => ${hoursAgo}::int + g) as t) at
              returning dispatch_id`;
          const rows = "#history tbody tr[data-dispatch-id]";
          const ids = () =>
            page.locator(rows).evaluateAll((trs) =>
              trs.map((tr) => tr.getAttribute("data-dispatch-id"))
            );
          // Removed afterwards: the later steps count the seeded rows.
          const added = [...await insertLost(45, 1000)];
          await page.click("#refresh");
          await page.waitForSelector("#older:not([hidden])");
          const first = (await ids()).length;
          await page.click("#older");
          await page.waitForFunction(
            `document.querySelectorAll(${JSON.stringify(rows)}).length === ${
              first + 20
            }`,
            undefined,
            { timeout: 5000 },
          );
          const before = await ids();
          // A new run pushes the first page's last row onto the second.
          added.push(...await insertLost(1, -1));
          await page.click("#refresh");
          await page.waitForFunction(
            `document.querySelectorAll(${JSON.stringify(rows)}).length === ${
              before.length + 1
            }`,
            undefined,
            { timeout: 5000 },
          );
          const after = await ids();
          assert.deepEqual(after.slice(1), before);
          assert.deepEqual(main.errors, []);
          await db.sql`
            delete from backup_history
             where dispatch_id in ${db.sql(added.map((r) => r.dispatch_id))}`;
          await page.click("#refresh");
        },
      );
      await main.close();

      await t.step(
        "without /dev/session it asks for settings, and explains 401, 403 and network errors",
        async () => {
          web.session = null;
          const { page, close, errors } = await openPage(ctx);
          try {
            await page.goto(web.url + "/");
            await page.waitForSelector("#settings:not([hidden])");
            assert.ok(await page.locator("#dashboard").isHidden());
            const connectWith = async (url: string, token: string) => {
              if (await page.locator("#settings").isHidden()) {
                await page.click("#change-settings");
              }
              await page.fill("#settings-url", url);
              await page.fill("#settings-token", token);
              await page.click("#settings-save");
            };

            await connectWith(stack!.url, "not-a-token");
            await waitText(page, "#message", "not signed in");
            await waitText(page, "#message", "401 invalid_token");
            assert.ok(await page.locator("#settings").isVisible());

            await connectWith(stack!.url, await userToken(NON_ADMIN_ID));
            await waitText(page, "#message", "not a backup admin");
            await waitText(page, "#message", "403 not_admin");

            const closed = `http://127.0.0.1:${freePort()}`;
            await connectWith(closed, adminToken);
            await waitText(page, "#message", "Cannot reach the backup service");

            await connectWith(stack!.url, adminToken);
            await page.waitForFunction(
              `document.querySelectorAll("#history tbody tr[data-dispatch-id]").length === ${
                seeded + 3
              }`,
              undefined,
              { timeout: 10_000 },
            );
            assert.ok(await page.locator("#message").isHidden());
            const saved = await page.evaluate(
              `sessionStorage.getItem("backup-demo-settings")`,
            );
            assert.deepEqual(JSON.parse(String(saved)), {
              supabase_url: stack!.url,
              access_token: adminToken,
            });
            assert.deepEqual(errors, []);
          } finally {
            await close();
          }
        },
      );
    } finally {
      await browser?.close();
      await stack?.close();
      await hook.shutdown();
      await web.close();
      await gh.close();
      await db.close();
    }
  },
});

if (chromiumMissing() !== null) {
  console.log(
    `SKIPPED tests/browser_demo_test.ts: ${chromiumMissing()}; the demo page was not tested`,
  );
}
