// The database port: one pooled postgres.js client per instance, and the
// translation of driver errors into the three kinds the core distinguishes
// (unavailable → 503, unique_violation → a named constraint, other → 500).
// No decisions about backups are made here.

// deno-lint-ignore no-import-prefix
import postgres from "npm:postgres@3.4.9";

export interface DbFailure {
  kind: "unavailable" | "unique_violation" | "other";
  constraint: string;
  message: string;
}

let client: postgres.Sql | undefined;
let clientUrl: string | undefined;
let clientPrepares = false;

/**
 * How long the pool may sit without a query before its connections are
 * closed, so that an idle instance holds none of the database's
 * connections. postgres.js can do this itself (`idle_timeout`), but it
 * re-arms a Node-compatible timer on every query, which in Deno costs about
 * 9 µs of each one (one client, side by side: 0.86× the baseline's req/s
 * with it, 0.92× without; bench/README.md, "What made the difference").
 * Here one timer at a time checks the time of the last query instead.
 */
export const IDLE_MS = 20_000;
let lastQueryAt = 0;
let inFlight = 0;
let idleTimer: ReturnType<typeof setTimeout> | undefined;

const OPTIONS = {
  // Unprepared unless the core says the connection allows it (not through a
  // transaction pooler, src/ports/change_feed.rs); the listener never
  // prepares.
  prepare: false,
  // While the database is down a request must get its 503 promptly (within
  // 2 s), and once it is back, the listener must be too (within 1 s).
  // postgres.js waits `backoff` seconds before reconnecting after a failed
  // connection, by default growing to 20 s; a short fixed pause, jittered
  // so instances do not reconnect in step, costs one refused connection
  // attempt per pause while the database is down.
  connect_timeout: 1.5,
  backoff: () => 0.1 + Math.random() * 0.2,
  // postgres.js reads the catalog's array types on every new connection, a
  // round trip before its first query, so that it can parse array columns.
  // No statement of the core sends or returns an array (parameters are text,
  // lists travel as JSON), and skipping it takes about 3 ms off the first
  // answer of a cold instance (a signed report, measured side by side).
  fetch_types: false,
  onnotice: () => {},
};

/**
 * `url` as postgres.js should see it. The driver sends every query parameter
 * it does not know to the server as a setting, and PostgreSQL refuses to
 * connect with an unknown one; `pgbouncer=true` is only a label (Prisma's)
 * that the core reads to know that LISTEN cannot work there.
 */
export function driverUrl(url: string): string {
  const at = url.indexOf("?");
  if (at < 0) return url;
  const kept = url.slice(at + 1).split("&")
    .filter((pair) => pair.split("=")[0] !== "pgbouncer");
  return url.slice(0, at) + (kept.length ? `?${kept.join("&")}` : "");
}

/** The shared client for `url`, created on first use. */
export function database(url: string, prepare = false): postgres.Sql {
  if (!client || clientUrl !== url || clientPrepares !== prepare) {
    client?.end({ timeout: 1 }).catch(() => {});
    client = postgres(driverUrl(url), { ...OPTIONS, prepare, max: 5 });
    clientUrl = url;
    clientPrepares = prepare;
    lastQueryAt = performance.now();
    watchIdle(IDLE_MS);
  }
  return client;
}

/**
 * Closes the shared client if no query has run for `idleMs` and none is in
 * flight; the next query opens a new one. Returns whether it closed.
 */
export function closeIdle(idleMs: number): boolean {
  if (!client || inFlight > 0) return false;
  if (performance.now() - lastQueryAt < idleMs) return false;
  client.end({ timeout: 1 }).catch(() => {});
  client = undefined;
  clientUrl = undefined;
  return true;
}

// One timer while a client is open, due when the pool would have been idle
// for IDLE_MS; a query since then moves the check on instead of re-arming a
// timer per query. It runs only while the client's connections are open
// (they keep the process alive anyway), and stops once it closes them.
function watchIdle(delayMs: number): void {
  if (idleTimer !== undefined) return;
  idleTimer = setTimeout(() => {
    idleTimer = undefined;
    if (!client || closeIdle(IDLE_MS)) return;
    watchIdle(Math.max(lastQueryAt + IDLE_MS - performance.now(), 1000));
  }, delayMs);
}

/** Closes the shared client and the listener (tests, shutdown). */
export async function closeDatabase(): Promise<void> {
  clearTimeout(idleTimer);
  idleTimer = undefined;
  const c = client;
  client = undefined;
  clientUrl = undefined;
  const l = listener;
  listener = undefined;
  listening = undefined;
  await Promise.all([c?.end({ timeout: 2 }), l?.end({ timeout: 2 })]);
}

