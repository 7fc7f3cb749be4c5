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

/** The shared client for `url` (SUPABASE_DB_URL), created on first use. */
export function database(url: string): postgres.Sql {
  if (!client || clientUrl !== url) {
    client?.end({ timeout: 1 }).catch(() => {});
    client = postgres(url, {
      max: 5,
      // Supabase's transaction pooler (port 6543) does not support
      // prepared statements.
      prepare: false,
      connect_timeout: 5,
      idle_timeout: 20,
      onnotice: () => {},
    });
    clientUrl = url;
  }
  return client;
}

/** Closes the shared client (tests, shutdown). */
export async function closeDatabase(): Promise<void> {
  const c = client;
  client = undefined;
  clientUrl = undefined;
  await c?.end({ timeout: 2 });
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
 * Runs one statement with text parameters and resolves to the rows as a
 * JSON string (the core parses it). Rejects with a {@link DbFailure}.
 */
export async function query(
  url: string | undefined,
  sql: string,
  params: (string | null)[],
): Promise<string> {
  if (!url) {
    throw {
      kind: "unavailable",
      constraint: "",
      message: "SUPABASE_DB_URL is not set",
    } satisfies DbFailure;
  }
  try {
    const rows = await database(url).unsafe(sql, params);
    return JSON.stringify(rows);
  } catch (error) {
    throw classify(error);
  }
}
