// Fresh, migrated databases for tests, on the server at TEST_DATABASE_URL
// (a superuser URL; scripts/test.sh starts a throwaway cluster and sets it).
//
// The migrations run once, into a template database named after a hash of the
// shim and migration files; every freshDatabase() is a cheap copy of it
// (CREATE DATABASE ... TEMPLATE). Editing a migration changes the hash, so
// the next run builds a new template and drops the stale ones.

// deno-lint-ignore no-import-prefix
import postgres from "npm:postgres@3.4.9";
import { migrate } from "../../scripts/db_migrate.ts";

export type Sql = postgres.Sql;
/** A client or a transaction: what `sql` and `sql.begin`'s callback get. */
export type Queryable = postgres.Sql | postgres.TransactionSql;
export type Tx = postgres.TransactionSql;

export interface FreshDatabase {
  /** URL of the new database, same server and credentials. */
  url: string;
  /** A client connected to it (as the superuser). */
  sql: postgres.Sql;
  /** Ends `sql` and drops the database. */
  close(): Promise<void>;
}

const TEMPLATE_PREFIX = "backup_test_tpl_";
// Serializes template builds across test processes sharing one server.
const TEMPLATE_LOCK_KEY = 7_242_019_002;

export function testDatabaseUrl(): string {
  const url = Deno.env.get("TEST_DATABASE_URL");
  if (!url) {
    throw new Error(
      "TEST_DATABASE_URL is not set: run the tests with `bash scripts/test.sh`, " +
        "or point it at a PostgreSQL 15 superuser URL (postgres://postgres@127.0.0.1:PORT/postgres)",
    );
  }
  return url;
}

/** `url` with its database name replaced by `db`. */
export function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = "/" + encodeURIComponent(db);
  return u.toString();
}

function quoteIdent(name: string): string {
  return '"' + name.replaceAll('"', '""') + '"';
}

function quiet(url: string, max = 1): postgres.Sql {
  return postgres(url, { max, onnotice: () => {} });
}

/** Runs `fn` with a short-lived superuser connection to the server. */
async function withAdmin<T>(fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = quiet(testDatabaseUrl());
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

async function schemaHash(): Promise<string> {
  const root = new URL("../../supabase/", import.meta.url);
  const parts = [
    "shim/supabase_shim.sql",
    ...[...Deno.readDirSync(new URL("migrations/", root))]
      .filter((e) => e.isFile && e.name.endsWith(".sql"))
      .map((e) => "migrations/" + e.name)
      .sort(),
  ];
  const enc = new TextEncoder();
  const chunks: Uint8Array[] = [];
  for (const p of parts) {
    chunks.push(enc.encode(`${p}\n`));
    chunks.push(await Deno.readFile(new URL(p, root)));
    chunks.push(enc.encode("\n\0"));
  }
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.length;
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  return [...digest.slice(0, 8)]
    .map((b) => b.toString(16).padStart(2, "0"))
    .join("");
}

async function buildTemplate(): Promise<string> {
  const template = TEMPLATE_PREFIX + await schemaHash();
  await withAdmin(async (admin) => {
    // A session lock on this (single) connection, held while building.
    await admin`select pg_advisory_lock(${TEMPLATE_LOCK_KEY})`;
    try {
      const [row] = await admin<{ datistemplate: boolean }[]>`
        select datistemplate from pg_database where datname = ${template}`;
      // datistemplate is set last, so a template without it is a leftover
      // of an interrupted build.
      if (row?.datistemplate) return;
      if (row) {
        await admin.unsafe(
          `drop database ${quoteIdent(template)} with (force)`,
        );
      }
      await admin.unsafe(`create database ${quoteIdent(template)}`);
      await migrate(withDatabase(testDatabaseUrl(), template));
      await admin.unsafe(
        `alter database ${quoteIdent(template)} is_template true`,
      );
      // Templates of older migrations are of no further use.
      const stale = await admin<{ datname: string }[]>`
        select datname from pg_database
         where starts_with(datname, ${TEMPLATE_PREFIX})
           and datname <> ${template}`;
      for (const { datname } of stale) {
        try {
          await admin.unsafe(
            `alter database ${quoteIdent(datname)} is_template false`,
          );
          await admin.unsafe(
            `drop database ${quoteIdent(datname)} with (force)`,
          );
        } catch {
          // Another run may be using it; it is dropped next time.
        }
      }
    } finally {
      await admin`select pg_advisory_unlock(${TEMPLATE_LOCK_KEY})`;
    }
  });
  return template;
}

let templateReady: Promise<string> | undefined;

/** The name of the migrated template database, built once per process. */
export function migratedTemplate(): Promise<string> {
  templateReady ??= buildTemplate().catch((e) => {
    templateReady = undefined;
    throw e;
  });
  return templateReady;
}

/**
 * A new database with every migration applied, unique to the caller. Always
 * `await db.close()` (in a finally) to end the client and drop it.
 */
export async function freshDatabase(): Promise<FreshDatabase> {
  const base = testDatabaseUrl();
  const template = await migratedTemplate();
  const name = `backup_test_${Date.now().toString(36)}_${
    crypto.randomUUID().slice(0, 8)
  }`;
  await withAdmin((admin) =>
    admin.unsafe(
      `create database ${quoteIdent(name)} template ${quoteIdent(template)}`,
    )
  );
  const url = withDatabase(base, name);
  const sql = quiet(url, 5);
  let closed = false;
  return {
    url,
    sql,
    async close() {
      if (closed) return;
      closed = true;
      try {
        await sql.end({ timeout: 5 });
      } finally {
        await withAdmin((admin) =>
          admin.unsafe(
            `drop database if exists ${quoteIdent(name)} with (force)`,
          )
        );
      }
    },
  };
}
