// The database's own guarantees (supabase/migrations), tested against real
// PostgreSQL: each test gets a fresh migrated database from tests/support/db.ts.

import assert from "node:assert/strict";
import { insertRun } from "./support/runs.ts";
import {
  freshDatabase,
  type Queryable,
  type Sql,
  type Tx,
} from "./support/db.ts";
import { migrate } from "../scripts/db_migrate.ts";

const ADMIN = "00000000-0000-4000-8000-00000000a001";
const NOT_ADMIN = "00000000-0000-4000-8000-00000000b002";

/** Runs `fn` against a fresh database, dropped afterwards. */
function withDb(fn: (sql: Sql, url: string) => Promise<void>) {
  return async () => {
    const db = await freshDatabase();
    try {
      await fn(db.sql, db.url);
    } finally {
      await db.close();
    }
  };
}

type PgError = Error & { code?: string; constraint_name?: string };

/** Asserts that `p` fails with exactly this SQLSTATE (and constraint). */
async function assertPgError(
  p: Promise<unknown>,
  expected: { code: string; constraint?: string; message?: string },
): Promise<void> {
  let error: PgError | undefined;
  try {
    await p;
  } catch (e) {
    error = e as PgError;
  }
  assert.ok(error, `expected SQLSTATE ${expected.code}, but it succeeded`);
  const actual: { code?: string; constraint?: string; message?: string } = {
    code: error.code,
  };
  if ("constraint" in expected) actual.constraint = error.constraint_name;
  if ("message" in expected) actual.message = error.message;
  assert.deepEqual(actual, expected, String(error));
}

/** The columns a finished run needs besides its status. */
function finished(at = "2026-11-29T10:00:00Z") {
  return { finished_at: at, outcome_source: "report" };
}

async function settings(sql: Queryable) {
  const [s] = await sql<
    {
      last_success_at: string | null;
      last_success_dispatch_id: string | null;
      last_success_s3_key: string | null;
    }[]
  >`
    select to_char(last_success_at at time zone 'UTC',
                   'YYYY-MM-DD"T"HH24:MI:SS"Z"') as last_success_at,
           last_success_dispatch_id::text, last_success_s3_key
      from public.backup_settings`;
  return s;
}

const NO_SUCCESS = {
  last_success_at: null,
  last_success_dispatch_id: null,
  last_success_s3_key: null,
};

/**
 * Runs `fn` inside a transaction as a client role would under Supabase:
 * `role` with the given JWT claims, as PostgREST sets them. Rolled back.
 */
async function asClient<T>(
  sql: Sql,
  role: "authenticated" | "anon",
  claims: Record<string, unknown> | null,
  fn: (tx: Tx) => Promise<T>,
): Promise<T> {
  let result: T | undefined;
  await sql.begin(async (tx) => {
    await tx`select set_config('request.jwt.claims', ${
      claims ? JSON.stringify(claims) : ""
    }, true)`;
    await tx.unsafe(`set local role ${role}`);
    result = await fn(tx);
    throw new Rollback();
  }).catch((e) => {
    if (!(e instanceof Rollback)) throw e;
  });
  return result as T;
}
class Rollback extends Error {}

// --- one run at a time ---------------------------------------------------------

Deno.test(
  "a second in-progress backup is refused by backup_history_one_in_progress",
  withDb(async (sql) => {
    await insertRun(sql);
    await assertPgError(insertRun(sql), {
      code: "23505",
      constraint: "backup_history_one_in_progress",
      message:
        'duplicate key value violates unique constraint "backup_history_one_in_progress"',
    });
    const rows = await sql`
      select status from public.backup_history order by id`;
    assert.deepEqual([...rows], [{ status: "in_progress" }]);
  }),
);

Deno.test(
  "a new backup can start once the running one has finished",
  withDb(async (sql) => {
    const first = await insertRun(sql);
    await sql`
      update public.backup_history
         set status = 'failed', failure_reason = 'step_failed',
             finished_at = now(), outcome_source = 'report'
       where id = ${first.id}`;
    await insertRun(sql);
    const rows = await sql`
      select status from public.backup_history order by id`;
    assert.deepEqual([...rows], [{ status: "failed" }, {
      status: "in_progress",
    }]);
  }),
);

