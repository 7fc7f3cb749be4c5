// Starts the functions for a test the way `deno task serve` does: a separate
// Deno process running scripts/serve.ts, configured only through its
// environment, against a real database. Also: the secrets the tests use, and
// independent (WebCrypto) implementations of the token and signature
// formats, so that the Rust core is checked against the specifications
// rather than against itself.

import { fileURLToPath } from "node:url";
import * as signing from "../../scripts/signing.ts";
import { freePort, spawnServer } from "../../scripts/process.ts";

/** A parsed JSON body (tests index into it freely). */
// deno-lint-ignore no-explicit-any
export type Json = any;

/** The GITHUB_TOKEN the stack runs with (a secret no answer may show). */
export const TEST_GITHUB_TOKEN = "ghp_test_token_never_logged";
export const TEST_JWT_SECRET =
  "test-jwt-secret-that-is-at-least-32-characters-long";
export const TEST_WEBHOOK_SECRET = "whsec_" +
  btoa("test-webhook-secret-32-bytes-long!");
export const ADMIN_ID = "6f1c2a9e-8d4b-4c1a-9f3e-2b7d5a0c1e42";
export const NON_ADMIN_ID = "11111111-2222-4333-8444-555555555555";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

export interface Stack {
  /** Base URL, e.g. http://127.0.0.1:PORT */
  url: string;
  /** `${url}/functions/v1/${name}` */
  fn(name: string): string;
  /** Everything the server process printed so far. */
  output(): string;
  close(): Promise<void>;
}

export interface StackOptions {
  databaseUrl: string;
  githubApiUrl?: string;
  /** Extra or overriding environment; a value of null removes a variable. */
  env?: Record<string, string | null>;
  /** Extra `deno run` flags (e.g. an --import-map for a test-only core). */
  denoArgs?: string[];
  /** The port to serve on (default: a free one), for tests that must know
   * the URL before the stack starts (SUPABASE_URL, the OIDC audience). */
  port?: number;
}

export { freePort };

/** Starts scripts/serve.ts and waits until it answers. */
export async function startStack(opts: StackOptions): Promise<Stack> {
  const port = opts.port ?? freePort();
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "",
    HOME: Deno.env.get("HOME") ?? "/root",
    DENO_NO_UPDATE_CHECK: "1",
    PORT: String(port),
    SUPABASE_DB_URL: opts.databaseUrl,
    BACKUP_JWT_SECRET: TEST_JWT_SECRET,
    BACKUP_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET,
    // Reports signed only, as most tests make them by hand; the OIDC tests
    // (tests/oidc_reports_test.ts, the workflow end to end) set `oidc` or
    // remove this for the default, `both`.
    BACKUP_REPORT_AUTH: "webhook",
    GITHUB_TOKEN: TEST_GITHUB_TOKEN,
    GITHUB_REPOSITORY: "acme/app",
    GITHUB_API_URL: opts.githubApiUrl ?? "http://127.0.0.1:9",
    ALLOWED_ORIGINS: "http://localhost:3000",
  };
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === null) delete env[k];
    else env[k] = v;
  }
  const url = `http://127.0.0.1:${port}`;
  const served = await spawnServer(
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-env",
        "--allow-net",
        "--allow-read",
        ...(opts.denoArgs ?? []),
        "scripts/serve.ts",
      ],
      cwd: ROOT,
      env,
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }),
    `${url}/functions/v1/`,
    "the functions",
  );
  return {
    url,
    fn: (name) => `${url}/functions/v1/${name}`,
    output: served.output,
    close: served.stop,
  };
}

/** An HS256 user token signed with the stack's JWT secret (by default);
 * `header` adds members to its JOSE header (e.g. a `kid`). */
export function userToken(
  sub: string,
  overrides: Record<string, unknown> = {},
  secret = TEST_JWT_SECRET,
  header: Record<string, unknown> = {},
): Promise<string> {
  return signing.userToken(sub, overrides, secret, header);
}

/** Standard Webhooks headers signed with the stack's secret (by default). */
export function webhookHeaders(
  body: string,
  opts: { id?: string; timestamp?: number; secret?: string } = {},
): Promise<Record<string, string>> {
  return signing.webhookHeaders(body, opts.secret ?? TEST_WEBHOOK_SECRET, opts);
}

/** POSTs a signed report to finalize-backup. */
export async function report(
  stack: Stack,
  payload: unknown,
  opts: { id?: string; timestamp?: number; secret?: string } = {},
): Promise<{ status: number; body: Json }> {
  const body = JSON.stringify(payload);
  const r = await fetch(stack.fn("finalize-backup"), {
    method: "POST",
    headers: await webhookHeaders(body, opts),
    body,
  });
  return { status: r.status, body: await r.json() };
}

/** POSTs to trigger-backup as `sub` (an admin by default). */
export async function trigger(
  stack: Stack,
  opts: { sub?: string; body?: string; token?: string } = {},
): Promise<{ status: number; body: Json }> {
  const token = opts.token ?? await userToken(opts.sub ?? ADMIN_ID);
  const r = await fetch(stack.fn("trigger-backup"), {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
    },
    body: opts.body,
  });
  return { status: r.status, body: await r.json() };
}

/** An HTTP answer, read whole. */
export interface Answer {
  status: number;
  headers: Headers;
  text: string;
  body: Json;
}

/**
 * fetch, read the body (JSON when it parses), and assert that none of
 * `secrets` appears in it: no response may ever carry a secret.
 */
export async function fetchChecked(
  url: string,
  init: RequestInit,
  secrets: string[],
): Promise<Answer> {
  const r = await fetch(url, init);
  const text = await r.text();
  for (const s of secrets) {
    if (text.includes(s)) {
      throw new Error(`the response leaks a secret: ${text}`);
    }
  }
  let body: Json = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
  }
  return { status: r.status, headers: r.headers, text, body };
}
