/**
 * The restore drill: a backup nobody has restored is a hope, not a backup.
 *
 * A Supabase-shaped source project (tests/support/supabase_fixture.ts) is
 * backed up by the real workflow under `act`, started by trigger-backup and
 * reported to finalize-backup as in production; then the commands of
 * README.md's "Restore" section, read from the README itself, restore the
 * object with scripts/restore.sh:
 *  - supabase format (the default) into a fresh Supabase-shaped project,
 *    checking every user table's rows, the policies, functions, triggers,
 *    grants, custom roles, auth.users and storage.objects rows, and that no
 *    platform-owned object changed;
 *  - custom format into plain PostgreSQL, checking the same data.
 * restore.sh's refusals (a tampered object, a tampered part, a non-empty
 * target) and a download by URL are exercised on the same backup.
 *
 * Needs TEST_DATABASE_URL and TEST_S3_ENDPOINT (scripts/test.sh sets both);
 * skipped, with the reason printed, only when `act` is not installed.
 */

import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix
import postgres from "npm:postgres@3.4.9";
import { startLocalGitHub } from "../scripts/local_github.ts";
import type { ActOptions, LocalGitHub } from "../scripts/local_github.ts";
import { freshDatabase, testDatabaseUrl, withDatabase } from "./support/db.ts";
import type { FreshDatabase } from "./support/db.ts";
import {
  ADMIN_ID,
  NON_ADMIN_ID,
  startStack,
  TEST_WEBHOOK_SECRET,
  trigger,
  userToken,
} from "./support/stack.ts";
import type { Json, Stack } from "./support/stack.ts";
import { startSupabaseCluster } from "./support/supabase_fixture.ts";
import type { SupabaseCluster } from "./support/supabase_fixture.ts";
import {
  aws,
  createBucket,
  getObject,
  ROOT,
  run,
  S3_ACCESS_KEY,
  S3_SECRET_KEY,
  s3Endpoint,
  sha256hex,
  skipWithoutAct,
} from "./support/workflow_harness.ts";

const SKIP = await skipWithoutAct();
const opts = { sanitizeOps: false, sanitizeResources: false, ignore: SKIP };

/** The platform's schemas in the fixture: what a new project already has. */
const PLATFORM =
  "^(information_schema|pg_.*|auth|storage|realtime|extensions)$";
const CUSTOM_ROLES = ["app_reader", "app_writer", "reporting"];

// --- README.md's Restore section -----------------------------------------------

/**
 * The ```sh block after `<!-- restore-drill: NAME -->` in README.md, without
 * the indentation of the list item it may sit in.
 */
function readmeBlock(name: string): string {
  const readme = Deno.readTextFileSync(`${ROOT}/README.md`);
  const m = readme.match(
    new RegExp(
      `<!-- restore-drill: ${name} -->\\n\\n( *)\`\`\`sh\\n([\\s\\S]*?)\\n\\1\`\`\`\\n`,
    ),
  );
  if (!m) throw new Error(`README.md has no restore-drill block "${name}"`);
  const indent = m[1];
  return m[2].split("\n").map((l) =>
    l.startsWith(indent) ? l.slice(indent.length) : l
  ).join("\n") + "\n";
}

/** Runs README block `name` with bash, from the repository root, as a user would. */
async function runReadme(name: string, env: Record<string, string>) {
  return await run("bash", ["-euo", "pipefail", "-c", readmeBlock(name)], {
    cwd: ROOT,
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      HOME: Deno.env.get("HOME") ?? "/root",
      DENO_NO_UPDATE_CHECK: "1",
      ...env,
    },
  });
}

/** restore.sh prints the commands it runs: they must be the README's. */
function assertPrintsReadmeCommands(stdout: string, name: string) {
  const want = readmeBlock(name).trimEnd().split("\n").map((l) => `  ${l}`)
    .join("\n");
  assert.ok(
    stdout.includes(want),
    `restore.sh ran other commands than README "${name}" shows:\n${stdout}`,
  );
}