// --- check constraints ---------------------------------------------------------

Deno.test(
  "status outside in_progress/success/failed is rejected",
  withDb(async (sql) => {
    await assertPgError(insertRun(sql, { status: "running" }), {
      code: "23514",
      constraint: "backup_history_status_check",
    });
    await assertPgError(insertRun(sql, { status: "SUCCESS" }), {
      code: "23514",
      constraint: "backup_history_status_check",
    });
  }),
);

Deno.test(
  "an unknown failure_reason is rejected",
  withDb(async (sql) => {
    await assertPgError(
      insertRun(sql, {
        status: "failed",
        failure_reason: "exploded",
        ...finished(),
      }),
      { code: "23514", constraint: "backup_history_failure_reason_check" },
    );
    for (
      const reason of [
        "step_failed",
        "cancelled",
        "timed_out",
        "dispatch_failed",
        "lost",
      ]
    ) {
      await insertRun(sql, {
        status: "failed",
        failure_reason: reason,
        ...finished(),
      });
    }
    const [{ n }] =
      await sql`select count(*)::int as n from public.backup_history`;
    assert.equal(n, 5);
  }),
);

Deno.test(
  "sha256 must be 64 lowercase hex digits",
  withDb(async (sql) => {
    const good = "0123456789abcdef".repeat(4);
    for (const bad of [good.toUpperCase(), good.slice(1), good + "0", "xyz"]) {
      await assertPgError(insertRun(sql, { sha256: bad }), {
        code: "23514",
        constraint: "backup_history_sha256_check",
      });
    }
    await insertRun(sql, { sha256: good });
    const rows = await sql`select sha256 from public.backup_history`;
    assert.deepEqual([...rows], [{ sha256: good }]);
  }),
);

Deno.test(
  "a delivery's body hash is a SHA-256 digest's 32 bytes, or none",
  withDb(async (sql) => {
    const run = await insertRun(sql);
    const deliver = (id: string, hash: string | null) =>
      sql`insert into public.backup_report_deliveries
            (webhook_id, dispatch_id, body_sha256)
          values (${id}, ${run.dispatch_id}, decode(${hash}, 'hex'))`;
    const good = "0123456789abcdef".repeat(4);
    for (const bad of [good.slice(2), good + "00", ""]) {
      await assertPgError(deliver(`msg_${bad.length}`, bad), {
        code: "23514",
        constraint: "backup_report_deliveries_body_sha256_check",
      });
    }
    await deliver("msg_good", good);
    await deliver("msg_before_hashes", null);
    const rows = await sql`
      select webhook_id, encode(body_sha256, 'hex') as hash
        from public.backup_report_deliveries order by webhook_id`;
    assert.deepEqual([...rows], [
      { webhook_id: "msg_before_hashes", hash: null },
      { webhook_id: "msg_good", hash: good },
    ]);
  }),
);

Deno.test(
  "a failed run must have a failure_reason, and only a failed run may",
  withDb(async (sql) => {
    const run = await insertRun(sql);
    await assertPgError(
      sql`update public.backup_history
             set status = 'failed', finished_at = now(), outcome_source = 'report'
           where id = ${run.id}`,
      { code: "23514", constraint: "failed_has_reason" },
    );
    await assertPgError(
      sql`update public.backup_history set failure_reason = 'lost'
           where id = ${run.id}`,
      { code: "23514", constraint: "failed_has_reason" },
    );
    await assertPgError(
      insertRun(sql, {
        status: "success",
        s3_key: "k",
        failure_reason: "lost",
        ...finished(),
      }),
      { code: "23514", constraint: "failed_has_reason" },
    );
  }),
);

Deno.test(
  "a successful run must name its S3 object",
  withDb(async (sql) => {
    const run = await insertRun(sql);
    const toSuccess = (key: string | null) =>
      sql`update public.backup_history
             set status = 'success', s3_key = ${key},
                 finished_at = now(), outcome_source = 'report'
           where id = ${run.id}`;
    await assertPgError(toSuccess(null), {
      code: "23514",
      constraint: "success_has_object",
    });
    await assertPgError(toSuccess(""), {
      code: "23514",
      constraint: "success_has_object",
    });
    await toSuccess("backups/2026/11/29/a.dump");
    const rows = await sql`select status, s3_key from public.backup_history`;
    assert.deepEqual([...rows], [{
      status: "success",
      s3_key: "backups/2026/11/29/a.dump",
    }]);
  }),
);

