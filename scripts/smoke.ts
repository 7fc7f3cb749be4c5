// `deno task smoke https://<ref>.supabase.co [--token <user access token>]`:
// the post-deploy check. Every function (the directories under
// supabase/functions/, read at run time) is called without credentials: an
// answer in the core's error shape ({"error":{"code","message"}}) with a 4xx
// proves that the function started and its WebAssembly core loaded. With a
// token, backup-status is asked for the history as that user: are they a
// backup admin, and is the sweeper running? Each failure is printed with its
// fix; the exit code is 1 when anything failed (2 for a usage error).
//
// Nothing is sent anywhere but the given URL, and the token is never printed
// (though `deno task` echoes its command line: `deno task -q smoke …` does not).

/** One line of the report. */
export interface Check {
  ok: boolean;
  /** What was checked: a function's name, "admin" or "sweeper". */
  subject: string;
  /** What was found. */
  finding: string;
  /** How to fix a failure. */
  fix?: string;
}

/** The functions to check: the directories under supabase/functions/. */
export function functionNames(
  dir = new URL("../supabase/functions/", import.meta.url),
): string[] {
  return [...Deno.readDirSync(dir)]
    .filter((e) => e.isDirectory && !/^[_.]/.test(e.name))
    .map((e) => e.name)
    .sort();
}

/** `https://<ref>.supabase.co` (or a local stack) without a trailing path. */
export function baseUrl(arg: string): string {
  const u = new URL(arg);
  if (u.protocol !== "https:" && u.protocol !== "http:") {
    throw new TypeError(`${arg} is not an http(s) URL`);
  }
  return u.origin +
    u.pathname.replace(/\/+$/, "").replace(/\/functions\/v1$/, "");
}

/** Where the dashboard shows a function's logs, when the URL names a project. */
function logsAt(base: string, name: string): string {
  const ref = /^https:\/\/([a-z0-9]+)\.supabase\.co$/.exec(base)?.[1];
  return ref
    ? `https://supabase.com/dashboard/project/${ref}/functions/${name}/logs`
    : "the server's output";
}

/** An HTTP answer, read whole. */
export interface Answer {
  status: number;
  headers: Headers;
  text: string;
  /** The core's error, when the body has its shape. */
  error?: { code: string; message: string };
  json?: unknown;
}

/** An answer, or why there was none. */
export type Call = { ok: true; answer: Answer } | { ok: false; reason: string };