// Connection-level failures: the database cannot be reached or went away.
const UNAVAILABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "ETIMEDOUT",
  "EPIPE",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "57P01", // admin_shutdown
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now
  "53300", // too_many_connections
]);

/** Classifies a driver error. Never includes the connection URL. */
export function classify(error: unknown): DbFailure {
  const e = error as {
    code?: string;
    constraint_name?: string;
    message?: string;
    name?: string;
  };
  const code = String(e?.code ?? "");
  const message = String(e?.message ?? error).slice(0, 500);
  if (code === "23505") {
    return {
      kind: "unique_violation",
      constraint: e.constraint_name ?? "",
      message,
    };
  }
  if (
    UNAVAILABLE_CODES.has(code) || code.startsWith("08") ||
    e?.name === "ConnectionRefused" || /connect|refused|timeout/i.test(code)
  ) {
    return {
      kind: "unavailable",
      constraint: "",
      message: `${code} ${message}`.trim(),
    };
  }
  return {
    kind: "other",
    constraint: "",
    message: `${code} ${message}`.trim(),
  };
}

/**
 * Runs one statement with text parameters and resolves to the driver's rows
 * (the core reads them into its typed rows). Rejects with a
 * {@link DbFailure}.
 */
export async function query(
  url: string,
  prepare: boolean,
  sql: string,
  params: (string | null)[],
): Promise<unknown[]> {
  const db = database(url, prepare);
  inFlight++;
  try {
    // postgres.js prepares a statement only when both the client and the
    // call say so, and unsafe() says no unless asked: hence the client made
    // with the core's choice (database above) and the option here
    // (tests/db_port_test.ts fails without either).
    return await db.unsafe(sql, params, { prepare });
  } catch (error) {
    throw classify(error);
  } finally {
    inFlight--;
    lastQueryAt = performance.now();
  }
}

// Change notifications (LISTEN backup_history; the payload is a dispatch id).
// `seen` counts notifications per id so that a waiter that read the row
// before the change still wakes: it waits for "more than the count I saw".
const seen = new Map<string, number>();
const waiters = new Map<string, Set<() => void>>();
// The listening connection has a client of its own: when LISTEN fails,
// postgres.js keeps the failed attempt and hands it to every later one, so
// the client is dropped and a later watch starts afresh.
let listener: postgres.Sql | undefined;
let listenerUrl: string | undefined;
let listening: Promise<unknown> | undefined;
const MAX_TRACKED = 1000;

function notified(id: string): void {
  const count = (seen.get(id) ?? 0) + 1;
  seen.delete(id); // re-insert to keep the map in recency order
  seen.set(id, count);
  if (seen.size > MAX_TRACKED) seen.delete(seen.keys().next().value!);
  for (const wake of waiters.get(id) ?? []) wake();
}

// Called after every successful LISTEN; a waiter woken needlessly re-reads
// its run, finds it unchanged and waits again.
let listens = 0;
function relistened(): void {
  if (listens++ === 0) return;
  for (const set of waiters.values()) for (const wake of set) wake();
}

/**
 * Starts listening (once) and returns the count of changes seen for `id`.
 * Rejects with a {@link DbFailure} when LISTEN cannot be established; the
 * core then polls, and decides when to call again.
 */
export async function watch(
  target: string,
  id: string,
): Promise<number> {
  if (!listening || listenerUrl !== target) {
    listener?.end({ timeout: 1 }).catch(() => {});
    const sql = postgres(driverUrl(target), { ...OPTIONS, max: 1 });
    listener = sql;
    listenerUrl = target;
    // postgres.js re-issues LISTEN on a new connection whenever the old one
    // is lost; a change committed before that missed its notification, so
    // every waiter re-reads once the listener is back (onlisten).
    listening = sql.listen("backup_history", notified, relistened).catch(
      (error) => {
        if (listener === sql) {
          listener = undefined;
          listenerUrl = undefined;
          listening = undefined;
        }
        sql.end({ timeout: 1 }).catch(() => {});
        throw classify(error);
      },
    );
  }
  await listening;
  return seen.get(id) ?? 0;
}

/** Resolves true once more than `since` changes of `id` were seen, else false after `timeoutMs`. */
export function waitForChange(
  id: string,
  since: number,
  timeoutMs: number,
): Promise<boolean> {
  if ((seen.get(id) ?? 0) > since) return Promise.resolve(true);
  return new Promise((resolve) => {
    const set = waiters.get(id) ?? new Set();
    waiters.set(id, set);
    const finish = (changed: boolean) => {
      clearTimeout(timer);
      set.delete(wake);
      if (set.size === 0) waiters.delete(id);
      resolve(changed);
    };
    const wake = () => finish(true);
    const timer = setTimeout(() => finish(false), timeoutMs);
    set.add(wake);
  });
}