Deno.test(
  "a finished run needs finished_at and outcome_source; a running one has neither",
  withDb(async (sql) => {
    await assertPgError(
      insertRun(sql, {
        status: "failed",
        failure_reason: "lost",
        outcome_source: "deadline",
      }),
      { code: "23514", constraint: "terminal_has_finish" },
    );
    await assertPgError(
      insertRun(sql, {
        status: "failed",
        failure_reason: "lost",
        finished_at: "2026-11-29T10:00:00Z",
      }),
      { code: "23514", constraint: "terminal_has_source" },
    );
    await assertPgError(
      insertRun(sql, { finished_at: "2026-11-29T10:00:00Z" }),
      { code: "23514", constraint: "terminal_has_finish" },
    );
  }),
);

// --- triggers ------------------------------------------------------------------

Deno.test(
  "marking a run successful records it as the last success in backup_settings",
  withDb(async (sql) => {
    assert.deepEqual({ ...await settings(sql) }, NO_SUCCESS);
    const run = await insertRun(sql);
    await sql`
      update public.backup_history
         set status = 'success', s3_key = 'backups/one.dump',
             finished_at = '2026-11-29T10:00:00Z', outcome_source = 'report'
       where id = ${run.id}`;
    assert.deepEqual({ ...await settings(sql) }, {
      last_success_at: "2026-11-29T10:00:00Z",
      last_success_dispatch_id: run.dispatch_id,
      last_success_s3_key: "backups/one.dump",
    });
  }),
);

Deno.test(
  "a success that is rolled back leaves backup_settings unchanged",
  withDb(async (sql) => {
    const run = await insertRun(sql);
    let inside: unknown;
    await sql.begin(async (tx) => {
      await tx`
        update public.backup_history
           set status = 'success', s3_key = 'backups/one.dump',
               finished_at = '2026-11-29T10:00:00Z', outcome_source = 'report'
         where id = ${run.id}`;
      inside = { ...await settings(tx) };
      throw new Rollback();
    }).catch((e) => {
      if (!(e instanceof Rollback)) throw e;
    });
    // Same transaction: already visible before commit ...
    assert.deepEqual(inside, {
      last_success_at: "2026-11-29T10:00:00Z",
      last_success_dispatch_id: run.dispatch_id,
      last_success_s3_key: "backups/one.dump",
    });
    // ... and gone with the rollback.
    assert.deepEqual({ ...await settings(sql) }, NO_SUCCESS);
    const rows = await sql`select status from public.backup_history`;
    assert.deepEqual([...rows], [{ status: "in_progress" }]);
  }),
);

Deno.test(
  "an older success recorded late does not replace a newer last success",
  withDb(async (sql) => {
    const newer = await insertRun(sql, {
      status: "success",
      s3_key: "backups/newer.dump",
      ...finished("2026-11-29T12:00:00Z"),
    });
    await insertRun(sql, {
      status: "success",
      s3_key: "backups/older.dump",
      ...finished("2026-11-29T09:00:00Z"),
    });
    assert.deepEqual({ ...await settings(sql) }, {
      last_success_at: "2026-11-29T12:00:00Z",
      last_success_dispatch_id: newer.dispatch_id,
      last_success_s3_key: "backups/newer.dump",
    });
  }),
);

Deno.test(
  "updated_at is set by the database on every update",
  withDb(async (sql) => {
    const run = await insertRun(sql, { updated_at: "2000-01-01T00:00:00Z" });
    const [before] = await sql`
      select updated_at = '2000-01-01T00:00:00Z' as as_inserted
        from public.backup_history where id = ${run.id}`;
    assert.deepEqual({ ...before }, { as_inserted: true });
    // A caller's own updated_at is overridden with the transaction's now().
    const [after] = await sql.begin(async (tx) => {
      await tx`
        update public.backup_history
           set progress = '{"phase":"dump"}', updated_at = '2001-01-01T00:00:00Z'
         where id = ${run.id}`;
      return await tx`
        select updated_at = now() as is_now
          from public.backup_history where id = ${run.id}`;
    });
    assert.deepEqual({ ...after }, { is_now: true });
  }),
);