async function call(
  url: string,
  init: RequestInit,
  timeoutMs: number,
): Promise<Call> {
  try {
    const r = await fetch(url, {
      ...init,
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await r.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch { /* not JSON */ }
    const e = (json as { error?: { code?: unknown; message?: unknown } })
      ?.error;
    const error = typeof e?.code === "string" && typeof e?.message === "string"
      ? { code: e.code, message: e.message }
      : undefined;
    return {
      ok: true,
      answer: { status: r.status, headers: r.headers, text, error, json },
    };
  } catch (e) {
    const reason = e instanceof DOMException && e.name === "TimeoutError"
      ? `no answer within ${timeoutMs / 1000} s`
      : String((e as Error)?.message ?? e).slice(0, 200);
    return { ok: false, reason };
  }
}

/** A short, single-line excerpt of a body that is not the core's. */
function excerpt(a: Answer): string {
  const code = a.headers.get("sb-error-code");
  const body = a.text.replace(/\s+/g, " ").trim().slice(0, 120);
  return [code && `sb-error-code ${code}`, body ? `body: ${body}` : "no body"]
    .filter(Boolean).join(", ");
}

/**
 * What an answer to a request without credentials says about the function.
 * Anything but a 4xx in the core's error shape is a failure.
 */
export function judge(
  base: string,
  name: string,
  request: string,
  result: Call,
): Check {
  const redeploy = `redeploy with \`supabase functions deploy ${name}\``;
  if (!result.ok) {
    return {
      ok: false,
      subject: name,
      finding: `not reachable: ${result.reason}`,
      fix: `check the URL (https://<project-ref>.supabase.co) and the ` +
        `network; a paused project must be restored in the dashboard`,
    };
  }
  const a = result.answer;
  if (a.error && a.status >= 400 && a.status < 500 && a.status !== 404) {
    return {
      ok: true,
      subject: name,
      finding: `core loaded (${request}: ${a.status} ${a.error.code})`,
    };
  }
  if (a.status === 404) {
    return {
      ok: false,
      subject: name,
      finding: `404: not deployed (${excerpt(a)})`,
      fix: `deploy it with \`supabase functions deploy ${name}\``,
    };
  }
  if (a.error?.code === "config_missing") {
    const setting = /\b([A-Z][A-Z0-9_]+)\b/.exec(a.error.message)?.[1];
    return {
      ok: false,
      subject: name,
      finding: `core loaded, but misconfigured (${a.status} config_missing: ` +
        `${a.error.message})`,
      fix: `\`supabase secrets set ${setting ?? "<SETTING>"}=<value>\` ` +
        `(README, "Configuration"); the next request reads it, no redeploy needed`,
    };
  }
  if (a.status === 401 && !a.error) {
    return {
      ok: false,
      subject: name,
      finding: `401 from the gateway, not the core (${excerpt(a)})`,
      fix: `the gateway checks JWTs for this function, and the workflow and ` +
        `pg_cron have none: ${redeploy} --no-verify-jwt ` +
        `(supabase/config.toml says verify_jwt = false)`,
    };
  }
  if (a.status >= 500) {
    const what = a.error
      ? `${a.status} ${a.error.code}: the core did not load or crashed`
      : `${a.status}, not the core's answer (${excerpt(a)})`;
    return {
      ok: false,
      subject: name,
      finding: what,
      fix:
        `the function crashed at start; read its logs (${
          logsAt(base, name)
        }); ${redeploy} (it ships the embedded core, ` +
        `pkg/${name}/backup_core_wasm.js, with the function)`,
    };
  }
  return {
    ok: false,
    subject: name,
    finding: `unexpected ${a.status} (${
      a.error ? `${a.error.code}: ${a.error.message}` : excerpt(a)
    })`,
    fix: `read its logs (${logsAt(base, name)}); ${redeploy}`,
  };
}

/** Calls `name` without credentials, following a 405's `Allow` once. */
async function probe(
  base: string,
  name: string,
  timeoutMs: number,
): Promise<Check> {
  const url = `${base}/functions/v1/${name}`;
  let method = "GET";
  let result = await call(url, { method }, timeoutMs);
  // Each function serves one method and says which in a 405's Allow, so
  // no list of methods is kept here.
  if (result.ok && result.answer.status === 405 && result.answer.error) {
    const allowed = (result.answer.headers.get("allow") ?? "")
      .split(",").map((m) => m.trim()).filter((m) => m && m !== "OPTIONS");
    if (allowed.length) {
      method = allowed[0];
      result = await call(url, {
        method,
        headers: { "content-type": "application/json" },
        body: method === "GET" || method === "HEAD" ? undefined : "{}",
      }, timeoutMs);
    }
  }
  return judge(base, name, `${method} without credentials`, result);
}

/** The `sub` of a JWT, read without checking it (for the printed fix). */
function subject(token: string): string | undefined {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const sub = JSON.parse(
      atob(part.padEnd(Math.ceil(part.length / 4) * 4, "=")),
    )
      ?.sub;
    return typeof sub === "string" ? sub : undefined;
  } catch {
    return undefined;
  }
}

/** The sweeper's health from the history answer's `sweeper` field. */
export function describeSweeper(body: unknown): Check {
  const s = (body as { sweeper?: unknown })?.sweeper as
    | { last_run_at?: unknown; healthy?: unknown; problem?: unknown }
    | null
    | undefined;
  if (s === undefined) {
    return {
      ok: true,
      subject: "sweeper",
      finding: "unknown (old deployment: the answer has no sweeper field)",
    };
  }
  const last = typeof s?.last_run_at === "string"
    ? `last run ${s.last_run_at}`
    : "never run";
  if (s?.healthy === true) {
    return { ok: true, subject: "sweeper", finding: `healthy, ${last}` };
  }
  const problem = typeof s?.problem === "string" && s.problem
    ? s.problem
    : "no problem given";
  return {
    ok: false,
    subject: "sweeper",
    finding: `not healthy, ${last}: ${problem}`,
    fix: "pg_cron runs the sweep every minute through pg_net: check the " +
      "`backup-sweep` job (select * from cron.job) and the Vault secrets " +
      "backup_functions_url and backup_service_key (README, " +
      '"Who runs it")',
  };
}

/** backup-status as the token's user: admin or not, and the sweeper. */
async function asUser(
  base: string,
  token: string,
  timeoutMs: number,
): Promise<Check[]> {
  const result = await call(`${base}/functions/v1/backup-status?limit=1`, {
    headers: { authorization: `Bearer ${token}` },
  }, timeoutMs);
  if (!result.ok) {
    return [{
      ok: false,
      subject: "admin",
      finding: `backup-status not reachable: ${result.reason}`,
      fix: "check the URL and the network",
    }];
  }
  const a = result.answer;
  if (a.status === 200) {
    return [
      {
        ok: true,
        subject: "admin",
        finding: "the token's user is a backup admin (backup-status: 200)",
      },
      describeSweeper(a.json),
    ];
  }
  const code = a.error?.code;
  const user = subject(token);
  const failure = (finding: string, fix: string): Check[] => [
    { ok: false, subject: "admin", finding, fix },
  ];
  if (a.status === 403 && code === "not_admin") {
    return failure(
      `the token's user${user ? ` ${user}` : ""} is not a backup admin ` +
        `(403 not_admin)`,
      `as the database owner: insert into backup_admins (user_id) values ` +
        `('${user ?? "<auth user id>"}');`,
    );
  }
  if (a.status === 401) {
    return failure(
      `the token was refused (401 ${code ?? "from the gateway"}${
        a.error ? `: ${a.error.message}` : ""
      })`,
      "pass a current user access token of this project " +
        "(supabase.auth.getSession() → access_token; they expire within the hour)",
    );
  }
  if (code === "database_unavailable") {
    return failure(
      "503 database_unavailable: the functions cannot reach the database",
      "check BACKUP_DB_URL (if set) and the project's database status",
    );
  }
  return failure(
    `backup-status answered ${a.status} (${
      a.error ? `${a.error.code}: ${a.error.message}` : excerpt(a)
    })`,
    `read its logs (${logsAt(base, "backup-status")})`,
  );
}

/** Runs every check against `base`. */
export async function smoke(
  base: string,
  opts: { token?: string; functions?: string[]; timeoutMs?: number } = {},
): Promise<Check[]> {
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const names = opts.functions ?? functionNames();
  const checks = await Promise.all(
    names.map((name) => probe(base, name, timeoutMs)),
  );
  if (opts.token !== undefined) {
    checks.push(...await asUser(base, opts.token, timeoutMs));
  }
  return checks;
}

/** The report, one check per line, each failure followed by its fix. */
export function format(base: string, checks: Check[]): string {
  const width = Math.max(...checks.map((c) => c.subject.length));
  const lines = [`smoke check of ${base}/functions/v1`];
  for (const c of checks) {
    lines.push(
      `${c.ok ? "ok  " : "FAIL"}  ${c.subject.padEnd(width)}  ${c.finding}`,
    );
    if (!c.ok && c.fix) lines.push(`      ${"".padEnd(width)}  fix: ${c.fix}`);
  }
  const failed = checks.filter((c) => !c.ok).length;
  lines.push(
    failed
      ? `${failed} of ${checks.length} checks failed`
      : `all ${checks.length} checks passed`,
  );
  return lines.join("\n");
}

const USAGE =
  "usage: deno task smoke https://<project-ref>.supabase.co [--token <user access token>]";

/** Parses the command line; throws a usage message. */
export function parseArgs(args: string[]): { base: string; token?: string } {
  let url: string | undefined;
  let token: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--token") {
      token = args[++i];
      if (!token) throw new Error(`--token needs a value\n${USAGE}`);
    } else if (a.startsWith("--token=")) {
      token = a.slice("--token=".length);
    } else if (a === "-h" || a === "--help") {
      throw new Error(USAGE);
    } else if (a.startsWith("-") || url !== undefined) {
      throw new Error(`unexpected argument ${a}\n${USAGE}`);
    } else {
      url = a;
    }
  }
  if (!url) throw new Error(USAGE);
  try {
    return { base: baseUrl(url), token };
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${USAGE}`);
  }
}

if (import.meta.main) {
  let parsed;
  try {
    parsed = parseArgs(Deno.args);
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(2);
  }
  const checks = await smoke(parsed.base, { token: parsed.token });
  console.log(format(parsed.base, checks));
  Deno.exit(checks.every((c) => c.ok) ? 0 : 1);
}
