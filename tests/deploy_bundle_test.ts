// Deploy-shaped: what `supabase functions deploy` ships is each function's
// import graph, so each function is bundled alone (`deno bundle`), copied
// into an empty directory, and run there with no access to the repository
// (no --allow-read, no config, its own module cache), configured only with
// what hosted Supabase injects plus the secrets the README tells users to
// set. Real requests must get real answers from a real PostgreSQL: a bundle
// that still reads a file outside its graph (the old
// `static_files = ["../pkg/backup_core_bg.wasm"]`) answers 500 here.
//
// The function list is read from supabase/functions/, so a new function
// cannot skip this test.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { freePort, spawnServer } from "../scripts/process.ts";
import { FUNCTIONS } from "../scripts/serve.ts";
import { freshDatabase } from "./support/db.ts";
import { webhookHeaders } from "./support/stack.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const FUNCTIONS_DIR = `${ROOT}supabase/functions`;

// Values hosted Supabase injects (SUPABASE_*) and the user secrets the
// README documents. Nothing else reaches the bundle.
const WEBHOOK_SECRET = "whsec_" + btoa("deploy-test-webhook-secret-32-bytes");
const SECRET_KEY = "sb_secret_deploytestdeploytestdeploytest";
const PUBLISHABLE_KEY = "sb_publishable_deploytestdeploytest";
const ANON_KEY = "legacy-anon-jwt-for-the-deploy-test";
const SERVICE_ROLE_KEY = "legacy-service-role-jwt-for-the-deploy-test";

/** The function directories: everything but the `_`-prefixed shared code. */
function functionDirectories(): string[] {
  const names: string[] = [];
  for (const entry of Deno.readDirSync(FUNCTIONS_DIR)) {
    if (!entry.isDirectory || entry.name.startsWith("_")) continue;
    names.push(entry.name);
  }
  return names.sort();
}

/** `deno bundle` of one function's index.ts into `out`. */
async function bundle(name: string, out: string): Promise<void> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--quiet",
      "--output",
      out,
      `${FUNCTIONS_DIR}/${name}/index.ts`,
    ],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 0, `deno bundle ${name} failed:\n${err}`);
}

interface Running {
  url: string;
  output(): string;
  stop(): Promise<void>;
}

/** Runs a bundle from an empty directory with only `env`. */
async function runAlone(
  dir: string,
  env: Record<string, string>,
): Promise<Running> {
  const port = freePort();
  const url = `http://127.0.0.1:${port}`;
  const served = await spawnServer(
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-config",
        "--no-lock",
        "--allow-env",
        "--allow-net=127.0.0.1",
        "index.js",
      ],
      cwd: dir,
      clearEnv: true,
      env: {
        ...env,
        DENO_DIR: `${dir}/.deno`,
        DENO_NO_UPDATE_CHECK: "1",
        // Where Deno.serve() listens when the code names no port.
        DENO_SERVE_ADDRESS: `tcp:127.0.0.1:${port}`,
      },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }),
    url,
    "the bundle",
    { method: "OPTIONS" },
  );
  return { url, ...served };
}

async function answer(
  url: string,
  init: RequestInit,
): Promise<{ status: number; body: unknown }> {
  const r = await fetch(url, init);
  const text = await r.text();
  try {
    return { status: r.status, body: JSON.parse(text) };
  } catch {
    return { status: r.status, body: text };
  }
}

/** The request every function must answer 401 to: no credentials at all. */
function unauthenticated(name: string): RequestInit & { path: string } {
  switch (name) {
    case "backup-status":
      return { path: "", method: "GET" };
    default:
      return {
        path: "",
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
      };
  }
}

const EXPECTED_401: Record<string, string> = {
  "trigger-backup": "missing_token",
  "backup-status": "missing_token",
  "finalize-backup": "invalid_signature",
  "reconcile-backups": "missing_token",
};

