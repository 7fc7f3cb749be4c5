// A function's instance lives for many requests (a running backup sends a
// progress report every few seconds, the demo page long-polls), so the host
// must keep nothing per request once it is answered. Measured in a child
// process started with --expose-gc, through the real host
// (supabase/functions/_shared/core.ts) and the deployed finalize-backup core:
// the heap after a burst of answered requests, against the heap before it.
// The host once raced every request against one promise that settles only on
// a panic; each race left a reaction on that promise, holding the request's
// answer for the instance's life (about 0.8 KB a request, so 16 MB here).

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { run } from "../scripts/process.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const REQUESTS = 20_000;

/** The child: serves `REQUESTS` unsigned reports, prints the heap before and after. */
function probe(): string {
  const at = (path: string) =>
    JSON.stringify(new URL(path, `file://${ROOT}`).href);
  return `
import { wasmModule } from ${at("pkg/finalize-backup/backup_core_wasm.js")};
import * as core from ${at("pkg/finalize-backup/backup_core.js")};
import { serveFunction } from ${at("supabase/functions/_shared/core.ts")};
// Each unsigned report is logged; the log is not what is measured here.
console.log = () => {};
const serve = await serveFunction(core, wasmModule);
const statuses = new Map();
async function burst(n) {
  for (let i = 0; i < n; i++) {
    const answer = await serve(new Request("http://function/", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ event: "progress", n: i }),
    }));
    await answer.arrayBuffer();
    statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
  }
}
// FinalizationRegistry callbacks (wasm-bindgen frees closures through one)
// run in a task after a collection: let them, then collect again.
async function heap() {
  globalThis.gc();
  await new Promise((r) => setTimeout(r, 20));
  globalThis.gc();
  return Deno.memoryUsage().heapUsed;
}
await burst(2000);
const before = await heap();
await burst(${REQUESTS});
const after = await heap();
Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify({
  before, after, statuses: Object.fromEntries(statuses),
})));
`;
}

Deno.test("the host keeps nothing per request: 20,000 answered requests leave the heap within 2 MB of where it was", async () => {
  const dir = await Deno.makeTempDir({ prefix: "host-memory-" });
  try {
    const script = `${dir}/probe.js`;
    await Deno.writeTextFile(script, probe());
    const out = await run(Deno.execPath(), [
      "run",
      "--allow-env",
      "--allow-read",
      "--v8-flags=--expose-gc",
      script,
    ], {
      BACKUP_WEBHOOK_SECRET: "whsec_" +
        btoa("host-memory-test-secret-32-bytes"),
      BACKUP_REPORT_AUTH: "webhook",
      SUPABASE_DB_URL: "postgres://nobody@127.0.0.1:9/none",
    });
    const { before, after, statuses } = JSON.parse(out);
    // Every request was answered as an unsigned report is.
    assert.deepEqual(statuses, { 401: REQUESTS + 2000 });
    const grown = after - before;
    assert.ok(
      grown < 2_000_000,
      `the heap grew by ${grown} bytes over ${REQUESTS} requests (${
        (grown / REQUESTS).toFixed(0)
      } bytes a request)`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