// --- migrations ----------------------------------------------------------------

Deno.test(
  "upgrading converts every stored hex body hash to its 32 bytes",
  withDb(async (sql, url) => {
    const run = await insertRun(sql);
    // The table as 20261130000200_report_hardening.sql left it.
    await sql.unsafe(`
      alter table public.backup_report_deliveries
        drop constraint backup_report_deliveries_body_sha256_check;
      alter table public.backup_report_deliveries
        alter column body_sha256 type text using encode(body_sha256, 'hex');
      alter table public.backup_report_deliveries
        add constraint backup_report_deliveries_body_sha256_check
        check (body_sha256 ~ '^[0-9a-f]{64}$');
      delete from supabase_migrations.schema_migrations
       where version = '20261201000100';
    `).simple();
    const hash = "fedcba9876543210".repeat(4);
    await sql`
      insert into public.backup_report_deliveries
        (webhook_id, dispatch_id, body_sha256)
      values ('msg_hex', ${run.dispatch_id}, ${hash}),
             ('msg_none', ${run.dispatch_id}, null)`;
    assert.deepEqual(await migrate(url), ["20261201000100"]);
    const rows = await sql`
      select webhook_id, pg_typeof(body_sha256)::text as type,
             encode(body_sha256, 'hex') as hash
        from public.backup_report_deliveries order by webhook_id`;
    assert.deepEqual([...rows], [
      { webhook_id: "msg_hex", type: "bytea", hash },
      { webhook_id: "msg_none", type: "bytea", hash: null },
    ]);
  }),
);

Deno.test(
  "a verification verdict must have its own mode and a boolean ok",
  withDb(async (sql) => {
    const run = await insertRun(sql, {
      status: "success",
      s3_key: "backups/a.dump",
      ...finished(),
    });
    const verify = (verdict: unknown) =>
      sql`update public.backup_history
             set verification = ${
        sql.json(verdict as never)
      }, verified_at = now()
           where id = ${run.id}`;
    for (
      const bad of [
        { x: { mode: "list", ok: true } },
        { mode: "list" },
        { ok: true },
        { mode: "list", ok: "yes" },
        { mode: "maybe", ok: true },
        ["list"],
      ]
    ) {
      await assertPgError(verify(bad), {
        code: "23514",
        constraint: "verification_shape",
      });
    }
    await verify({ mode: "restore", ok: false, mismatches: [{ ok: 1 }] });
    const [row] = await sql`
      select verification from public.backup_history where id = ${run.id}`;
    assert.deepEqual(row.verification, {
      mode: "restore",
      ok: false,
      mismatches: [{ ok: 1 }],
    });
  }),
);

Deno.test(
  "upgrading keeps a stored verdict without a mode, and checks every new one",
  withDb(async (sql, url) => {
    // The constraint as 20261130001200_restorable.sql left it, which let a
    // verdict without a mode through.
    await sql.unsafe(`
      alter table public.backup_history
        drop constraint verification_shape,
        add constraint verification_shape check (
          jsonb_typeof(verification) = 'object'
          and verification ->> 'mode' in ('list', 'restore')
          and jsonb_typeof(verification -> 'ok') = 'boolean');
      delete from supabase_migrations.schema_migrations
       where version = '20261201000200';
    `).simple();
    const old = await insertRun(sql, {
      status: "success",
      s3_key: "backups/old.dump",
      ...finished(),
    });
    await sql`
      update public.backup_history
         set verification = '{"x":{"mode":"list","ok":true}}'::jsonb,
             verified_at = now()
       where id = ${old.id}`;
    assert.deepEqual(await migrate(url), ["20261201000200"]);
    const [kept] = await sql`
      select verification from public.backup_history where id = ${old.id}`;
    assert.deepEqual(kept.verification, { x: { mode: "list", ok: true } });
    const [constraint] = await sql`
      select convalidated from pg_constraint
       where conname = 'verification_shape'`;
    assert.equal(constraint.convalidated, false);
    await assertPgError(
      sql`update public.backup_history
             set verification = '{"ok":true}'::jsonb where id = ${old.id}`,
      { code: "23514", constraint: "verification_shape" },
    );
  }),
);

