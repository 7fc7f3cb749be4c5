// The one fixture builder for backup_history rows that tests place directly
// with SQL (rather than through the functions): any columns, plus times
// given relative to the database's now(), so that rows can be placed in the
// past without a clock hook in the server.

import type { Queryable } from "./db.ts";

/** Columns of a backup_history row (any subset), as SQL values. */
export type RunColumns = Record<string, string | number | boolean | null>;

/** Seconds before now() for the time columns (null: the column is null). */
export interface Ago {
  createdAgo?: number;
  startedAgo?: number | null;
  finishedAgo?: number | null;
}

/** A minimal valid row: a manual backup, in progress. */
const DEFAULTS: RunColumns = {
  trigger_source: "manual",
};

/** A finished success, as a report would have left it. */
export const SUCCESS: RunColumns = {
  status: "success",
  outcome_source: "report",
  trigger_source: "schedule",
  s3_key: "backups/x.dump",
  created_at: "2026-01-01T00:00:00Z",
  started_at: "2026-01-01T00:00:01Z",
  finished_at: "2026-01-01T00:00:05Z",
};

/**
 * Inserts one row: `DEFAULTS`, then `columns`, then the relative times of
 * `ago` (which win over absolute ones; `createdAgo` sets updated_at too).
 * Returns its id and dispatch id.
 */
export async function insertRun(
  sql: Queryable,
  columns: RunColumns = {},
  ago: Ago = {},
): Promise<{ id: string; dispatch_id: string }> {
  const row: RunColumns = {
    dispatch_id: crypto.randomUUID(),
    ...DEFAULTS,
    ...columns,
  };
  // The times are read from the database's clock first (the rows are
  // compared with now() there), then inserted as plain values: an update
  // would have its updated_at overwritten by the touch trigger.
  const relative: [string, number | null | undefined][] = [
    ["created_at", ago.createdAgo],
    ["updated_at", ago.createdAgo],
    ["started_at", ago.startedAgo],
    ["finished_at", ago.finishedAgo],
  ];
  for (const [column, seconds] of relative) {
    if (seconds === undefined) continue;
    if (seconds === null) {
      row[column] = null;
      continue;
    }
    const [{ at }] = await sql<{ at: string }[]>`
      select (now() - ${seconds}::float8 * interval '1 second')::text as at`;
    row[column] = at;
  }
  const [inserted] = await sql<{ id: string; dispatch_id: string }[]>`
    insert into public.backup_history ${sql(row)}
    returning id::text, dispatch_id::text`;
  return inserted;
}
