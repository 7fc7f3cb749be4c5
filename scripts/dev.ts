// `deno task dev`: the whole stack on this machine, no Docker, one command.
//
//   PostgreSQL  a local cluster in .local/dev/pg (kept between runs), migrated
//   functions   every function at http://127.0.0.1:54321/functions/v1/<name>
//   demo page   http://127.0.0.1:54321/ (web/demo), signed in as a local admin
//   GitHub      a loopback stand-in that runs .github/workflows/backup.yml
//               with act for each dispatch (a recording fake when act is
//               missing, and it says so)
//   S3          moto on 127.0.0.1:54330, bucket "backups"
//   sweep       reconcile-backups every 30 s, as pg_cron would on Supabase
//
// Then it prints ready-to-paste curl commands. Ctrl-C stops everything.
// The secrets below are fixed, public and for this local stack only.

import { fileURLToPath } from "node:url";
import { route } from "./serve.ts";
import { migrate } from "./db_migrate.ts";
import { userToken } from "./signing.ts";
import { run } from "./process.ts";
import {
  actAvailable,
  type LocalGitHub,
  startLocalGitHub,
} from "./local_github.ts";
// deno-lint-ignore no-import-prefix
import postgres from "npm:postgres@3.4.9";

// A path, not a URL's: a clone under a directory with a space in its
// name must not become "%20".
const ROOT = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
export const DEV_JWT_SECRET = "local-dev-jwt-secret-not-for-production-use";
export const DEV_WEBHOOK_SECRET = "whsec_" +
  btoa("local-dev-webhook-secret-only!!");
export const DEV_SERVICE_KEY = "local-dev-service-role-key";
export const DEV_ADMIN_ID = "d0000000-0000-4000-8000-00000000ad01";

export interface DevOptions {
  /** Functions and demo page port (54321). */
  port?: number;
  /** PostgreSQL port (54322) and data directory (.local/dev/pg). */
  dbPort?: number;
  dataDir?: string;
  /** moto S3 port (54330). */
  s3Port?: number;
  /** Run workflows with act when available (default true). */
  act?: boolean;
  /** Sweep interval in ms (30 s; 0 disables). */
  sweepEveryMs?: number;
  /** Print the banner and curl commands (default true). */
  banner?: boolean;
  /** Where moto keeps its pid and log (.local/dev/s3). */
  s3Dir?: string;
}

export interface Dev {
  url: string;
  databaseUrl: string;
  accessToken: string;
  github: LocalGitHub;
  /** True when dispatches run the workflow with act. */
  realWorkflow: boolean;
  close(): Promise<void>;
}

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  svg: "image/svg+xml",
  ts: "text/plain; charset=utf-8",
  png: "image/png",
};

/** web/ files: / → web/demo/index.html, /demo/x → web/demo/x, /x.js → web/x.js. */
async function staticFile(pathname: string): Promise<Response | undefined> {
  let rel: string | undefined;
  if (pathname === "/" || pathname === "/index.html") rel = "demo/index.html";
  else if (/^\/demo\/[\w.-]+$/.test(pathname)) rel = pathname.slice(1);
  else if (/^\/[\w.-]+\.(js|d\.ts)$/.test(pathname)) rel = pathname.slice(1);
  if (!rel) return undefined;
  try {
    const body = await Deno.readFile(`${ROOT}/web/${rel}`);
    const ext = rel.split(".").pop() ?? "";
    return new Response(body, {
      headers: {
        "content-type": TYPES[ext] ?? "application/octet-stream",
        "cache-control": "no-cache",
      },
    });
  } catch {
    return undefined;
  }
}

/**
 * .local/dev/pg, unless we are root and the `postgres` user, which the
 * cluster runs as, cannot reach it (a clone under /root, say): then a
 * directory under /var/tmp named after this checkout.
 */
async function defaultDataDir(): Promise<string> {
  const inRepo = `${ROOT}/.local/dev/pg`;
  if (Deno.uid() !== 0) return inRepo;
  const reachable = await new Deno.Command("runuser", {
    args: ["-u", "postgres", "--", "test", "-x", ROOT],
    stdout: "null",
    stderr: "null",
  }).output().then((o) => o.success, () => false);
  if (reachable) return inRepo;
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(ROOT)),
  );
  const tag = Array.from(
    digest.slice(0, 4),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  const dir = `/var/tmp/backup-control-plane-dev-${tag}`;
  await Deno.mkdir(dir, { recursive: true, mode: 0o711 });
  await Deno.chmod(dir, 0o711);
  return `${dir}/pg`;
}