Deno.test(
  "running the migrations again changes nothing",
  withDb(async (sql, url) => {
    await insertRun(sql);
    const before = await sql`
      select version, name from supabase_migrations.schema_migrations
       order by version`;
    assert.ok(before.length >= 1);
    assert.deepEqual(await migrate(url), []);
    assert.deepEqual(await migrate(url), []);
    const after = await sql`
      select version, name from supabase_migrations.schema_migrations
       order by version`;
    assert.deepEqual([...after], [...before]);
    const [{ runs, settings_rows }] = await sql`
      select (select count(*)::int from public.backup_history) as runs,
             (select count(*)::int from public.backup_settings) as settings_rows`;
    assert.deepEqual({ runs, settings_rows }, { runs: 1, settings_rows: 1 });
  }),
);

Deno.test(
  "migrations are recorded the way the Supabase CLI records them",
  withDb(async (sql) => {
    const files = [...Deno.readDirSync(
      new URL("../supabase/migrations/", import.meta.url),
    )]
      .map((e) => e.name)
      .filter((n) => n.endsWith(".sql"))
      .sort();
    const rows = await sql`
      select version, name, cardinality(statements) as statements
        from supabase_migrations.schema_migrations order by version`;
    assert.deepEqual(
      [...rows],
      files.map((f) => {
        const [, version, name] = /^([0-9]+)_(.+)\.sql$/.exec(f)!;
        return { version, name, statements: 1 };
      }),
    );
  }),
);

// --- row level security ----------------------------------------------------------

async function seedForRls(sql: Sql) {
  await sql`insert into public.backup_admins (user_id) values (${ADMIN})`;
  await insertRun(sql, {
    status: "failed",
    failure_reason: "lost",
    ...finished(),
  });
  await insertRun(sql);
}

Deno.test(
  "is_backup_admin is true exactly for users in backup_admins, and false for a session without sub",
  withDb(async (sql) => {
    await sql`insert into public.backup_admins (user_id) values (${ADMIN})`;
    const [r] = await sql`
      select public.is_backup_admin(${ADMIN}::uuid) as admin,
             public.is_backup_admin(${NOT_ADMIN}::uuid) as not_admin,
             public.is_backup_admin(null) as nobody`;
    assert.deepEqual({ ...r }, {
      admin: true,
      not_admin: false,
      nobody: false,
    });
    const asUser = await asClient(
      sql,
      "authenticated",
      { sub: NOT_ADMIN, role: "authenticated" },
      (tx) =>
        tx`select public.is_backup_admin(${ADMIN}::uuid) as admin,
                  public.is_backup_admin(auth.uid()) as me`,
    );
    // A client learns only about itself: no probing other users' ids.
    assert.deepEqual({ ...asUser[0] }, { admin: false, me: false });
    const asAdmin = await asClient(
      sql,
      "authenticated",
      { sub: ADMIN, role: "authenticated" },
      (tx) =>
        tx`select public.is_backup_admin(${ADMIN}::uuid) as admin,
                  public.is_backup_admin(auth.uid()) as me`,
    );
    assert.deepEqual({ ...asAdmin[0] }, { admin: true, me: true });
    // A session whose claims name no user learns nothing about anyone.
    for (const claims of [{ role: "authenticated" }, {}]) {
      const noSub = await asClient(
        sql,
        "authenticated",
        claims,
        (tx) => tx`select public.is_backup_admin(${ADMIN}::uuid) as admin`,
      );
      assert.deepEqual(
        { ...noSub[0] },
        { admin: false },
        JSON.stringify(claims),
      );
    }
    await asClient(
      sql,
      "anon",
      null,
      (tx) =>
        assertPgError(tx`select public.is_backup_admin(${ADMIN}::uuid)`, {
          code: "42501",
          message: "permission denied for function is_backup_admin",
        }),
    );
  }),
);