// --- The backup ------------------------------------------------------------------

interface Backup {
  source: SupabaseCluster;
  history: FreshDatabase;
  stack: Stack;
  gh: LocalGitHub;
  bucket: string;
  run: Json;
  /** What restore.sh needs to find and check the backup. */
  env: Record<string, string>;
  close(): Promise<void>;
}

/** A source project, backed up by the workflow under act in `format`. */
async function backUp(format: "supabase" | "custom"): Promise<Backup> {
  const closers: (() => Promise<unknown>)[] = [];
  const close = async () => {
    for (const c of closers.reverse()) await c().catch((e) => console.error(e));
  };
  try {
    const source = await startSupabaseCluster({ project: true });
    closers.push(() => source.close());
    const history = await freshDatabase();
    closers.push(() => history.close());
    await history.sql`insert into backup_admins (user_id) values (${ADMIN_ID})`;
    const bucket = await createBucket();
    const act: ActOptions = {
      secrets: {
        // The project's own postgres user, which is no superuser.
        BACKUP_DATABASE_URL: source.url("postgres"),
        BACKUP_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET,
        AWS_ACCESS_KEY_ID: S3_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY: S3_SECRET_KEY,
      },
      vars: {
        BACKUP_S3_BUCKET: bucket,
        BACKUP_S3_ENDPOINT_URL: s3Endpoint(),
        BACKUP_S3_PREFIX: "drill",
        // The default is supabase: leave it unset then, as users will.
        ...(format === "custom" ? { BACKUP_FORMAT: "custom" } : {}),
      },
    };
    const gh = await startLocalGitHub({ act });
    closers.push(() => gh.close());
    const stack = await startStack({
      databaseUrl: history.url,
      githubApiUrl: gh.url,
    });
    closers.push(() => stack.close());
    act.vars!.BACKUP_FINALIZE_URL = stack.fn("finalize-backup");

    const t = await trigger(stack, {
      body: JSON.stringify({ reason: "restore drill" }),
    });
    assert.equal(t.status, 202, JSON.stringify(t.body));
    const res = await gh.waitForRun(t.body.workflow_run_id);
    const [row] = await history.sql`
      select * from backup_history where dispatch_id = ${t.body.dispatch_id}`;
    assert.equal(
      row.status,
      "success",
      `${res.log}\n--- functions ---\n${stack.output()}`,
    );
    const ext = format === "custom" ? "dump" : "tar\\.gz";
    assert.match(
      row.s3_key,
      new RegExp(`^drill/\\d{8}T\\d{6}Z_${row.dispatch_id}\\.${ext}$`),
    );
    const bytes = await getObject(bucket, row.s3_key);
    assert.ok(bytes);
    assert.equal(bytes.length, Number(row.size_bytes));
    assert.equal(await sha256hex(bytes), row.sha256);
    assert.ok(!res.log.includes(S3_SECRET_KEY), "AWS secret in the act log");

    return {
      source,
      history,
      stack,
      gh,
      bucket,
      run: row,
      env: {
        DISPATCH_ID: row.dispatch_id,
        BACKUP_STATUS_URL: stack.fn("backup-status"),
        BACKUP_ADMIN_TOKEN: await userToken(ADMIN_ID),
        BACKUP_S3_BUCKET: bucket,
        BACKUP_S3_ENDPOINT_URL: s3Endpoint(),
        AWS_ACCESS_KEY_ID: S3_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY: S3_SECRET_KEY,
        AWS_REGION: "us-east-1",
        AWS_EC2_METADATA_DISABLED: "true",
        AWS_CONFIG_FILE: "/dev/null",
        AWS_SHARED_CREDENTIALS_FILE: "/dev/null",
      },
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}

/** Replaces the object at `key`, as someone with write access could. */
async function putObject(bucket: string, key: string, bytes: Uint8Array) {
  const file = await Deno.makeTempFile();
  try {
    await Deno.writeFile(file, bytes);
    const r = await aws(["s3", "cp", file, `s3://${bucket}/${key}`]);
    assert.equal(r.code, 0, r.stderr);
  } finally {
    await Deno.remove(file);
  }
}

// --- What a database holds -------------------------------------------------------

type Rows = Record<string, unknown>[];

/** Every table outside the platform's schemas, plus the platform tables whose
 * rows are the project's: name -> row count and a digest of every row. */
async function userData(sql: postgres.Sql): Promise<Record<string, string>> {
  const tables = await sql<{ name: string }[]>`
    select format('%I.%I', n.nspname, c.relname) as name
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ('r', 'p') and n.nspname !~ ${PLATFORM}
    order by 1`;
  const names = [
    ...tables.map((t) => t.name),
    "auth.users",
    "auth.refresh_tokens",
    "storage.buckets",
    "storage.objects",
  ];
  const out: Record<string, string> = {};
  for (const name of names) {
    const [r] = await sql.unsafe(
      `select count(*)::int as n, md5(coalesce(string_agg(t::text, E'\\n' order by t::text), '')) as digest from ${name} t`,
    );
    out[name] = `${r.n} rows, md5 ${r.digest}`;
  }
  return out;
}

/** The project's objects: policies, functions, triggers, grants, roles, types. */
async function userObjects(sql: postgres.Sql): Promise<Record<string, Rows>> {
  const q = (text: string) =>
    sql.unsafe(text, text.includes("$1") ? [PLATFORM] : []) as Promise<Rows>;
  return {
    policies: await q(`
      select schemaname, tablename, policyname, permissive, roles::text[] as roles, cmd, qual, with_check
      from pg_policies where schemaname !~ $1 order by 1, 2, 3`),
    functions: await q(`
      select p.oid::regprocedure::text as name, pg_get_functiondef(p.oid) as def,
        pg_get_userbyid(p.proowner) as owner, p.proacl::text[] as acl
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname !~ $1 order by 1`),
    triggers: await q(`
      select t.tgrelid::regclass::text as tbl, t.tgname, pg_get_triggerdef(t.oid) as def, t.tgenabled
      from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
      where not t.tgisinternal and n.nspname !~ $1 order by 1, 2`),
    relations: await q(`
      select c.oid::regclass::text as name, c.relkind, pg_get_userbyid(c.relowner) as owner,
        c.relacl::text[] as acl, c.relrowsecurity
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p', 'v', 'm', 'S') and n.nspname !~ $1 order by 1`),
    schemas: await q(`
      select nspname, pg_get_userbyid(nspowner) as owner, nspacl::text[] as acl
      from pg_namespace where nspname !~ $1 order by 1`),
    defaultAcl: await q(`
      select pg_get_userbyid(defaclrole) as role, defaclnamespace::regnamespace::text as ns,
        defaclobjtype, defaclacl::text[] as acl
      from pg_default_acl order by 1, 2, 3`),
    enums: await q(`
      select t.oid::regtype::text as type, array_agg(e.enumlabel order by e.enumsortorder) as labels
      from pg_enum e join pg_type t on t.oid = e.enumtypid group by 1 order by 1`),
    sequences: await q(`
      select schemaname, sequencename, last_value from pg_sequences
      where schemaname !~ $1 or schemaname in ('auth') order by 1, 2`),
    publication: await q(`
      select pubname, schemaname, tablename from pg_publication_tables order by 1, 2, 3`),
    customRoles: (await sql`
      select rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin,
        rolreplication, rolbypassrls, rolconnlimit, rolconfig
      from pg_roles where rolname in ${sql(CUSTOM_ROLES)} order by 1`) as Rows,
    memberships: (await sql`
      select r.rolname as role, m.rolname as member, a.admin_option
      from pg_auth_members a join pg_roles r on r.oid = a.roleid join pg_roles m on m.oid = a.member
      where r.rolname in ${sql(CUSTOM_ROLES)} or m.rolname in ${
      sql(CUSTOM_ROLES)
    }
      order by 1, 2`) as Rows,
  };
}

/** Everything the platform owns in a project, which a restore must not change. */
async function platformState(sql: postgres.Sql): Promise<Record<string, Rows>> {
  const q = (text: string) =>
    sql.unsafe(text, text.includes("$1") ? [PLATFORM] : []) as Promise<Rows>;
  return {
    roles: (await sql`
      select rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin,
        rolreplication, rolbypassrls, rolconnlimit, rolconfig
      from pg_roles where rolname not in ${
      sql(CUSTOM_ROLES)
    } order by 1`) as Rows,
    memberships: (await sql`
      select r.rolname as role, m.rolname as member, g.rolname as grantor, a.admin_option
      from pg_auth_members a join pg_roles r on r.oid = a.roleid
        join pg_roles m on m.oid = a.member join pg_roles g on g.oid = a.grantor
      where r.rolname not in ${sql(CUSTOM_ROLES)} and m.rolname not in ${
      sql(CUSTOM_ROLES)
    }
      order by 1, 2`) as Rows,
    schemas: await q(`
      select nspname, pg_get_userbyid(nspowner) as owner, nspacl::text[] as acl
      from pg_namespace where nspname ~ $1 order by 1`),
    relations: await q(`
      select c.oid::regclass::text as name, c.relkind, pg_get_userbyid(c.relowner) as owner,
        c.relacl::text[] as acl, c.relrowsecurity, c.relforcerowsecurity,
        (select string_agg(format('%s %s %s %s', a.attname, format_type(a.atttypid, a.atttypmod),
           a.attnotnull, pg_get_expr(d.adbin, d.adrelid)), ', ' order by a.attnum)
         from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
         where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped) as columns
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname ~ $1 and n.nspname !~ '^(pg_.*|information_schema)$' order by 1`),
    functions: await q(`
      select p.oid::regprocedure::text as name, pg_get_userbyid(p.proowner) as owner,
        p.proacl::text[] as acl, md5(p.prosrc) as src, p.prosecdef, p.proconfig
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname ~ $1 and n.nspname !~ '^(pg_.*|information_schema)$' order by 1`),
    policies: await q(`
      select schemaname, tablename, policyname, roles::text[] as roles, cmd, qual, with_check
      from pg_policies where schemaname ~ $1 order by 1, 2, 3`),
    triggers: await q(`
      select t.tgrelid::regclass::text as tbl, t.tgname, pg_get_triggerdef(t.oid) as def
      from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
      where not t.tgisinternal and n.nspname ~ $1 order by 1, 2`),
    eventTriggers: (await sql`
      select evtname, evtevent, pg_get_userbyid(evtowner) as owner, evtfoid::regproc::text as fn,
        evtenabled, evttags from pg_event_trigger order by 1`) as Rows,
    publications: (await sql`
      select pubname, pg_get_userbyid(pubowner) as owner, puballtables, pubinsert, pubupdate,
        pubdelete, pubtruncate from pg_publication order by 1`) as Rows,
    extensions: (await sql`
      select extname, extversion, extnamespace::regnamespace::text as ns
      from pg_extension order by 1`) as Rows,
    parameterAcl: (await sql`
      select parname, paracl::text[] as acl from pg_parameter_acl order by 1`) as Rows,
    database: (await sql`
      select pg_get_userbyid(datdba) as owner, datacl::text[] as acl
      from pg_database where datname = current_database()`) as Rows,
    bookkeeping: (await sql`
      select 'auth' as s, version::text as v from auth.schema_migrations
      union all select 'storage', name || ' ' || hash from storage.migrations
      union all select 'realtime', version::text from realtime.schema_migrations
      order by 1, 2`) as Rows,
  };
}

// --- The drills ------------------------------------------------------------------

Deno.test(
  "restore drill: a supabase-format backup restores into a new Supabase project, platform untouched",
  opts,
  async (t) => {
    const t0 = Date.now();
    const b = await backUp("supabase");
    const target = await startSupabaseCluster({ project: false });
    const spare = await startSupabaseCluster({ project: false });
    try {
      const before = await platformState(target.admin);
      const env = { ...b.env, TARGET_DATABASE_URL: target.url("postgres") };

      const r = await runReadme("supabase", env);
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      assertPrintsReadmeCommands(r.stdout, "supabase-commands");
      assert.match(
        r.stdout,
        new RegExp(`sha256 matches backup_history \\(${b.run.dispatch_id}\\)`),
      );
      assert.match(r.stdout, /parts match the manifest: roles\.sql \d+ bytes/);
      assert.match(r.stdout, /the target is empty/);
      assert.ok(!r.stdout.includes(b.env.BACKUP_ADMIN_TOKEN), "token printed");

      await t.step("every user table has its exact rows", async () => {
        const want = await userData(b.source.admin);
        assert.equal(want["public.notes"].split(" ")[0], "5000");
        assert.equal(want["app.events"].split(" ")[0], "5000");
        assert.deepEqual(await userData(target.admin), want);
      });

      await t.step(
        "auth.users and storage.objects rows came back",
        async () => {
          const [users] = await target.admin`
          select count(*)::int as n, min(email) as first from auth.users`;
          assert.deepEqual(users, { n: 5, first: "user1@example.com" });
          const objects = await target.admin`
          select name from storage.objects order by name`;
          assert.deepEqual(objects.map((o) => o.name), [
            "user1/avatar.png",
            "user2/avatar.png",
            "user3/avatar.png",
          ]);
        },
      );

      await t.step(
        "policies, functions, triggers, grants, types and custom roles are the source's",
        async () => {
          const want = await userObjects(b.source.admin);
          assert.equal(want.policies.length, 4);
          assert.equal(want.customRoles.length, 3);
          assert.deepEqual(await userObjects(target.admin), want);
        },
      );

      await t.step(
        "RLS on auth.uid() works in the restored project",
        async () => {
          const user2 = "00000000-0000-4000-8000-000000000002";
          const rows = await target.admin.begin(async (tx) => {
            await tx`set local role authenticated`;
            await tx`select set_config('request.jwt.claim.sub', ${user2}, true)`;
            return await tx`
            select count(*)::int as notes, count(distinct owner)::int as owners,
              public.my_note_count()::int as mine from public.notes`;
          });
          assert.deepEqual(rows[0], { notes: 1000, owners: 1, mine: 1000 });
        },
      );

      await t.step("no platform-owned object was altered", async () => {
        assert.deepEqual(await platformState(target.admin), before);
      });

      await t.step("restore.sh refuses a non-empty target", async () => {
        const again = await runReadme("supabase", env);
        assert.equal(again.code, 4, again.stdout + again.stderr);
        assert.match(
          again.stderr,
          /REFUSED: the target is not empty \(.*relation app\.events.*\)\. Restore into a new project or an empty database, or pass --force\./,
        );
        assert.deepEqual(
          await userData(target.admin),
          await userData(b.source.admin),
        );
      });

      await t.step(
        "restore.sh restores a dispatch id through backup-status's download_url, with no AWS credentials, checked against --sha256",
        async () => {
          // The functions with the read-only download secrets (moto takes
          // any key): backup-status hands out a presigned link.
          const linked = await startStack({
            databaseUrl: b.history.url,
            env: {
              BACKUP_S3_BUCKET: b.bucket,
              BACKUP_S3_ENDPOINT_URL: s3Endpoint(),
              BACKUP_S3_ACCESS_KEY_ID: "AKIAREADONLYDRILL",
              BACKUP_S3_SECRET_ACCESS_KEY: "drill-read-only-secret",
            },
          });
          try {
            const spareUrl = spare.url("postgres");
            const res = await run("bash", [
              `${ROOT}/scripts/restore.sh`,
              "--sha256",
              b.run.sha256,
              b.run.dispatch_id,
              spareUrl,
            ], {
              // Nothing of AWS's: no keys, no bucket, no endpoint.
              clearEnv: true,
              env: {
                PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
                HOME: Deno.env.get("HOME") ?? "/root",
                BACKUP_STATUS_URL: linked.fn("backup-status"),
                BACKUP_ADMIN_TOKEN: b.env.BACKUP_ADMIN_TOKEN,
              },
            });
            assert.equal(res.code, 0, res.stdout + res.stderr);
            assert.ok(
              res.stdout.includes(
                `downloaded ${s3Endpoint()}/${b.bucket}/${b.run.s3_key}\n`,
              ),
              res.stdout,
            );
            assert.match(
              res.stdout,
              new RegExp(
                `sha256 matches backup_history \\(${b.run.dispatch_id}\\)`,
              ),
            );
            assert.ok(
              !res.stdout.includes("X-Amz-Signature"),
              "URL query printed",
            );
            assert.deepEqual(
              await userData(spare.admin),
              await userData(b.source.admin),
            );
          } finally {
            await linked.close();
          }
        },
      );

      await t.step(
        "restore.sh refuses an object whose SHA-256 is not backup_history's",
        async () => {
          const fresh = await startSupabaseCluster({ project: false });
          const original = (await getObject(b.bucket, b.run.s3_key))!;
          try {
            const tampered = original.slice();
            tampered[tampered.length - 1] ^= 0x01;
            await putObject(b.bucket, b.run.s3_key, tampered);
            const res = await runReadme("supabase", {
              ...env,
              TARGET_DATABASE_URL: fresh.url("postgres"),
            });
            assert.equal(res.code, 3, res.stdout + res.stderr);
            assert.match(
              res.stderr,
              new RegExp(
                `REFUSED: the object's sha256 is [0-9a-f]{64}, backup_history \\(${b.run.dispatch_id}\\) records ${b.run.sha256}`,
              ),
            );
            const [n] = await fresh.admin`
              select count(*)::int as n from pg_tables where schemaname = 'public'`;
            assert.equal(n.n, 0, "nothing was restored");
          } finally {
            await fresh.close();
            await putObject(b.bucket, b.run.s3_key, original);
          }
        },
      );

      await t.step(
        "restore.sh refuses a part that does not match the manifest",
        async () => {
          const fresh = await startSupabaseCluster({ project: false });
          const dir = await Deno.makeTempDir();
          try {
            // The original archive, data.sql changed, the manifest kept.
            const res0 = await run("bash", [
              "-c",
              `set -euo pipefail; cd "$1"
               aws --endpoint-url "$2" s3 cp "s3://$3/$4" orig.tar.gz --only-show-errors
               mkdir parts; tar -xzf orig.tar.gz -C parts
               sed -i 's/user1@example.com/mallory@example.com/' parts/data.sql
               tar -czf tampered.tar.gz -C parts manifest.json roles.sql schema.sql data.sql`,
              "tamper",
              dir,
              s3Endpoint(),
              b.bucket,
              b.run.s3_key,
            ], { env: b.env });
            assert.equal(res0.code, 0, res0.stderr);
            // No backup_history to ask: the manifest is all there is.
            const res = await run("bash", [
              `${ROOT}/scripts/restore.sh`,
              `${dir}/tampered.tar.gz`,
              fresh.url("postgres"),
            ], { env: { PATH: Deno.env.get("PATH")! }, clearEnv: true });
            assert.equal(res.code, 3, res.stdout + res.stderr);
            assert.match(
              res.stderr,
              /REFUSED: data\.sql does not match the manifest \(sha256 [0-9a-f]{64}, manifest [0-9a-f]{64}\)/,
            );
            const [n] = await fresh.admin`
              select count(*)::int as n from auth.users`;
            assert.equal(n.n, 0, "nothing was restored");
          } finally {
            await fresh.close();
            await Deno.remove(dir, { recursive: true });
          }
        },
      );
      await t.step(
        "restore.sh says why it cannot look a backup up or trust it, and restores nothing",
        async () => {
          const unknown = "01900000-0000-7000-8000-000000000000";
          const cases: [Record<string, string>, number, RegExp][] = [
            [
              { DISPATCH_ID: unknown },
              2,
              new RegExp(
                `^restore: backup-status answered 404 for ${unknown}: unknown_dispatch_id: `,
              ),
            ],
            [
              { BACKUP_ADMIN_TOKEN: await userToken(NON_ADMIN_ID) },
              2,
              /^restore: backup-status answered 403 for [0-9a-f-]{36}: not_admin: /,
            ],
            [
              { BACKUP_ADMIN_TOKEN: "" },
              2,
              /^restore: looking up dispatch id [0-9a-f-]{36} needs BACKUP_STATUS_URL and BACKUP_ADMIN_TOKEN$/,
            ],
          ];
          const other = "0".repeat(64);
          cases.push([
            { SHA_OPTION: other },
            3,
            new RegExp(
              `^restore: REFUSED: --sha256 differs from backup_history's ${b.run.sha256}$`,
            ),
          ]);
          for (const [change, code, message] of cases) {
            const e: Record<string, string> = {
              ...env,
              TARGET_DATABASE_URL: spare.url("postgres"),
              ...change,
            };
            // --sha256 is not in the README's command: run the script.
            const res = e.SHA_OPTION
              ? await run("bash", [
                `${ROOT}/scripts/restore.sh`,
                "--sha256",
                e.SHA_OPTION,
                e.DISPATCH_ID,
                e.TARGET_DATABASE_URL,
              ], { env: e })
              : await runReadme("supabase", e);
            assert.equal(res.code, code, res.stdout + res.stderr);
            assert.match(res.stderr.trim(), message);
            assert.equal(res.stdout, "");
          }
        },
      );
      console.log(`  supabase drill: ${Date.now() - t0} ms`);
    } finally {
      await spare.close();
      await target.close();
      await b.close();
    }
  },
);

Deno.test(
  "restore drill: a custom-format backup restores into plain PostgreSQL with the same data",
  opts,
  async () => {
    const t0 = Date.now();
    const b = await backUp("custom");
    const base = testDatabaseUrl();
    const name = `restore_plain_${Date.now().toString(36)}_${
      crypto.randomUUID().slice(0, 6)
    }`;
    const admin = postgres(base, { max: 1, onnotice: () => {} });
    await admin.unsafe(`create database "${name}"`);
    const targetUrl = withDatabase(base, name);
    const target = postgres(targetUrl, { max: 2, onnotice: () => {} });
    try {
      const r = await runReadme("plain", {
        ...b.env,
        TARGET_DATABASE_URL: targetUrl,
      });
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      assertPrintsReadmeCommands(r.stdout, "plain-commands");
      assert.match(
        r.stdout,
        new RegExp(`sha256 matches backup_history \\(${b.run.dispatch_id}\\)`),
      );
      assert.deepEqual(await userData(target), await userData(b.source.admin));
      const policies = await target`
        select tablename, policyname from pg_policies
        where schemaname = 'public' order by 1, 2`;
      assert.equal(policies.length, 4);
      console.log(`  custom drill: ${Date.now() - t0} ms`);
    } finally {
      await target.end({ timeout: 5 });
      await admin.unsafe(`drop database if exists "${name}" with (force)`);
      await admin.end({ timeout: 5 });
      await b.close();
    }
  },
);
