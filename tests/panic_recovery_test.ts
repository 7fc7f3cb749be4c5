// A Rust panic inside the WebAssembly core must cost one 500, never the
// server. The panic is reached through a test-only build of the core (cargo
// feature `test-panic`, made by `scripts/build_wasm.sh --test-panic DIR`,
// never committed): there, a request with the header `x-backup-test-panic`
// panics inside the core. The real server process loads that build in place
// of pkg/ through an import map; the deployed module has no such trigger.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { run } from "../scripts/process.ts";
import { serverSuite } from "./support/suite.ts";
import { freshDatabase, type Sql } from "./support/db.ts";
import {
  ADMIN_ID,
  type Json,
  report,
  type Stack,
  startStack,
  userToken,
} from "./support/stack.ts";
import { runDetails, type ScriptedGitHub } from "./support/github_script.ts";

interface Ctx {
  stack: Stack;
  gh: ScriptedGitHub;
  sql: Sql;
  dbUrl: string;
}

interface Answer {
  status: number;
  text: string;
  body: Json;
}

async function call(url: string, init: RequestInit = {}): Promise<Answer> {
  const r = await fetch(url, init);
  const text = await r.text();
  let body: Json = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: r.status, text, body };
}

const INTERNAL = { error: { code: "internal", message: "internal error" } };
const ROOT = fileURLToPath(new URL("../", import.meta.url));
const PANIC_HEADER = { "x-backup-test-panic": "1" };
/**
 * The functions these tests make panic, each in its own instance as
 * deployed: scripts/test.sh builds their test-only cores (the same list).
 */
const PANICKING = ["trigger-backup", "finalize-backup"];

/**
 * The directory of the test-only core: scripts/test.sh builds it once
 * (BACKUP_TEST_PANIC_PKG); run alone, this file builds it itself.
 */
async function testOnlyCore(): Promise<string> {
  const given = Deno.env.get("BACKUP_TEST_PANIC_PKG");
  if (given) return given;
  const dir = await Deno.makeTempDir({ prefix: "backup-test-panic-pkg-" });
  await run("bash", [
    `${ROOT}scripts/build_wasm.sh`,
    "--test-panic",
    dir,
    ...PANICKING,
  ]);
  return dir;
}

/** An import map that serves the test-only cores in place of theirs in pkg/. */
async function importMap(coreDir: string): Promise<string> {
  const file = await Deno.makeTempFile({ suffix: ".json" });
  const imports: Record<string, string> = {};
  for (const fn of PANICKING) {
    imports[new URL(`pkg/${fn}/`, `file://${ROOT}`).href] =
      new URL(`file://${coreDir.replace(/\/?$/, "/")}${fn}/`).href;
  }
  await Deno.writeTextFile(file, JSON.stringify({ imports }));
  return file;
}

const TEST_CORE = await testOnlyCore();
const IMPORT_MAP = await importMap(TEST_CORE);

/** Decoded WebAssembly bytes of a built core directory. */
async function wasmOf(dir: string): Promise<string> {
  const mod = await import(
    new URL("backup_core_wasm.js", `file://${dir}/`).href
  );
  return new TextDecoder("latin1").decode(mod.wasmBytes);
}

/** A request that panics: 500 internal, and nothing about the panic in the body. */
async function panic(stack: Stack, fn = "finalize-backup"): Promise<void> {
  const a = await call(stack.fn(fn), {
    method: "POST",
    headers: PANIC_HEADER,
    body: "{}",
  });
  assert.equal(a.status, 500, a.text);
  assert.deepEqual(a.body, INTERNAL);
  for (const leak of ["panic", "deliberate", ".rs", "wasm", "at "]) {
    assert.ok(!a.text.includes(leak), `the body mentions ${leak}: ${a.text}`);
  }
}