Deno.test(
  "an admin reads the history and settings through RLS",
  withDb(async (sql) => {
    await seedForRls(sql);
    const seen = await asClient(
      sql,
      "authenticated",
      { sub: ADMIN, role: "authenticated" },
      async (tx) => ({
        history: [
          ...await tx`
          select status from public.backup_history order by id`,
        ],
        settings: [...await tx`select id from public.backup_settings`],
      }),
    );
    assert.deepEqual(seen, {
      history: [{ status: "failed" }, { status: "in_progress" }],
      settings: [{ id: true }],
    });
  }),
);

Deno.test(
  "a signed-in user who is not an admin sees no rows",
  withDb(async (sql) => {
    await seedForRls(sql);
    for (const claims of [{ sub: NOT_ADMIN, role: "authenticated" }, {}]) {
      const seen = await asClient(
        sql,
        "authenticated",
        claims,
        async (tx) => ({
          history: [...await tx`select id from public.backup_history`],
          settings: [...await tx`select id from public.backup_settings`],
        }),
      );
      assert.deepEqual(seen, { history: [], settings: [] });
    }
  }),
);

Deno.test(
  "clients cannot write to any backup table, not even admins",
  withDb(async (sql) => {
    await seedForRls(sql);
    const denied = (table: string) => ({
      code: "42501",
      message: `permission denied for table ${table}`,
    });
    const clients = [
      ["authenticated", { sub: ADMIN, role: "authenticated" }],
      ["anon", { role: "anon" }],
    ] as const;
    for (const [role, claims] of clients) {
      const attempts: [string, (tx: Tx) => Promise<unknown>][] = [
        [
          "backup_history",
          (tx) =>
            tx`insert into public.backup_history (dispatch_id, trigger_source)
               values (${crypto.randomUUID()}, 'manual')`,
        ],
        [
          "backup_history",
          (tx) => tx`update public.backup_history set reason = 'x'`,
        ],
        ["backup_history", (tx) => tx`delete from public.backup_history`],
        [
          "backup_settings",
          (tx) =>
            tx`update public.backup_settings set start_deadline_seconds = 60`,
        ],
        ["backup_settings", (tx) => tx`delete from public.backup_settings`],
        [
          "backup_admins",
          (tx) =>
            tx`insert into public.backup_admins (user_id) values (${NOT_ADMIN})`,
        ],
        ["backup_admins", (tx) => tx`delete from public.backup_admins`],
        [
          "backup_report_deliveries",
          (tx) =>
            tx`insert into public.backup_report_deliveries (webhook_id, dispatch_id)
               values ('msg_1', ${crypto.randomUUID()})`,
        ],
      ];
      for (const [table, attempt] of attempts) {
        await asClient(
          sql,
          role,
          claims,
          (tx) => assertPgError(attempt(tx), denied(table)),
        );
      }
    }
    // Nothing changed.
    const [r] = await sql`
      select (select count(*)::int from public.backup_history) as runs,
             (select count(*)::int from public.backup_admins) as admins,
             (select count(*)::int from public.backup_report_deliveries) as deliveries,
             (select start_deadline_seconds from public.backup_settings) as deadline`;
    assert.deepEqual({ ...r }, {
      runs: 2,
      admins: 1,
      deliveries: 0,
      deadline: 600,
    });
  }),
);

Deno.test(
  "clients cannot read backup_admins or deliveries, and anon cannot read anything",
  withDb(async (sql) => {
    await seedForRls(sql);
    const cases = [
      ["authenticated", { sub: ADMIN }, "backup_admins"],
      ["authenticated", { sub: ADMIN }, "backup_report_deliveries"],
      ["anon", {}, "backup_history"],
      ["anon", {}, "backup_settings"],
      ["anon", {}, "backup_admins"],
      ["anon", {}, "backup_report_deliveries"],
    ] as const;
    for (const [role, claims, table] of cases) {
      await asClient(
        sql,
        role,
        claims,
        (tx) =>
          assertPgError(tx.unsafe(`select * from public.${table}`), {
            code: "42501",
            message: `permission denied for table ${table}`,
          }),
      );
    }
  }),
);

// --- alerts (the outbox) -----------------------------------------------------------

