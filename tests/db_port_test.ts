// supabase/functions/_shared/db.ts, the database port, against a real
// PostgreSQL: a statement is prepared when the core says the connection
// allows it, and never otherwise. (postgres.js prepares only when both the
// client and the call ask for it, and unsafe(), which the port uses, does not
// unless told.)

import assert from "node:assert/strict";
import {
  closeDatabase,
  closeIdle,
  IDLE_MS,
  query,
} from "../supabase/functions/_shared/db.ts";
import { testDatabaseUrl } from "./support/db.ts";

const STATEMENT = "select $1::int4 + 1 as n /* db_port_test */";

/** The statements prepared on the connection that runs this query. */
async function prepared(url: string, prepare: boolean): Promise<string[]> {
  const rows = await query(
    url,
    prepare,
    "select statement from pg_prepared_statements",
    [],
  ) as { statement: string }[];
  return rows.map((r) => r.statement);
}

Deno.test("db.ts prepares a statement when the core allows it, and runs it unprepared otherwise", async () => {
  const url = testDatabaseUrl();
  try {
    // One query at a time: postgres.js runs each on its first idle
    // connection, so the probe sees the connection that ran the statement.
    for (const prepare of [false, true]) {
      for (let i = 0; i < 3; i++) {
        const rows = await query(url, prepare, STATEMENT, [String(i)]);
        assert.deepEqual(rows.map((r) => ({ ...(r as object) })), [{
          n: i + 1,
        }]);
      }
      const seen = (await prepared(url, prepare)).filter((s) =>
        s.includes("db_port_test")
      );
      assert.deepEqual(seen, prepare ? [STATEMENT] : [], `prepare: ${prepare}`);
      await closeDatabase();
    }
  } finally {
    await closeDatabase();
  }
});

Deno.test("db.ts closes the pool only when no query ran for the idle time and none is in flight; the next query reconnects", async () => {
  const url = testDatabaseUrl();
  const backend = async () =>
    ((await query(url, false, "select pg_backend_pid() as pid", [])) as {
      pid: number;
    }[])[0].pid;
  try {
    const first = await backend();
    // Just used: not idle for IDLE_MS.
    assert.equal(closeIdle(IDLE_MS), false);
    // A query in flight keeps the pool open, however long it has been idle.
    const slow = query(url, false, "select pg_sleep(0.2)", []);
    assert.equal(closeIdle(0), false);
    await slow;
    assert.equal(closeIdle(0), true);
    assert.equal(closeIdle(0), false, "nothing left to close");
    // The closed connection is gone from the server; the next query opens
    // a new one and is answered.
    const second = await backend();
    assert.notEqual(second, first);
    let alive = 1;
    for (let i = 0; i < 40 && alive > 0; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 50));
      alive = (await query(
        url,
        false,
        "select count(*)::int as n from pg_stat_activity where pid = $1::int4",
        [String(first)],
      ) as { n: number }[])[0].n;
    }
    assert.equal(alive, 0, "the first connection's backend has exited");
  } finally {
    await closeDatabase();
  }
});