Deno.test("the functions are one list: the core's, and supabase/functions/, pkg/, config.toml and the README name exactly those", async () => {
  const core = [...FUNCTIONS].sort();
  assert.deepEqual(functionDirectories(), core);
  const built = [...Deno.readDirSync(`${ROOT}pkg`)].filter((e) => e.isDirectory)
    .map((e) => e.name).sort();
  assert.deepEqual(built, core, "pkg/: one core per function");
  const config = await Deno.readTextFile(`${ROOT}supabase/config.toml`);
  const configured = [...config.matchAll(/^\[functions\.([a-z0-9_-]+)\]$/gm)]
    .map((m) => m[1]).sort();
  assert.deepEqual(configured, core, "supabase/config.toml [functions.*]");
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  const documented = [
    ...readme.matchAll(/^### `[A-Z]+ \/functions\/v1\/([a-z0-9_-]+)`/gm),
  ].map((m) => m[1]).sort();
  assert.deepEqual(documented, core, "README.md's HTTP contract headings");
});

Deno.test("supabase/config.toml ships no file beside a function's import graph (no static_files)", async () => {
  // Files listed there are not deployed on every path (`--use-api` ships
  // none, and none outside supabase/functions), so the core must reach a
  // function only through its imports, as the next test proves it does.
  const config = await Deno.readTextFile(`${ROOT}supabase/config.toml`);
  const settings = config.split("\n").map((line) => line.split("#")[0].trim())
    .filter((line) => line !== "");
  assert.deepEqual(
    settings.filter((line) => /^static_files\s*=/.test(line)),
    [],
  );
});

Deno.test("every function, bundled alone and run from an empty directory, answers from PostgreSQL", async (t) => {
  const names = functionDirectories();
  assert.deepEqual(names, [...FUNCTIONS].sort());
  const db = await freshDatabase();
  const work = await Deno.makeTempDir({ prefix: "deploy-bundle-" });
  try {
    for (const name of names) {
      await t.step(`${name} bundled alone answers real requests`, async () => {
        const dir = `${work}/${name}`;
        await Deno.mkdir(dir);
        await bundle(name, `${dir}/index.js`);
        assert.deepEqual(
          [...Deno.readDirSync(dir)].map((e) => e.name),
          ["index.js"],
          "the bundle is one file",
        );
        // One embedded module, the function's own ("AGFzbQ" is the base64
        // of the WebAssembly magic number).
        const code = await Deno.readTextFile(`${dir}/index.js`);
        assert.equal(code.match(/"AGFzbQ/g)?.length, 1, "one core");
        const own = await Deno.readTextFile(
          `${ROOT}pkg/${name}/backup_core_wasm.js`,
        );
        const bytes = /"(AGFzbQ[A-Za-z0-9+/=]+)"/.exec(own)?.[1] ?? "none";
        assert.ok(code.includes(bytes), `${name} carries pkg/${name}/`);
        const fn = await runAlone(dir, {
          SUPABASE_URL: "http://127.0.0.1:9",
          SUPABASE_DB_URL: db.url,
          SUPABASE_JWKS: JSON.stringify({ keys: [] }),
          SUPABASE_PUBLISHABLE_KEYS: JSON.stringify({
            default: PUBLISHABLE_KEY,
          }),
          SUPABASE_SECRET_KEYS: JSON.stringify({ default: SECRET_KEY }),
          SUPABASE_ANON_KEY: ANON_KEY,
          SUPABASE_SERVICE_ROLE_KEY: SERVICE_ROLE_KEY,
          BACKUP_WEBHOOK_SECRET: WEBHOOK_SECRET,
          // Signed reports alone, so that one can reach the database below;
          // the default, both, also wants GitHub's OIDC token for the run
          // (tests/oidc_reports_test.ts).
          BACKUP_REPORT_AUTH: "webhook",
          GITHUB_TOKEN: "ghp_deploy_test_token",
          GITHUB_REPOSITORY: "acme/app",
          GITHUB_API_URL: "http://127.0.0.1:9",
        });
        try {
          const { path, ...init } = unauthenticated(name);
          const a = await answer(fn.url + path, init);
          const code = EXPECTED_401[name];
          assert.equal(a.status, 401, JSON.stringify(a.body) + fn.output());
          if (code) {
            assert.equal(
              (a.body as { error: { code: string } }).error.code,
              code,
            );
          }
          if (name === "finalize-backup") {
            // Signed correctly, for an id the database has never seen: the
            // answer comes from PostgreSQL.
            const body = JSON.stringify({
              event: "started",
              dispatch_id: "0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b",
              workflow_run_id: 42,
              run_attempt: 1,
            });
            const signed = await answer(fn.url, {
              method: "POST",
              headers: await webhookHeaders(body, { secret: WEBHOOK_SECRET }),
              body,
            });
            assert.equal(signed.status, 404, JSON.stringify(signed.body));
            assert.equal(
              (signed.body as { error: { code: string } }).error.code,
              "unknown_dispatch_id",
            );
          }
          assert.doesNotMatch(fn.output(), /deprecat|readFileSync|panic/i);
        } finally {
          await fn.stop();
        }
      });
    }
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
    await db.close();
  }
});