Deno.test(
  "clients cannot read or write the alert outbox, not even admins",
  withDb(async (sql) => {
    await seedForRls(sql);
    const cases = [
      ["authenticated", { sub: ADMIN, role: "authenticated" }],
      ["anon", {}],
    ] as const;
    for (const [role, claims] of cases) {
      for (const table of ["backup_notifications", "backup_alert_state"]) {
        await asClient(
          sql,
          role,
          claims,
          (tx) =>
            assertPgError(tx.unsafe(`select * from public.${table}`), {
              code: "42501",
              message: `permission denied for table ${table}`,
            }),
        );
      }
      await asClient(
        sql,
        role,
        claims,
        (tx) =>
          assertPgError(
            tx.unsafe(
              `insert into public.backup_notifications (event, destination, payload)
               values ('test', 'BACKUP_ALERT_WEBHOOK_URL', '{}')`,
            ),
            {
              code: "42501",
              message: "permission denied for table backup_notifications",
            },
          ),
      );
    }
  }),
);

Deno.test(
  "an alert row names a destination setting, never a URL, and a known event and status",
  withDb(async (sql) => {
    const insert = (columns: Record<string, string>) => {
      const c = {
        event: "failed",
        destination: "BACKUP_ALERT_WEBHOOK_URL",
        payload: "{}",
        status: "pending",
        ...columns,
      };
      return sql`
        insert into backup_notifications (event, destination, payload, status)
        values (${c.event}, ${c.destination}, ${c.payload}::text::jsonb,
                ${c.status})`;
    };
    for (
      const [columns, constraint] of [
        [
          { destination: "https://hooks.slack.com/services/T/B/x" },
          "backup_notifications_destination_check",
        ],
        [
          { destination: "BACKUP_ALERT_WEBHOOK_URL_10" },
          "backup_notifications_destination_check",
        ],
        [{ event: "panic" }, "backup_notifications_event_check"],
        [{ status: "sent" }, "backup_notifications_status_check"],
        [{ status: "delivered" }, "delivered_has_time"],
        [{ payload: "[]" }, "backup_notifications_payload_check"],
      ] as const
    ) {
      await assertPgError(insert(columns), { code: "23514", constraint });
    }
    await insert({ destination: "BACKUP_ALERT_WEBHOOK_URL_9" });
    const [row] = await sql`
      select status, attempts, webhook_id, next_attempt_at <= now() as due
        from backup_notifications`;
    assert.equal(row.status, "pending");
    assert.equal(row.attempts, 0);
    assert.match(row.webhook_id, /^msg_[0-9a-f]{32}$/);
    assert.equal(row.due, true);
    const [settings] = await sql`select alert_after_hours from backup_settings`;
    assert.equal(settings.alert_after_hours, 26);
    await assertPgError(
      sql`update backup_settings set alert_after_hours = 0`,
      { code: "23514", constraint: "backup_settings_alert_after_hours_check" },
    );
  }),
);

// --- notifications -------------------------------------------------------------

Deno.test(
  "every insert and update notifies 'backup_history' with the dispatch id",
  withDb(async (sql) => {
    const received: string[] = [];
    const { unlisten } = await sql.listen("backup_history", (payload) => {
      received.push(payload);
    });
    const waitFor = async (n: number) => {
      const deadline = Date.now() + 5000;
      while (received.length < n && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    };
    try {
      const run = await insertRun(sql);
      await waitFor(1);
      await sql`
        update public.backup_history set progress = '{"phase":"upload"}'
         where id = ${run.id}`;
      await waitFor(2);
      // A rolled-back change notifies nobody: the next notification is
      // the committed one after it.
      await sql.begin(async (tx) => {
        await tx`update public.backup_history set reason = 'r'
                  where id = ${run.id}`;
        throw new Rollback();
      }).catch((e) => {
        if (!(e instanceof Rollback)) throw e;
      });
      const other = crypto.randomUUID();
      await sql`
        update public.backup_history
           set status = 'failed', failure_reason = 'cancelled',
               finished_at = now(), outcome_source = 'report'
         where id = ${run.id}`;
      await insertRun(sql, { dispatch_id: other });
      await waitFor(4);
      assert.deepEqual(received, [
        run.dispatch_id,
        run.dispatch_id,
        run.dispatch_id,
        other,
      ]);
    } finally {
      await unlisten();
    }
  }),
);
