/**
 * Supabase-shaped PostgreSQL clusters for the restore drill
 * (tests/restore_drill_test.ts): each its own throwaway PostgreSQL 15 server,
 * because roles belong to a server and a new project must not see the
 * source's roles. The bootstrap superuser is `supabase_admin`, as on Supabase,
 * and the platform part (tests/fixtures/supabase_platform.sql) is built from
 * supabase/postgres's init scripts. `project: true` adds what a project builds
 * on it (tests/fixtures/supabase_project.sql), as its `postgres` user.
 *
 * Trust authentication on 127.0.0.1, fsync off: test data only.
 */

// deno-lint-ignore no-import-prefix
import postgres from "npm:postgres@3.4.9";
import { freePort } from "../../scripts/process.ts";
import { ROOT, run } from "./workflow_harness.ts";

const PG_BIN = "/usr/lib/postgresql/15/bin";
export const PLATFORM_SQL = `${ROOT}/tests/fixtures/supabase_platform.sql`;
export const PROJECT_SQL = `${ROOT}/tests/fixtures/supabase_project.sql`;

export interface SupabaseCluster {
  port: number;
  /** URL of database `db` (default `postgres`) as `user`. */
  url(user?: string, db?: string): string;
  /** A client as supabase_admin, the superuser, for inspecting. */
  admin: postgres.Sql;
  /** psql -f FILE as `user`; throws with psql's stderr on an error. */
  psqlFile(file: string, user: string, db?: string): Promise<void>;
  close(): Promise<void>;
}

const asRoot = Deno.uid() === 0;
/** As root the server runs as `postgres`, since PostgreSQL refuses root. */
function owner(cmd: string, args: string[]): [string, string[]] {
  return asRoot ? ["runuser", ["-u", "postgres", "--", cmd, ...args]] : [
    cmd,
    args,
  ];
}

async function must(
  cmd: string,
  args: string[],
  what: string,
  asOwner = true,
) {
  const [c, a] = asOwner ? owner(cmd, args) : [cmd, args];
  const r = await run(c, a);
  if (r.code !== 0) throw new Error(`${what} failed:\n${r.stderr}${r.stdout}`);
}

/** The uid and gid of the `postgres` account. */
function postgresIds(): [number, number] {
  const line = Deno.readTextFileSync("/etc/passwd").split("\n")
    .find((l) => l.startsWith("postgres:"));
  if (!line) throw new Error("no 'postgres' user to run the cluster as");
  const [, , uid, gid] = line.split(":");
  return [Number(uid), Number(gid)];
}

function scratchDir(): string {
  try {
    if (Deno.statSync("/dev/shm").isDirectory) return "/dev/shm";
  } catch { /* no tmpfs */ }
  return Deno.env.get("TMPDIR") ?? "/tmp";
}

/**
 * A new server with the platform part of a Supabase project, and the
 * project's own objects and rows when `project` is set.
 *
 * # Errors
 * Throws when initdb, the server or a fixture script fails.
 */
export async function startSupabaseCluster(
  o: { project: boolean },
): Promise<SupabaseCluster> {
  const dir = await Deno.makeTempDir({ dir: scratchDir(), prefix: "supa-" });
  const data = `${dir}/data`;
  if (asRoot) await Deno.chown(dir, ...postgresIds());
  const port = freePort();
  let started = false;
  const stop = async () => {
    if (started) {
      const [c, a] = owner(`${PG_BIN}/pg_ctl`, [
        "-D",
        data,
        "-m",
        "immediate",
        "-w",
        "stop",
      ]);
      await run(c, a);
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await must(`${PG_BIN}/initdb`, [
      "-D",
      data,
      "-U",
      "supabase_admin",
      "--auth=trust",
      "--encoding=UTF8",
      "--locale=C.UTF-8",
      "--no-sync",
    ], "initdb");
    const conf = [
      "",
      "listen_addresses = '127.0.0.1'",
      `port = ${port}`,
      `unix_socket_directories = '${dir}'`,
      "fsync = off",
      "synchronous_commit = off",
      "full_page_writes = off",
      "shared_buffers = 32MB",
      "",
    ].join("\n");
    await Deno.writeTextFile(`${data}/postgresql.conf`, conf, { append: true });
    await must(`${PG_BIN}/pg_ctl`, [
      "-D",
      data,
      "-l",
      `${dir}/postgres.log`,
      "-w",
      "-t",
      "60",
      "start",
    ], "pg_ctl start");
    started = true;
    const url = (user = "supabase_admin", db = "postgres") =>
      `postgres://${user}@127.0.0.1:${port}/${db}`;
    const psqlFile = async (file: string, user: string, db = "postgres") => {
      const r = await run("psql", [
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-f",
        file,
        "--dbname",
        url(user, db),
      ]);
      if (r.code !== 0) throw new Error(`psql -f ${file}: ${r.stderr}`);
    };
    await psqlFile(PLATFORM_SQL, "supabase_admin");
    if (o.project) {
      await psqlFile(PROJECT_SQL, "postgres");
    } else {
      // The restore target. On Supabase, supautils lets the project's
      // postgres user create and alter roles other than the platform's,
      // with attributes (NOBYPASSRLS) that plain PostgreSQL 15 reserves for
      // superusers. PostgreSQL has no such half-way privilege, so the
      // target's postgres is a superuser: the drill then proves that the
      // restore leaves the platform alone because of what the backup holds,
      // not because it was forbidden to touch it.
      await must(
        "psql",
        [
          "-X",
          "-q",
          "-v",
          "ON_ERROR_STOP=1",
          "-c",
          "alter role postgres superuser",
          "--dbname",
          url(),
        ],
        "alter role postgres superuser",
        false,
      );
    }
    const admin = postgres(url(), { max: 2, onnotice: () => {} });
    return {
      port,
      url,
      admin,
      psqlFile,
      async close() {
        await admin.end({ timeout: 5 });
        await stop();
      },
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
