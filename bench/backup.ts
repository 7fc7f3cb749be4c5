// `deno task bench:backup`: what streaming the dump costs, measured.
//
// Generates a database of about BENCH_BACKUP_MB megabytes (default 1024)
// with `pgbench -i` on a throwaway PostgreSQL, then times, one after the
// other on the same database and the same local S3 (moto):
//
//   1. `pg_dump -Fc > /dev/null`: the limit, no hashing, no upload;
//   2. the old shape: `pg_dump -Fc --file`, then `sha256sum`, then
//      `aws s3 cp FILE`;
//   3. the workflow's dump step as it is (workflow/dump_database.sh with
//      BACKUP_FORMAT=custom): `pg_dump | tee (sha256sum, wc -c) | aws s3 cp -`.
//
// Everything listens on 127.0.0.1 and is removed at the end. One run each:
// the database is large enough that a run takes seconds, on a machine that
// is usually shared, so expect some noise.

import { fileURLToPath } from "node:url";
import { freePort, run } from "../scripts/process.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const MB = Math.max(
  1,
  Number(Deno.env.get("BENCH_BACKUP_MB") ?? "1024") || 1024,
);
// pgbench's scale 1 is about 15 MB of tables and indexes.
const SCALE = Math.max(1, Math.round(MB / 15));
const BUCKET = "bench-backup";
const AWS_ENV = {
  AWS_ACCESS_KEY_ID: "bench",
  AWS_SECRET_ACCESS_KEY: "bench-secret",
  AWS_DEFAULT_REGION: "us-east-1",
  AWS_REGION: "us-east-1",
  AWS_EC2_METADATA_DISABLED: "true",
  AWS_CONFIG_FILE: "/dev/null",
  AWS_SHARED_CREDENTIALS_FILE: "/dev/null",
};

async function sh(script: string, env: Record<string, string> = {}) {
  const out = await new Deno.Command("bash", {
    args: ["--noprofile", "--norc", "-eo", "pipefail", "-c", script],
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  if (!out.success) {
    throw new Error(`failed (${out.code}): ${script}\n${text(out.stderr)}`);
  }
  return text(out.stdout).trim();
}

async function timed(what: string, fn: () => Promise<unknown>) {
  const t0 = performance.now();
  await fn();
  const ms = performance.now() - t0;
  console.log(`  ${what.padEnd(58)} ${(ms / 1000).toFixed(2).padStart(8)} s`);
  return ms;
}

const work = await Deno.makeTempDir({ prefix: "bench-backup-" });
// The cluster runs as the postgres user, who must reach its directory.
await Deno.chmod(work, 0o755);
const pgDir = `${work}/pg`;
const s3Port = freePort();
let pgStarted = false;
let s3Started = false;
const receiver = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen: () => {} },
  () => Response.json({ status: "in_progress" }),
);
try {
  const base = await run("bash", [
    "scripts/pg_cluster.sh",
    "start",
    pgDir,
    String(freePort()),
  ]);
  pgStarted = true;
  const endpoint = await run("bash", [
    "scripts/s3_server.sh",
    "start",
    String(s3Port),
  ], {
    S3_SERVER_DIR: `${work}/s3`,
  });
  s3Started = true;
  const aws = (args: string) => `aws --endpoint-url ${endpoint} ${args}`;
  await sh(aws(`s3api create-bucket --bucket ${BUCKET} > /dev/null`), AWS_ENV);

  const url = base.replace(/\/postgres$/, "/bench");
  await sh(`psql -X -q "${base}" -c 'create database bench'`);
  console.log(
    `deno task bench:backup: pgbench -i -s ${SCALE} (about ${MB} MB)`,
  );
  await timed(
    "generate (pgbench -i)",
    () => sh(`pgbench -i -q -s ${SCALE} "${url}" 2>&1`),
  );
  const size = await sh(
    `psql -X -A -t "${url}" -c "select pg_size_pretty(pg_database_size('bench'))"`,
  );
  console.log(`  database size: ${size}`);

  const limit = await timed(
    "1. pg_dump -Fc > /dev/null",
    () => sh(`pg_dump -Fc --dbname="${url}" > /dev/null`),
  );
  const old = await timed(
    "2. old: pg_dump -Fc --file; sha256sum; aws s3 cp FILE",
    () =>
      sh(
        `pg_dump -Fc --dbname="${url}" --file="${work}/dump.dump"
         sha256sum "${work}/dump.dump" > /dev/null
         ${
          aws(
            `s3 cp "${work}/dump.dump" s3://${BUCKET}/old.dump --only-show-errors`,
          )
        }
         rm -f "${work}/dump.dump"`,
        AWS_ENV,
      ),
  );

  const runner = `${work}/runner`;
  await Deno.mkdir(`${runner}/backup`, { recursive: true });
  await Deno.copyFile(`${ROOT}/workflow/lib.sh`, `${runner}/backup/lib.sh`);
  const stream = await timed(
    "3. new: the dump step, pg_dump | tee | aws s3 cp -",
    () =>
      sh(
        `bash --noprofile --norc -eo pipefail workflow/dump_database.sh > /dev/null`,
        {
          ...AWS_ENV,
          PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
          RUNNER_TEMP: runner,
          GITHUB_RUN_ID: "1",
          GITHUB_RUN_ATTEMPT: "1",
          BACKUP_DATABASE_URL: url,
          BACKUP_FORMAT: "custom",
          BACKUP_S3_BUCKET: BUCKET,
          BACKUP_S3_ENDPOINT_URL: endpoint,
          BACKUP_FINALIZE_URL: `http://127.0.0.1:${receiver.addr.port}`,
          BACKUP_WEBHOOK_SECRET: "whsec_" +
            btoa("bench-webhook-secret-32-bytes-long"),
          DISPATCH_ID: crypto.randomUUID(),
        },
      ),
  );
  const stored = JSON.parse(
    await Deno.readTextFile(`${runner}/backup/dump.json`),
  );
  console.log(
    `  streamed object: ${stored.size_bytes} bytes, sha256 ${stored.sha256}`,
  );
  console.log(
    `  ratios to (1): old ${(old / limit).toFixed(2)}x, streaming ${
      (stream / limit).toFixed(2)
    }x (target <= 1.2x); streaming / old ${(stream / old).toFixed(2)}x`,
  );
  if (stream > limit * 1.2) Deno.exitCode = 1;
} finally {
  await receiver.shutdown();
  if (s3Started) {
    await run("bash", ["scripts/s3_server.sh", "stop", String(s3Port)], {
      S3_SERVER_DIR: `${work}/s3`,
    }).catch((e) => console.error(e));
  }
  if (pgStarted) {
    await run("bash", ["scripts/pg_cluster.sh", "stop", pgDir]).catch((e) =>
      console.error(e)
    );
  }
  await Deno.remove(work, { recursive: true }).catch(() => {});
}
