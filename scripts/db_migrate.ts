// Applies supabase/migrations/*.sql to the database at SUPABASE_DB_URL.
//
//   SUPABASE_DB_URL=postgres://... deno task db:migrate
//
// Each migration runs in its own transaction and is recorded in
// supabase_migrations.schema_migrations, the table the Supabase CLI keeps, so
// `supabase db push` later sees these as applied (and this script skips the
// ones the CLI applied). On plain PostgreSQL (no auth.uid()), the Supabase
// shim (supabase/shim/supabase_shim.sql) is applied first; on a Supabase
// project it never is.

// deno-lint-ignore no-import-prefix
import postgres from "npm:postgres@3.4.9";

const MIGRATIONS_DIR = new URL("../supabase/migrations/", import.meta.url);
const SHIM_FILE = new URL(
  "../supabase/shim/supabase_shim.sql",
  import.meta.url,
);
// Serializes concurrent migrators on the same database.
const LOCK_KEY = 7_242_019_001;
// <version>_<name>.sql, as `supabase migration new` names them.
const FILE_PATTERN = /^([0-9]+)_(.+)\.sql$/;

export type MigrationFile = { version: string; name: string; path: URL };

/** The migration files in the order they apply (by version). */
export async function migrationFiles(
  log: (s: string) => void = () => {},
): Promise<MigrationFile[]> {
  const files: MigrationFile[] = [];
  for await (const entry of Deno.readDir(MIGRATIONS_DIR)) {
    if (!entry.isFile || !entry.name.endsWith(".sql")) continue;
    const m = FILE_PATTERN.exec(entry.name);
    if (!m) {
      log(`skipping ${entry.name}: name must be <version>_<name>.sql`);
      continue;
    }
    files.push({
      version: m[1],
      name: m[2],
      path: new URL(entry.name, MIGRATIONS_DIR),
    });
  }
  files.sort((a, b) =>
    a.version.length - b.version.length ||
    (a.version < b.version ? -1 : a.version > b.version ? 1 : 0)
  );
  for (let i = 1; i < files.length; i++) {
    if (files[i].version === files[i - 1].version) {
      throw new Error(`two migrations have version ${files[i].version}`);
    }
  }
  return files;
}

/**
 * Brings the database at `url` up to date. Returns the versions it applied
 * (empty when there was nothing to do).
 */
export async function migrate(
  url: string,
  opts: { log?: (s: string) => void } = {},
): Promise<string[]> {
  const log = opts.log ?? (() => {});
  const files = await migrationFiles(log);
  const shim = await Deno.readTextFile(SHIM_FILE);
  // One connection; no prepared statements, so that the Supabase pooler in
  // transaction mode works too.
  const sql = postgres(url, {
    max: 1,
    prepare: false,
    onnotice: () => {},
    connect_timeout: 30,
    connection: { application_name: "db_migrate" },
  });
  const applied: string[] = [];
  try {
    await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${LOCK_KEY})`;
      const [{ missing }] = await tx<{ missing: boolean }[]>`
        select to_regprocedure('auth.uid()') is null as missing`;
      if (missing) {
        log("no auth.uid(): plain PostgreSQL, applying the Supabase shim");
        await tx.unsafe(shim).simple();
      }
      // What the Supabase CLI creates (pkg/migration/history.go).
      await tx.unsafe(`
        create schema if not exists supabase_migrations;
        create table if not exists supabase_migrations.schema_migrations (
          version text not null primary key
        );
        alter table supabase_migrations.schema_migrations
          add column if not exists statements text[];
        alter table supabase_migrations.schema_migrations
          add column if not exists name text;
      `).simple();
    });

    for (const file of files) {
      const text = await Deno.readTextFile(file.path);
      const done = await sql.begin(async (tx) => {
        await tx`select pg_advisory_xact_lock(${LOCK_KEY})`;
        const seen = await tx`
          select 1 from supabase_migrations.schema_migrations
           where version = ${file.version}`;
        if (seen.length > 0) return false;
        log(`applying ${file.version}_${file.name}.sql`);
        try {
          await tx.unsafe(text).simple();
        } catch (e) {
          throw new MigrationError(file, e);
        }
        await tx`
          insert into supabase_migrations.schema_migrations
            (version, name, statements)
          values (${file.version}, ${file.name}, ${[text]})`;
        return true;
      });
      if (done) applied.push(file.version);
    }
  } finally {
    await sql.end({ timeout: 5 });
  }
  log(
    applied.length
      ? `applied ${applied.length} migration(s)`
      : "database is up to date",
  );
  return applied;
}

class MigrationError extends Error {
  constructor(file: MigrationFile, cause: unknown) {
    super(`${file.version}_${file.name}.sql failed: ${describe(cause)}`);
    this.name = "MigrationError";
  }
}

/** A one-paragraph description of an error, with PostgreSQL's details. */
function describe(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const pg = e as Error & {
    code?: string;
    detail?: string;
    hint?: string;
    position?: string;
    where?: string;
  };
  const parts = [pg.message];
  if (pg.code) parts.push(`(SQLSTATE ${pg.code})`);
  if (pg.detail) parts.push(`detail: ${pg.detail}`);
  if (pg.hint) parts.push(`hint: ${pg.hint}`);
  if (pg.where) parts.push(`where: ${pg.where}`);
  if (pg.position) parts.push(`at character ${pg.position}`);
  return parts.join(" ");
}

/** Removes the URL's password from text, wherever it appears. */
function redact(text: string, url: string): string {
  let password = "";
  try {
    password = decodeURIComponent(new URL(url).password);
  } catch {
    // Not a URL postgres.js would accept either; nothing to hide.
  }
  return password ? text.split(password).join("***") : text;
}

async function main(): Promise<number> {
  const url = Deno.env.get("SUPABASE_DB_URL");
  if (!url) {
    console.error(
      "db_migrate: SUPABASE_DB_URL is not set (the database's connection string, postgres://USER:PASSWORD@HOST:PORT/DB)",
    );
    return 1;
  }
  try {
    await migrate(url, { log: (s) => console.log(`db_migrate: ${s}`) });
    return 0;
  } catch (e) {
    console.error(`db_migrate: error: ${redact(describe(e), url)}`);
    return 1;
  }
}

if (import.meta.main) {
  Deno.exit(await main());
}
