/**
 * The workflow's supabase-format dump step (workflow/dump_database.sh) on its
 * own, run on a stand-in runner against a Supabase-shaped project
 * (tests/support/supabase_fixture.ts): what each part holds and leaves out,
 * the manifest, and how a failure is reported. The whole round trip, backup
 * under act and restore, is tests/restore_drill_test.ts.
 */

import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix
import postgres from "npm:postgres@3.4.9";
import { testDatabaseUrl, withDatabase } from "./support/db.ts";
import { startSupabaseCluster } from "./support/supabase_fixture.ts";
import { ROOT, run, runStep, startRunner } from "./support/workflow_harness.ts";
import type { Runner } from "./support/workflow_harness.ts";
import { startReceiver } from "./support/workflow_receiver.ts";

const SECRET = "whsec_" + btoa("restore-dump-test-secret-0123456!");
const DISPATCH_ID = "0192f3a4-5b6c-7d8e-9f00-112233445566";

/** Runs the dump step the way the workflow does, reporting to a stand-in. */
async function dumpStep(
  runner: Runner,
  url: string,
  extra: Record<string, string> = {},
) {
  const receiver = await startReceiver(SECRET);
  try {
    const r = await runStep(runner, "dump_database.sh", {
      BACKUP_DATABASE_URL: url,
      BACKUP_FINALIZE_URL: receiver.url,
      BACKUP_WEBHOOK_SECRET: SECRET,
      DISPATCH_ID,
      ...extra,
    });
    return { ...r, reports: receiver.reports };
  } finally {
    await receiver.close();
  }
}

