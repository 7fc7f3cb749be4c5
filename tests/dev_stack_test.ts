// The one-command promise, proved in a real browser: `deno task dev`'s stack
// (scripts/dev.ts: PostgreSQL, the functions, the demo page, the GitHub
// stand-in running the real workflow with act, S3 on moto), a click on
// "Back up now", and the page following a real pg_dump → S3 backup to
// success without a reload.

import assert from "node:assert/strict";
import { chromiumMissing, launchChromium } from "./support/browser.ts";
import { freePort } from "./support/stack.ts";
import { actAvailable } from "../scripts/local_github.ts";
import { startDev } from "../scripts/dev.ts";

const skip = chromiumMissing() ??
  (await actAvailable()
    ? null
    : "act is not installed (scripts/setup.sh installs it)");
if (skip) console.log(`dev_stack_test skipped: ${skip}`);

Deno.test({
  name:
    "deno task dev: a click on Back up now runs a real backup the page follows to success",
  ignore: skip !== null,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const scratch = await Deno.makeTempDir({ prefix: "backup-dev-test-" });
    await Deno.chmod(scratch, 0o711); // the cluster runs as postgres when we are root
    const dev = await startDev({
      port: freePort(),
      dbPort: freePort(),
      s3Port: freePort(),
      dataDir: `${scratch}/pg`,
      s3Dir: `${scratch}/s3`,
      sweepEveryMs: 0,
      banner: false,
    });
    const browser = await launchChromium();
    try {
      assert.equal(
        dev.realWorkflow,
        true,
        "dispatches run the workflow with act",
      );
      const page = await browser.newPage({
        viewport: { width: 1000, height: 700 },
      });
      await page.goto(dev.url);
      await page.waitForSelector("body[data-ready]");
      await page.click("#backup-now");
      await page.waitForFunction(
        `document.querySelector("#live-status")?.textContent.includes("In progress")`,
        undefined,
        { timeout: 10_000, polling: 50 },
      );
      const id = await page.locator("#live-run").getAttribute(
        "data-dispatch-id",
      );
      assert.ok(id, "the page shows the new run");
      await page.waitForFunction(
        `document.querySelector("#live-status")?.textContent.includes("Success")`,
        undefined,
        { timeout: 120_000, polling: 100 },
      );
      assert.equal(
        (await page.locator("#live-phase").textContent())?.trim(),
        "success",
      );

      // The page's word is the table's: a real object, with its hash.
      const r = await fetch(
        `${dev.url}/functions/v1/backup-status?dispatch_id=${id}`,
        { headers: { authorization: `Bearer ${dev.accessToken}` } },
      );
      const { run } = await r.json();
      assert.equal(run.status, "success");
      assert.match(
        run.s3_key,
        new RegExp(`^dev/\\d{8}T\\d{6}Z_${id}\\.tar\\.gz$`),
      );
      assert.ok(run.size_bytes > 1000, `a real dump: ${run.size_bytes} bytes`);
      assert.match(run.sha256, /^[0-9a-f]{64}$/);
      assert.equal(dev.github.dispatches.length, 1);
    } finally {
      await browser.close();
      await dev.close();
      await Deno.remove(scratch, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test("the scripts' helpers run in the clone's own directory when its path has a space", async () => {
  const parent = await Deno.makeTempDir({ prefix: "clone with space " });
  try {
    await Deno.mkdir(`${parent}/scripts`);
    await Deno.copyFile(
      new URL("../scripts/process.ts", import.meta.url),
      `${parent}/scripts/process.ts`,
    );
    const copy = await import(`file://${encodeURI(parent)}/scripts/process.ts`);
    assert.equal(await copy.run("pwd", []), parent);
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
});
