// The shape shared by the HTTP test files: one database, one server and one
// scripted GitHub for a whole file, and its behaviours run as named steps,
// each from empty tables, default settings and an empty GitHub script.

import assert from "node:assert/strict";
import { freshDatabase, type Sql } from "./db.ts";
import {
  ADMIN_ID,
  type Answer,
  fetchChecked,
  type Stack,
  startStack,
  TEST_GITHUB_TOKEN,
  TEST_JWT_SECRET,
  TEST_WEBHOOK_SECRET,
} from "./stack.ts";
import { type ScriptedGitHub, startScriptedGitHub } from "./github_script.ts";

/** What every step can reach. */
export interface ServerContext {
  stack: Stack;
  gh: ScriptedGitHub;
  sql: Sql;
  dbUrl: string;
}

export interface SuiteOptions<C> {
  /** Extra environment for the server (null removes a variable). */
  env?: Record<string, string | null>;
  /** Extra `deno run` flags for the server. */
  denoArgs?: string[];
  /** The context the behaviours get, built once from the shared parts. */
  context: (base: ServerContext) => C | Promise<C>;
  /** When set, a last step asserts that none of these reached the server log. */
  logSecrets?: { endpoint: string; values: (base: ServerContext) => string[] };
  /** Runs after the last step (e.g. to print measurements). */
  after?: () => void;
}

export interface Suite<C> {
  /** Adds a behaviour; it runs as a step named `name`. */
  behaviour(name: string, fn: (ctx: C) => Promise<void>): void;
  /** Registers the Deno test that runs every behaviour (call it last). */
  register(): void;
}

/** A file's behaviours over one database, server and scripted GitHub. */
export function serverSuite<C>(title: string, opts: SuiteOptions<C>): Suite<C> {
  const behaviours: [string, (ctx: C) => Promise<void>][] = [];
  return {
    behaviour(name, fn) {
      behaviours.push([name, fn]);
    },
    register() {
      Deno.test(title, async (t) => {
        const db = await freshDatabase();
        const gh = startScriptedGitHub();
        let stack: Stack | undefined;
        try {
          stack = await startStack({
            databaseUrl: db.url,
            githubApiUrl: gh.url,
            env: opts.env,
            denoArgs: opts.denoArgs,
          });
          await db
            .sql`insert into backup_admins (user_id) values (${ADMIN_ID})`;
          const base: ServerContext = { stack, gh, sql: db.sql, dbUrl: db.url };
          const ctx = await opts.context(base);
          for (const [name, fn] of behaviours) {
            await t.step(name, async () => {
              await db.sql`truncate backup_history, backup_report_deliveries`;
              await db.sql`
                update backup_settings
                   set last_success_at = null, last_success_dispatch_id = null,
                       last_success_s3_key = null, github_backoff_until = null,
                       last_sweep_at = null, last_sweep_outcome = null,
                       sweep_problem = null,
                       start_deadline_seconds = default, max_runtime_seconds = default,
                       report_grace_seconds = default`;
              gh.reset();
              await fn(ctx);
            });
          }
          const secrets = opts.logSecrets;
          if (secrets) {
            await t.step(
              `${secrets.endpoint} never writes a secret to the server log`,
              () => {
                const log = base.stack.output();
                for (const s of secrets.values(base)) {
                  assert.ok(!log.includes(s), `the log holds a secret: ${s}`);
                }
              },
            );
          }
          opts.after?.();
        } finally {
          await stack?.close();
          await gh.close();
          await db.close();
        }
      });
    },
  };
}

/**
 * Asserts an error answer: the status, exactly `{error: {code, message}}`
 * plus `extra` members, and a non-empty message, which it returns.
 */
export function assertError(
  a: Answer,
  status: number,
  code: string,
  extra: Record<string, unknown> = {},
): string {
  assert.equal(a.status, status, a.text);
  assert.equal(typeof a.body?.error?.message, "string", a.text);
  assert.ok(a.body.error.message.length > 0, a.text);
  assert.deepEqual(a.body, {
    error: { code, message: a.body.error.message },
    ...extra,
  });
  return a.body.error.message;
}

/** Every value the stack holds that no response or log line may show. */
export function stackSecrets(
  base: { dbUrl: string },
  ...extra: string[]
): string[] {
  return [
    ...extra,
    TEST_GITHUB_TOKEN,
    TEST_JWT_SECRET,
    TEST_WEBHOOK_SECRET,
    TEST_WEBHOOK_SECRET.slice("whsec_".length),
    base.dbUrl,
    new URL(base.dbUrl).pathname.slice(1),
  ];
}

/** fetch, read the body, and check that it leaks none of the stack's secrets. */
export function call(
  base: { dbUrl: string },
  url: string,
  init: RequestInit = {},
  ...extraSecrets: string[]
): Promise<Answer> {
  return fetchChecked(url, init, stackSecrets(base, ...extraSecrets));
}