/** Starts the stack; see the file header. */
export async function startDev(opts: DevOptions = {}): Promise<Dev> {
  const port = opts.port ?? Number(Deno.env.get("PORT") ?? 54321);
  const dbPort = opts.dbPort ?? 54322;
  const s3Port = opts.s3Port ?? 54330;
  const dataDir = opts.dataDir ?? await defaultDataDir();
  const banner = opts.banner ?? true;
  const say = (s: string) => banner && console.log(s);
  const cleanups: (() => Promise<unknown>)[] = [];
  const close = async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
  };

  try {
    // PostgreSQL, migrated, with the local admin.
    await Deno.mkdir(dataDir.replace(/\/[^/]+$/, ""), { recursive: true });
    const databaseUrl = await run("bash", [
      "scripts/pg_cluster.sh",
      "start",
      dataDir,
      String(dbPort),
    ]);
    cleanups.push(() =>
      run("bash", ["scripts/pg_cluster.sh", "stop", dataDir])
    );
    await migrate(databaseUrl, { log: () => {} });
    const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
    await sql`insert into public.backup_admins (user_id) values (${DEV_ADMIN_ID}) on conflict do nothing`;
    await sql.end();
    say(
      `PostgreSQL   ${databaseUrl} (data in ${
        dataDir.replace(ROOT + "/", "")
      })`,
    );

    // S3 (moto), with the bucket.
    const s3Url = `http://127.0.0.1:${s3Port}`;
    const s3Env = {
      PATH: Deno.env.get("PATH") ?? "",
      HOME: Deno.env.get("HOME") ?? "/root",
      AWS_ACCESS_KEY_ID: "dev",
      AWS_SECRET_ACCESS_KEY: "dev",
      AWS_DEFAULT_REGION: "us-east-1",
      S3_SERVER_DIR: opts.s3Dir ?? `${ROOT}/.local/dev/s3`,
    };
    let s3 = false;
    try {
      await run(
        "bash",
        ["scripts/s3_server.sh", "start", String(s3Port)],
        s3Env,
      );
      cleanups.push(() =>
        run("bash", ["scripts/s3_server.sh", "stop", String(s3Port)], s3Env)
      );
      await run(
        "aws",
        ["--endpoint-url", s3Url, "s3", "mb", "s3://backups"],
        s3Env,
      ).catch(() => "");
      s3 = true;
      say(`S3 (moto)    ${s3Url}, bucket "backups"`);
    } catch (e) {
      say(`S3 (moto)    not started: ${String(e).split("\n")[0]}`);
    }

    // GitHub: act when available.
    const url = `http://127.0.0.1:${port}`;
    const realWorkflow = (opts.act ?? true) && s3 && await actAvailable();
    // Run ids continue across restarts (the history is kept), as GitHub's do.
    const firstRunId = Math.floor(Date.now() / 1000) % 1_000_000_000;
    const github = await startLocalGitHub(
      realWorkflow
        ? {
          firstRunId,
          act: {
            secrets: {
              BACKUP_DATABASE_URL: databaseUrl,
              BACKUP_WEBHOOK_SECRET: DEV_WEBHOOK_SECRET,
              AWS_ACCESS_KEY_ID: "dev",
              AWS_SECRET_ACCESS_KEY: "dev",
            },
            vars: {
              BACKUP_FINALIZE_URL: `${url}/functions/v1/finalize-backup`,
              BACKUP_S3_BUCKET: "backups",
              BACKUP_S3_ENDPOINT_URL: s3Url,
              BACKUP_S3_PREFIX: "dev",
            },
          },
        }
        : { firstRunId },
    );
    cleanups.push(() => github.close());
    say(
      realWorkflow
        ? `GitHub       ${github.url} (loopback stand-in; each dispatch runs .github/workflows/backup.yml with act)`
        : `GitHub       ${github.url} (recording fake: act or S3 is unavailable, so dispatches are recorded but no workflow runs)`,
    );

    // The functions, configured as on Supabase.
    const env: Record<string, string> = {
      SUPABASE_DB_URL: databaseUrl,
      BACKUP_JWT_SECRET: DEV_JWT_SECRET,
      SUPABASE_SERVICE_ROLE_KEY: DEV_SERVICE_KEY,
      BACKUP_WEBHOOK_SECRET: DEV_WEBHOOK_SECRET,
      GITHUB_TOKEN: "dev-token",
      GITHUB_REPOSITORY: "local/backup-demo",
      GITHUB_API_URL: github.url,
      ALLOWED_ORIGINS: url,
      // Reports bound to their run, as deployed (BACKUP_REPORT_AUTH=both):
      // the stand-in is the OIDC issuer, and the audience is this URL's
      // finalize-backup.
      SUPABASE_URL: url,
      GITHUB_OIDC_ISSUER: github.oidcIssuer,
      BACKUP_REPORT_AUTH: Deno.env.get("BACKUP_REPORT_AUTH") || "both",
      // Download links from the local bucket (moto takes any key; on a real
      // store this is a read-only one, README "Download").
      ...(s3
        ? {
          BACKUP_S3_BUCKET: "backups",
          BACKUP_S3_ENDPOINT_URL: s3Url,
          BACKUP_S3_ACCESS_KEY_ID: "dev-read",
          BACKUP_S3_SECRET_ACCESS_KEY: "dev-read",
        }
        : {}),
    };
    for (const [k, v] of Object.entries(env)) Deno.env.set(k, v);
    const accessToken = await userToken(DEV_ADMIN_ID, {
      exp: Math.floor(Date.now() / 1000) + 7 * 86400,
    }, DEV_JWT_SECRET);

    const server = Deno.serve({
      port,
      hostname: "127.0.0.1",
      onListen: () => {},
    }, async (req) => {
      const { pathname } = new URL(req.url);
      if (pathname.startsWith("/functions/v1/")) return route(req);
      if (pathname === "/dev/session" && req.method === "GET") {
        return Response.json({
          supabase_url: url,
          access_token: accessToken,
          user_id: DEV_ADMIN_ID,
        });
      }
      return await staticFile(pathname) ??
        new Response("not found", { status: 404 });
    });
    cleanups.push(() => server.shutdown());

    // The sweep, as pg_cron runs it on Supabase.
    const every = opts.sweepEveryMs ?? 30_000;
    if (every > 0) {
      const timer = setInterval(() => {
        fetch(`${url}/functions/v1/reconcile-backups`, {
          method: "POST",
          headers: { authorization: `Bearer ${DEV_SERVICE_KEY}` },
        }).then((r) => r.body?.cancel()).catch(() => {});
      }, every);
      cleanups.push(() => Promise.resolve(clearInterval(timer)));
    }

    say(
      `functions    ${url}/functions/v1/{trigger-backup,finalize-backup,backup-status,reconcile-backups}`,
    );
    say(`demo page    ${url}/  (signed in as the local admin ${DEV_ADMIN_ID})`);
    if (banner) console.log(curlExamples(url, accessToken));
    return { url, databaseUrl, accessToken, github, realWorkflow, close };
  } catch (e) {
    await close();
    throw e;
  }
}

