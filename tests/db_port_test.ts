// supabase/functions/_shared/db.ts, the database port, against a real
// PostgreSQL: a statement is prepared when the core says the connection
// allows it, and never otherwise. (postgres.js prepares only when both the
// client and the call ask for it, and unsafe(), which the port uses, does not
// unless told.)

import assert from "node:assert/strict";
import { closeDatabase, query } from "../supabase/functions/_shared/db.ts";
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