Deno.test(
  "dump_database.sh writes a tar.gz of roles, schema and data without the platform's objects, and a manifest that hashes each part",
  { sanitizeOps: false, sanitizeResources: false },
  async () => {
    const source = await startSupabaseCluster({ project: true });
    const runner = await startRunner();
    const dir = await Deno.makeTempDir();
    try {
      // BACKUP_FORMAT unset: supabase is the default.
      const r = await dumpStep(runner, source.url("postgres"));
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const dump = JSON.parse(runner.file("dump.json")!);
      assert.equal(dump.format, "supabase");
      assert.match(dump.file, /\/\d{8}T\d{6}Z\.tar\.gz$/);
      assert.match(r.stdout, /Dumped \d+ bytes \(supabase format\), sha256 /);
      assert.deepEqual(r.reports.map((x) => x.body.progress), [
        { phase: "dumped", size_bytes: dump.size_bytes },
      ]);

      const x = await run("tar", ["-xzvf", dump.file, "-C", dir]);
      assert.equal(x.code, 0, x.stderr);
      assert.deepEqual(x.stdout.trim().split("\n"), [
        "manifest.json",
        "roles.sql",
        "schema.sql",
        "data.sql",
      ]);
      const read = (name: string) => Deno.readTextFileSync(`${dir}/${name}`);
      const manifest = JSON.parse(read("manifest.json"));
      const [version] = await source.admin`show server_version`;
      assert.equal(manifest.format, "supabase");
      assert.equal(manifest.manifest_version, 1);
      assert.equal(manifest.dispatch_id, DISPATCH_ID);
      assert.equal(manifest.server_version, version.server_version);
      assert.match(String(manifest.server_version_num), /^15\d{4}$/);
      assert.match(manifest.pg_dump_version, /^pg_dump \(PostgreSQL\) 15/);
      for (const part of manifest.parts) {
        const bytes = await Deno.readFile(`${dir}/${part.name}`);
        const sha = await crypto.subtle.digest("SHA-256", bytes);
        assert.equal(part.size_bytes, bytes.length, part.name);
        assert.equal(
          part.sha256,
          [...new Uint8Array(sha)].map((b) => b.toString(16).padStart(2, "0"))
            .join(""),
          part.name,
        );
      }

      // Roles: the project's, never the platform's, and nothing a
      // non-superuser may not say.
      const roles = read("roles.sql");
      for (const role of ["app_reader", "app_writer", "reporting"]) {
        assert.match(roles, new RegExp(`^CREATE ROLE "${role}";$`, "m"));
      }
      assert.match(
        roles,
        /^GRANT "app_reader" TO "reporting" GRANTED BY "postgres";$/m,
      );
      assert.match(
        roles,
        /^ALTER ROLE "reporting" SET "statement_timeout" TO '30s';$/m,
      );
      assert.match(
        roles,
        /^ALTER ROLE "anon" SET "statement_timeout" TO '3s';$/m,
      );
      assert.doesNotMatch(
        roles,
        /^(CREATE|ALTER) ROLE "(postgres|anon|authenticated|authenticator|service_role|supabase_\w+|dashboard_user)"(?! SET "statement_timeout")/m,
      );
      assert.doesNotMatch(
        roles,
        /NOSUPERUSER|NOREPLICATION|PASSWORD|^\\restrict/m,
      );
      assert.doesNotMatch(roles, /GRANT "[^"]+" TO "(postgres|authenticator)"/);

      // Schema: no platform schema, event trigger or publication.
      const schema = read("schema.sql");
      assert.match(schema, /^CREATE TABLE IF NOT EXISTS "public"\."notes" \(/m);
      assert.match(schema, /^CREATE POLICY "users read their own notes"/m);
      assert.match(
        schema,
        /^ALTER PUBLICATION "supabase_realtime" ADD TABLE ONLY "public"\."notes";$/m,
      );
      assert.doesNotMatch(
        schema,
        /"(auth|storage|realtime)"\."(users|objects|buckets|schema_migrations)" \(/,
      );
      assert.doesNotMatch(
        schema,
        /^(CREATE SCHEMA[^\n]*"(auth|storage|realtime|extensions)"|CREATE EVENT TRIGGER|CREATE PUBLICATION|ALTER DEFAULT PRIVILEGES FOR ROLE "supabase_admin"|COMMENT ON EXTENSION)/m,
      );

      // Data: triggers off, the project's rows in auth and storage, not the
      // platform's bookkeeping.
      const data = read("data.sql");
      assert.ok(data.startsWith("SET session_replication_role = replica;\n"));
      assert.match(data, /^COPY "auth"\."users" \(/m);
      assert.match(data, /^COPY "storage"\."objects" \(/m);
      assert.match(data, /^COPY "public"\."notes" \(/m);
      assert.doesNotMatch(
        data,
        /^COPY "(auth"\."schema_migrations|storage"\."migrations|realtime"\.)/m,
      );
      assert.ok(data.trimEnd().endsWith("RESET ALL;"));
    } finally {
      await Deno.remove(dir, { recursive: true });
      await runner.close();
      await source.close();
    }
  },
);

Deno.test(
  "dump_database.sh fails naming the schema part when the user may not read a table, and writes no archive",
  { sanitizeOps: false, sanitizeResources: false },
  async () => {
    const source = await startSupabaseCluster({ project: true });
    const runner = await startRunner();
    try {
      await source.admin.unsafe("create role limited login");
      const r = await dumpStep(runner, source.url("limited"), {
        BACKUP_FORMAT: "supabase",
      });
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(
        r.stdout,
        /^::error title=Backup::pg_dump --schema-only failed \(see the error above\)\.$/m,
      );
      assert.match(runner.file("dump.stderr")!, /permission denied for/);
      assert.equal(runner.file("dump.state"), "exit 1\n");
      assert.equal(runner.file("dump.json"), null);
      assert.deepEqual(r.reports, []);
    } finally {
      await runner.close();
      await source.close();
    }
  },
);

Deno.test("check_backup_settings.sh refuses a BACKUP_FORMAT other than supabase or custom", async () => {
  const runner = await startRunner();
  try {
    const r = await runStep(runner, "check_backup_settings.sh", {
      BACKUP_DATABASE_URL: "postgresql://u@127.0.0.1:1/db",
      AWS_ACCESS_KEY_ID: "id",
      AWS_SECRET_ACCESS_KEY: "secret",
      BACKUP_S3_BUCKET: "bucket",
      BACKUP_FORMAT: "directory",
    });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.equal(
      r.stdout,
      '::error title=Backup::Variable BACKUP_FORMAT must be "supabase" (the default) or "custom".\n',
    );
    assert.equal(runner.file("config.state"), "exit 1\n");
  } finally {
    await runner.close();
  }
});

// scripts/test.sh shellchecks workflow/*.sh; restore.sh runs on users'
// machines and deserves the same.
Deno.test("scripts/restore.sh passes shellcheck", async () => {
  const r = await run("shellcheck", [`${ROOT}/scripts/restore.sh`]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
});

Deno.test("scripts/restore.sh without a backup prints its usage and exits 2", async () => {
  const r = await run("bash", [`${ROOT}/scripts/restore.sh`]);
  assert.equal(r.code, 2);
  assert.equal(r.stdout, "");
  assert.ok(
    r.stderr.startsWith(
      "Restores a backup made by .github/workflows/backup.yml.\n\n" +
        "  scripts/restore.sh [--force] [--sha256 HEX] BACKUP [TARGET_DATABASE_URL]\n",
    ),
    r.stderr,
  );

  const bad = await run("bash", [
    `${ROOT}/scripts/restore.sh`,
    "--sha256",
    "abc",
    "backups/x.tar.gz",
    "postgresql://u@127.0.0.1:1/db",
  ]);
  assert.equal(bad.code, 2);
  assert.equal(bad.stderr, "restore: --sha256 takes 64 hex digits\n");
  const noTarget = await run("bash", [
    `${ROOT}/scripts/restore.sh`,
    "backups/x.tar.gz",
  ], { env: { PATH: Deno.env.get("PATH")! }, clearEnv: true });
  assert.equal(noTarget.code, 2);
  assert.equal(
    noTarget.stderr,
    "restore: no target: pass TARGET_DATABASE_URL or set it in the environment\n",
  );
});

Deno.test("restore.sh's platform schemas are the ones the workflow leaves out of the schema part", () => {
  const dump = Deno.readTextFileSync(`${ROOT}/workflow/dump_database.sh`);
  const restore = Deno.readTextFileSync(`${ROOT}/scripts/restore.sh`);
  const fromDump = dump.match(/^\s{2}platform_schemas='([^']+)'$/m)?.[1]
    .split("|").map((s) => s.replaceAll("*", ".*"));
  const fromRestore = restore.match(/^platform='\^\(([^)]+)\)\$'$/m)?.[1]
    .split("|");
  assert.ok(fromDump && fromRestore);
  assert.ok(fromDump.includes("auth") && fromDump.includes("storage"));
  assert.deepEqual(fromRestore, fromDump);
});

Deno.test(
  "restore.sh keeps the target's password and the download link off the command lines of psql, pg_restore and curl",
  async () => {
    const base = testDatabaseUrl();
    const admin = postgres(base, { max: 1, onnotice: () => {} });
    const tag = `restore_ps_${Date.now().toString(36)}`;
    const dir = await Deno.makeTempDir({ prefix: "restore-ps-" });
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      async (req) => {
        const url = new URL(req.url);
        if (url.searchParams.get("X-Amz-Signature") !== "sig-never-in-ps") {
          return new Response("forbidden", { status: 403 });
        }
        return new Response(await Deno.readFile(`${dir}/backup.dump`));
      },
    );
    try {
      await admin.unsafe(`create database ${tag}_src`);
      await admin.unsafe(`create database ${tag}_dst`);
      const src = postgres(withDatabase(base, `${tag}_src`), { max: 1 });
      await src`create table items (id int primary key, name text)`;
      await src`insert into items values (1, 'kept')`;
      await src.end();
      const dumped = await run("pg_dump", [
        "-Fc",
        "-f",
        `${dir}/backup.dump`,
        withDatabase(base, `${tag}_src`),
      ]);
      assert.equal(dumped.code, 0, dumped.stderr);
      const sha = [
        ...new Uint8Array(
          await crypto.subtle.digest(
            "SHA-256",
            await Deno.readFile(`${dir}/backup.dump`),
          ),
        ),
      ].map((b) => b.toString(16).padStart(2, "0")).join("");

      // Each tool as a wrapper that logs its arguments (and, for psql, the
      // password libpq gets from the environment), then runs the real one.
      await Deno.mkdir(`${dir}/bin`);
      for (const tool of ["psql", "pg_restore", "curl"]) {
        const real = (await run("bash", ["-c", `command -v ${tool}`])).stdout
          .trim();
        await Deno.writeTextFile(
          `${dir}/bin/${tool}`,
          `#!/usr/bin/env bash\nprintf '%s PGPASSWORD=%s\\n' "${tool} $*" "\${PGPASSWORD-}" >> "${dir}/args.log"\nexec "${real}" "$@"\n`,
          { mode: 0o755 },
        );
      }
      const target = new URL(withDatabase(base, `${tag}_dst`));
      target.password = "pa%40ss-never-in-ps";
      const { port } = server.addr as Deno.NetAddr;
      const link = `http://127.0.0.1:${port}/backups/` +
        `20261201T000000Z_${DISPATCH_ID}.dump?X-Amz-Signature=sig-never-in-ps`;
      const r = await run("bash", [
        `${ROOT}/scripts/restore.sh`,
        "--sha256",
        sha,
        link,
      ], {
        env: {
          PATH: `${dir}/bin:${Deno.env.get("PATH")}`,
          TARGET_DATABASE_URL: target.toString(),
        },
      });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const log = await Deno.readTextFile(`${dir}/args.log`);
      const lines = log.trimEnd().split("\n");
      assert.deepEqual(
        [...new Set(lines.map((l) => l.split(" ")[0]))].sort(),
        ["curl", "pg_restore", "psql"],
      );
      for (const line of lines) {
        assert.ok(!line.includes("pa%40ss-never-in-ps"), line);
        assert.ok(!line.includes("sig-never-in-ps"), line);
        if (!line.startsWith("curl")) {
          assert.ok(line.endsWith(" PGPASSWORD=pa@ss-never-in-ps"), line);
        }
      }
      const dst = postgres(withDatabase(base, `${tag}_dst`), { max: 1 });
      assert.deepEqual(
        [...await dst`select id, name from items`],
        [{ id: 1, name: "kept" }],
      );
      await dst.end();
    } finally {
      await server.shutdown();
      for (const db of [`${tag}_src`, `${tag}_dst`]) {
        await admin.unsafe(`drop database if exists ${db} with (force)`);
      }
      await admin.end();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