/** Ready-to-paste commands with a fresh token. */
function curlExamples(url: string, token: string): string {
  return `
Try it (the token is valid for 7 days):

  export TOKEN='${token}'

  # Back up now
  curl -s -X POST ${url}/functions/v1/trigger-backup -H "Authorization: Bearer $TOKEN" -d '{"reason":"trying it out"}'
  export ID=<the dispatch_id it returned>

  # Watch it (long-poll up to 25 s; repeat with -H 'If-None-Match: <etag>')
  curl -s -i "${url}/functions/v1/backup-status?dispatch_id=$ID&wait=25" -H "Authorization: Bearer $TOKEN"

  # The history
  curl -s "${url}/functions/v1/backup-status?limit=5" -H "Authorization: Bearer $TOKEN"

  # A signed report, made the way the workflow makes it (openssl + curl).
  # Accepted as is when dev runs with BACKUP_REPORT_AUTH=webhook; by default
  # (both) it also needs GitHub's OIDC token, which only the run itself gets.
  SECRET='${DEV_WEBHOOK_SECRET}'
  BODY='{"event":"cancelled","dispatch_id":"'$ID'","workflow_run_id":1000,"run_attempt":1,"error_text":"cancelled by hand"}'
  MSG="msg_$(date +%s%N)"; TS="$(date +%s)"
  KEY="$(printf '%s' "\${SECRET#whsec_}" | base64 -d | od -An -tx1 | tr -d ' \\n')"
  SIG="$(printf '%s' "$MSG.$TS.$BODY" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$KEY" -binary | base64)"
  curl -s -X POST ${url}/functions/v1/finalize-backup -H 'content-type: application/json' \\
    -H "webhook-id: $MSG" -H "webhook-timestamp: $TS" -H "webhook-signature: v1,$SIG" -d "$BODY"
`;
}

if (import.meta.main) {
  const dev = await startDev();
  console.log("Ctrl-C stops everything.");
  const stop = async () => {
    await dev.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