function trigger(stack: Stack, token: string | null): Promise<Answer> {
  return call(stack.fn("trigger-backup"), {
    method: "POST",
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
}

/** Resolves to "timeout" if `p` takes longer than `ms`. */
function within<T>(p: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const suite = serverSuite<Ctx>("panic recovery of the served core", {
  denoArgs: [`--import-map=${IMPORT_MAP}`],
  context: (base) => base,
});
const behaviour = suite.behaviour;

behaviour(
  "a panic in the core is answered 500 internal and the next requests are served correctly, three times over",
  async ({ stack, gh, sql }) => {
    for (let round = 1; round <= 3; round++) {
      await panic(stack);

      const anonymous = await trigger(stack, null);
      assert.equal(anonymous.status, 401, `round ${round}: ${anonymous.text}`);
      assert.equal(anonymous.body.error.code, "missing_token");

      gh.script(runDetails(60_000 + round));
      const ok = await trigger(stack, await userToken(ADMIN_ID));
      assert.equal(ok.status, 202, `round ${round}: ${ok.text}`);
      assert.deepEqual(ok.body, {
        dispatch_id: ok.body.dispatch_id,
        status: "in_progress",
        workflow_run_id: 60_000 + round,
        run_url: `https://github.com/acme/app/actions/runs/${60_000 + round}`,
      });

      await panic(stack);

      const done = await report(stack, {
        event: "succeeded",
        dispatch_id: ok.body.dispatch_id,
        workflow_run_id: 60_000 + round,
        run_attempt: 1,
        s3_key: `backups/round-${round}.dump`,
      });
      assert.equal(done.status, 200, `round ${round}`);
      assert.deepEqual(done.body, {
        dispatch_id: ok.body.dispatch_id,
        status: "success",
        changed: true,
        prune: [],
      });
    }
    const rows = await sql`
      select status, s3_key from backup_history order by id`;
    assert.deepEqual(
      [...rows],
      [1, 2, 3].map((round) => ({
        status: "success",
        s3_key: `backups/round-${round}.dump`,
      })),
    );
    assert.equal(gh.requests.length, 3);
  },
);

behaviour(
  "a request in flight during a panic is answered instead of hanging, and the server keeps serving",
  async ({ stack, gh, sql }) => {
    gh.script({ ...runDetails(70_001), delayMs: 1500 });
    const inFlight = trigger(stack, await userToken(ADMIN_ID));
    const deadline = Date.now() + 5000;
    while (gh.requests.length === 0 && Date.now() < deadline) await sleep(10);
    assert.equal(gh.requests.length, 1, "the trigger reached GitHub");

    // A panic in another function's instance leaves this request alone ...
    await panic(stack, "finalize-backup");
    assert.equal(await within(inFlight, 100), "timeout", "still in flight");
    // ... one in its own instance answers it.
    await panic(stack, "trigger-backup");
    const answer = await within(inFlight, 1000);
    assert.notEqual(answer, "timeout", "the in-flight request hangs");
    if (answer === "timeout") return;
    assert.equal(answer.status, 500, answer.text);
    assert.deepEqual(answer.body, INTERNAL);

    // A request right away re-instantiates the core while the old
    // instance's fetch is still pending ...
    const right = await trigger(stack, null);
    assert.equal(right.status, 401, right.text);
    assert.equal(right.body.error.code, "missing_token");
    // ... and GitHub's late answer to that fetch must be shrugged off.
    await sleep(1700);
    const anonymous = await trigger(stack, null);
    assert.equal(anonymous.status, 401, anonymous.text);

    // The interrupted run was inserted before its dispatch, so it is the
    // one running now.
    const [running] = await sql`
      select dispatch_id::text from backup_history where status = 'in_progress'`;
    const busy = await trigger(stack, await userToken(ADMIN_ID));
    assert.equal(busy.status, 409, busy.text);
    assert.deepEqual(busy.body, {
      error: { code: "backup_in_progress", message: busy.body.error.message },
      dispatch_id: running.dispatch_id,
    });
    const started = await report(stack, {
      event: "started",
      dispatch_id: running.dispatch_id,
      workflow_run_id: 70_001,
      run_attempt: 1,
    });
    assert.equal(started.status, 200);
    assert.equal(started.body.changed, true);
  },
);

behaviour(
  "concurrent panics are all answered 500 and the server still serves afterwards",
  async ({ stack }) => {
    const answers = await Promise.all(
      Array.from(
        { length: 5 },
        () =>
          call(stack.fn("finalize-backup"), {
            method: "POST",
            headers: PANIC_HEADER,
          }),
      ),
    );
    for (const a of answers) {
      assert.equal(a.status, 500, a.text);
      assert.deepEqual(a.body, INTERNAL);
    }
    const anonymous = await trigger(stack, null);
    assert.equal(anonymous.status, 401, anonymous.text);
  },
);

suite.register();

Deno.test("the deployed core has no panic trigger: the test header is an ordinary request there", async () => {
  for (const fn of PANICKING) {
    const testOnly = await wasmOf(`${TEST_CORE}/${fn}`);
    assert.ok(
      testOnly.includes("deliberate panic"),
      `${fn}'s test build has it`,
    );
  }
  for (const fn of Deno.readDirSync(`${ROOT}pkg`)) {
    const shipped = await wasmOf(`${ROOT}pkg/${fn.name}`);
    assert.ok(!shipped.includes("deliberate panic"), `pkg/${fn.name} has it`);
  }

  const db = await freshDatabase();
  let stack: Stack | undefined;
  try {
    stack = await startStack({ databaseUrl: db.url });
    const a = await call(stack.fn("finalize-backup"), {
      method: "POST",
      headers: { ...PANIC_HEADER, "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(a.status, 401, a.text);
    assert.equal(a.body.error.code, "invalid_signature");
    const unknown = await call(stack.fn("__panic"), { method: "POST" });
    assert.equal(unknown.status, 404, unknown.text);
    assert.deepEqual(unknown.body, {
      error: { code: "not_found", message: unknown.body.error.message },
    });
    const after = await trigger(stack, null);
    assert.equal(after.status, 401, after.text);
    assert.ok(!stack.output().includes("panic"), stack.output());
  } finally {
    await stack?.close();
    await db.close();
  }
});
