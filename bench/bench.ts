// `deno task bench`: the performance budget, measured on this machine.
//
//   1. size of each function's module in pkg/ (wasm + JS glue, gzip -9)
//      against the 160 KB budget
//   2. cold start (spawn → first served response) of a function as deployed
//      (its index.ts) and of scripts/serve.ts (all four), beside a minimal
//      pure-TypeScript function started the same way; 2b. the same with a
//      signed report as the first request, beside the baseline function
//   3. finalize-backup throughput: signed reports at 1, 8, 32 and 64
//      concurrent clients against one running backup, and at 32 across 500
//      runs in various states, beside bench/baseline_function.ts (a plain
//      TypeScript handler of the same contract) on the same database
//   4. the sweep's candidate query (the one `in_progress` row) with 10 and
//      with 1,000,000 history rows: plan and execution time
//
// It ends with every budget it measured, each met or not. Only the size
// budget fails the run (exit code 1): the timing budgets are ratios of two
// noisy measurements, and bench/README.md keeps the runs recorded.
//
// It starts what it needs itself (a throwaway PostgreSQL with
// scripts/pg_cluster.sh, the migrations, the functions) and removes it at
// the end. Everything listens on 127.0.0.1 only. Figures are medians from
// one run on whatever machine this is, usually a shared one.

// deno-lint-ignore no-import-prefix
import postgres from "npm:postgres@3.4.9";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";
import { migrate } from "../scripts/db_migrate.ts";
import { webhookHeaders } from "../scripts/signing.ts";
import { freePort, run } from "../scripts/process.ts";
import { breakdown } from "./wasm_sizes.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const BUDGET_BYTES = 160_000;
/**
 * The cold-start budget: a function as deployed starts in at most this many
 * times the TypeScript function's time. Like every timing budget it is
 * printed, met or not, at the end of the run, and does not fail it: timings
 * on a shared machine move between runs, and a bench that failed at random
 * would teach people to ignore it.
 */
const COLD_BUDGET = 1.15;
/**
 * The least project/baseline req/s a throughput cell may have, as issue 10
 * sets it: 1.0× at 32 clients (where the project once collapsed), on one
 * run and across many alike, and 0.9× at every other concurrency.
 */
export function throughputBudget(clients: number): number {
  return clients === 32 ? 1.0 : 0.9;
}

/** A part of the bench: the lines it prints, and its budgets' lines. */
interface Part {
  lines: string[];
  budgets: string[];
}

/** A line of the closing summary: what was measured, the figure, and the
 * verdict; every budget's line is laid out here. */
function summaryLine(measure: string, figure: string, verdict: string): string {
  return `${measure.padEnd(44)} ${figure}  ${verdict}`;
}

/** A bound's verdict: `budget <bound>  met` (or NOT MET). */
function against(bound: string, holds: boolean): string {
  return `budget ${bound}  ${holds ? "met" : "NOT MET"}`;
}
const COLD_RUNS = setting("BENCH_COLD_RUNS", 9, 101);
/** A positive integer from the environment (bounded), else `fallback`. */
function setting(name: string, fallback: number, max: number): number {
  const n = Number(Deno.env.get(name));
  return Number.isInteger(n) && n > 0 ? Math.min(n, max) : fallback;
}
/** The client counts of the one-run scenarios (`BENCH_CONCURRENCY=1,8`). */
const CONCURRENCY = (Deno.env.get("BENCH_CONCURRENCY") ?? "1,8,32,64")
  .split(",").map(Number).filter((n) =>
    Number.isInteger(n) && n > 0 && n <= 256
  );
const REQUESTS = setting("BENCH_REQUESTS", 2000, 20_000);
/** Each cell is measured this many times per side, alternating (`BENCH_ROUNDS`). */
const ROUNDS = setting("BENCH_ROUNDS", 3, 15);
// Enough for V8 to have tiered both servers' hot code up, so that the cells
// compare steady states. WebAssembly starts in V8's baseline compiler, and
// each function moves to the optimising one when its own budget runs out,
// so the project's code keeps tiering up long after TypeScript's has:
// traced with --trace-wasm-compilation-times, 18 functions had been
// optimised after 500 reports, 56 after 2,000, 82 after 5,000, and req/s
// rose with them until about 3,000.
const WARMUP_REQUESTS = 5000;
// And before each cell, reports of that cell's own kind at its own
// concurrency, unmeasured (their answers are counted): the mixed cell's
// final reports run code the progress reports never reach, which would
// otherwise be measured while V8 still compiles and tiers it up
// (`BENCH_CELL_WARMUP`).
const CELL_WARMUP = setting("BENCH_CELL_WARMUP", 2000, 20_000);
const MAX_LOAD_MS = 30_000;
const QUERY_RUNS = 50;
const LARGE_HISTORY = 1_000_000;
const WEBHOOK_SECRET = "whsec_" + btoa("bench-webhook-secret-32-bytes-long");
const JWT_SECRET = "bench-jwt-secret-that-is-at-least-32-characters-long";

// --- small helpers ----------------------------------------------------------

function median(xs: number[]): number {
  return percentile(xs, 50);
}

/** Nearest-rank percentile. */
function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

const fmtInt = (n: number) => Math.round(n).toLocaleString("en-US");
const ms = (n: number, digits = 1) => `${n.toFixed(digits)} ms`;

function section(title: string): void {
  console.log(`\n== ${title}`);
}

// --- the machine --------------------------------------------------------------

async function machine(): Promise<string[]> {
  let cpu = "unknown CPU";
  try {
    const info = await Deno.readTextFile("/proc/cpuinfo");
    cpu = /^model name\s*:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? cpu;
  } catch { /* not Linux */ }
  let nproc = String(navigator.hardwareConcurrency);
  try {
    nproc = await run("nproc", []);
  } catch { /* use the runtime's count */ }
  let memory = "";
  try {
    const kb = Number(
      /^MemTotal:\s*(\d+)/m.exec(await Deno.readTextFile("/proc/meminfo"))
        ?.[1],
    );
    if (kb) memory = `, ${(kb / 1024 / 1024).toFixed(1)} GiB RAM`;
  } catch { /* not Linux */ }
  return [
    `machine: ${nproc} CPUs (nproc), ${cpu}${memory}, ${Deno.build.os}/${Deno.build.arch}`,
    `deno ${Deno.version.deno} (V8 ${Deno.version.v8})`,
  ];
}

// --- 1. size ----------------------------------------------------------------

async function sizes(): Promise<Part & { gzipped: number }> {
  // Each function ships its own module (pkg/<function>/): the bytes embedded
  // in backup_core_wasm.js (base64) and the glue, backup_core.js.
  const concat = (a: Uint8Array, b: Uint8Array) => {
    const both = new Uint8Array(a.length + b.length);
    both.set(a);
    both.set(b, a.length);
    return both;
  };
  const gz = (b: Uint8Array) => gzipSync(b, { level: 9 }).length;
  const functions = [...Deno.readDirSync(new URL("../pkg/", import.meta.url))]
    .filter((e) => e.isDirectory).map((e) => e.name).sort();
  const lines = [
    `${"function".padEnd(20)}${"wasm raw".padStart(10)}${
      "glue raw".padStart(10)
    }${"wasm+glue gz".padStart(14)}${"as shipped gz".padStart(15)}  budget ${
      fmtInt(BUDGET_BYTES)
    } each`,
  ];
  let largest = { gzipped: 0, name: "" };
  for (const fn of functions) {
    const dir = new URL(`../pkg/${fn}/`, import.meta.url);
    const { wasmBytes: wasm } = await import(
      new URL("backup_core_wasm.js", dir).href
    );
    const embedded = Deno.readFileSync(new URL("backup_core_wasm.js", dir));
    const glue = Deno.readFileSync(new URL("backup_core.js", dir));
    // The budget is on the WebAssembly module itself plus its glue, in one
    // gzip stream; the base64 form that ships is reported beside it.
    const gzipped = gz(concat(wasm, glue));
    const verdict = gzipped <= BUDGET_BYTES
      ? `within, ${fmtInt(BUDGET_BYTES - gzipped)} to spare`
      : `OVER by ${fmtInt(gzipped - BUDGET_BYTES)}`;
    lines.push(
      `${fn.padEnd(20)}${fmtInt(wasm.length).padStart(10)}${
        fmtInt(glue.length).padStart(10)
      }${fmtInt(gzipped).padStart(14)}${
        fmtInt(gz(concat(embedded, glue))).padStart(15)
      }  ${verdict}`,
    );
    if (gzipped > largest.gzipped) {
      largest = { gzipped, name: fn };
    }
  }
  return {
    gzipped: largest.gzipped,
    lines: [...lines, ...whereTheBytesGo(largest.name)],
    budgets: [summaryLine(
      `size, the largest (${largest.name})`,
      `${fmtInt(largest.gzipped)} bytes`,
      against(
        `at most ${fmtInt(BUDGET_BYTES)}`,
        largest.gzipped <= BUDGET_BYTES,
      ),
    )],
  };
}

/** Code size by crate, from a function's release build's name section. */
function whereTheBytesGo(fn: string): string[] {
  const file = `${ROOT}target/wasm-functions/${fn}.wasm`;
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(file);
  } catch {
    return ["(run scripts/build_wasm.sh for the breakdown by crate)"];
  }
  const b = breakdown(bytes);
  return [
    `where the code bytes of the largest, ${fn}, go (release build before wasm-opt, ${
      fmtInt(b.total)
    } bytes of code; bench/wasm_sizes.ts):`,
    ...b.groups.slice(0, 14).map(([g, n]) =>
      `  ${(100 * n / b.total).toFixed(1).padStart(5)}%  ${
        fmtInt(n).padStart(7)
      }  ${g}`
    ),
  ];
}

// --- processes ----------------------------------------------------------------

/** The environment a function process gets (nothing else leaks in). */
function functionEnv(extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? "/root",
    DENO_NO_UPDATE_CHECK: "1",
    BACKUP_WEBHOOK_SECRET: WEBHOOK_SECRET,
    // Signed reports alone, as the baseline checks them (the default, both,
    // also wants the run's GitHub OIDC token on every report).
    BACKUP_REPORT_AUTH: "webhook",
    BACKUP_JWT_SECRET: JWT_SECRET,
    GITHUB_TOKEN: "ghp_bench_token",
    GITHUB_REPOSITORY: "acme/app",
    GITHUB_API_URL: "http://127.0.0.1:9",
    ...extra,
  };
  // The module cache must be the same one `deno task` uses.
  for (const k of ["DENO_DIR", "XDG_CACHE_HOME", "NPM_CONFIG_REGISTRY"]) {
    const v = Deno.env.get(k);
    if (v) env[k] = v;
  }
  return env;
}

interface Server {
  url: string;
  child: Deno.ChildProcess;
  /** Resolves once the process printed its first line (it is listening). */
  listening: Promise<void>;
  output(): string;
  stop(): Promise<void>;
}

/** `deno run --allow-env --allow-net --allow-read SCRIPT`, as `deno task serve`. */
function spawnFunction(
  script: string,
  env: Record<string, string>,
  root = ROOT,
): Server {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-env", "--allow-net", "--allow-read", script],
    cwd: root,
    env: functionEnv({
      ...env,
      PORT: String(port),
      // Where a function's own Deno.serve() listens: it names no port.
      DENO_SERVE_ADDRESS: `tcp:127.0.0.1:${port}`,
    }),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let output = "";
  let resolveListening!: () => void;
  const listening = new Promise<void>((r) => (resolveListening = r));
  const decoder = new TextDecoder();
  // Listening once it names its address: scripts/serve.ts says so on
  // stdout, a function's own Deno.serve() on stderr.
  const pump = async (s: ReadableStream<Uint8Array>) => {
    for await (const chunk of s) {
      output += decoder.decode(chunk, { stream: true });
      if (output.includes(`127.0.0.1:${port}`)) resolveListening();
    }
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  const exited = child.status.then((s) => {
    resolveListening();
    return s;
  });
  return {
    url: `http://127.0.0.1:${port}`,
    child,
    listening,
    output: () => output,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await exited;
      await pumps.catch(() => {});
    },
  };
}

/** The first request of a cold start, and the answer it must get. */
interface FirstRequest {
  env: Record<string, string>;
  /** Made before the clock starts (signing is the client's work). */
  make(): Promise<{ body: string; headers: Record<string, string> }>;
  expect(status: number, body: Record<string, unknown>): boolean;
}

/** An unsigned report: answered 401 without the database. */
const UNSIGNED: FirstRequest = {
  env: { SUPABASE_DB_URL: "postgres://postgres@127.0.0.1:9/none" },
  make: () =>
    Promise.resolve({
      body: "{}",
      headers: { "content-type": "application/json" },
    }),
  expect: (status, body) =>
    status === 401 &&
    (body?.error as { code?: string })?.code === "invalid_signature",
};

/** Spawn → first answered request (by default an unsigned report: 401). */
async function coldStart(
  script: string,
  path: string,
  root = ROOT,
  first: FirstRequest = UNSIGNED,
): Promise<number> {
  const { body, headers } = await first.make();
  const t0 = performance.now();
  const server = spawnFunction(script, first.env, root);
  try {
    await server.listening;
    const r = await fetch(server.url + path, {
      method: "POST",
      headers,
      body,
    });
    const answer = await r.json();
    const t1 = performance.now();
    if (!first.expect(r.status, answer)) {
      throw new Error(
        `${script}: unexpected first answer ${r.status} ${
          JSON.stringify(answer)
        }\n${server.output()}`,
      );
    }
    return t1 - t0;
  } finally {
    await server.stop();
  }
}

interface Contender {
  label: string;
  run: () => Promise<number>;
  times: number[];
}

/** The cold-start contender held to the budget. */
const DEPLOYED = "finalize-backup/index.ts (as deployed)";

/** One budget's line: the measure, its ratio, the bound and whether it holds. */
export function budgetLine(
  measure: string,
  ratio: number,
  bound: "at most" | "at least",
  limit: number,
): string {
  const holds = bound === "at most" ? ratio <= limit : ratio >= limit;
  // Two decimals, unless they would show the bound itself for a ratio that
  // misses it.
  const shown = Number(ratio.toFixed(2)) === limit && !holds
    ? ratio.toFixed(3)
    : ratio.toFixed(2);
  return summaryLine(
    measure,
    `${shown}×`,
    against(`${bound} ${limit.toFixed(2)}×`, holds),
  );
}

/**
 * Cold starts, interleaved in rotating order. With BENCH_COLD_BEFORE set to
 * a checkout of an earlier commit (`git worktree add DIR REV`), that
 * commit's finalize-backup runs beside the current one, so a before/after
 * comparison is measured in one run on the same machine.
 */
async function coldStarts(): Promise<Part> {
  const contenders: Contender[] = [
    {
      label: "scripts/serve.ts (Rust core, wasm)",
      run: () => coldStart("scripts/serve.ts", "/functions/v1/finalize-backup"),
      times: [],
    },
    {
      label: DEPLOYED,
      run: () => coldStart("supabase/functions/finalize-backup/index.ts", "/"),
      times: [],
    },
    {
      label: "bench/minimal_function.ts (TS + postgres)",
      run: () => coldStart("bench/minimal_function.ts", "/"),
      times: [],
    },
  ];
  const before = Deno.env.get("BENCH_COLD_BEFORE");
  if (before) {
    contenders.push({
      label: `before: ${before}, finalize-backup/index.ts`,
      run: () =>
        coldStart(
          "supabase/functions/finalize-backup/index.ts",
          "/",
          before.replace(/\/?$/, "/"),
        ),
      times: [],
    });
  }
  return await interleaved(
    contenders,
    "bench/minimal",
    "the minimal function",
    "POST, unsigned → 401",
    "cold start, unsigned report (401)",
  );
}

/**
 * Runs each contender COLD_RUNS times, interleaved in rotating order after
 * one untimed round (module and npm caches, page cache), and prints each
 * one's median against the contender whose label starts with `base`. The
 * function as deployed is held to COLD_BUDGET, as `measure`.
 */
async function interleaved(
  contenders: Contender[],
  base: string,
  baseName: string,
  what: string,
  measure: string,
): Promise<Part> {
  for (const c of contenders) await c.run();
  for (let i = 0; i < COLD_RUNS; i++) {
    for (let k = 0; k < contenders.length; k++) {
      const c = contenders[(i + k) % contenders.length];
      c.times.push(await c.run());
    }
  }
  const range = (xs: number[]) =>
    `${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)} ms`;
  const reference = median(
    contenders.find((c) => c.label.startsWith(base))!.times,
  );
  const deployed = contenders.find((c) => c.label.startsWith(DEPLOYED))!;
  return {
    lines: [
      `runs: ${COLD_RUNS} each, interleaved, after one untimed round; spawn → first response (${what})`,
      ...contenders.map((c) =>
        `${c.label.padEnd(44)} median ${
          ms(median(c.times), 0).padStart(7)
        }   range ${range(c.times)}   ${
          (median(c.times) / reference).toFixed(2)
        }× ${baseName}`
      ),
    ],
    budgets: [budgetLine(
      measure,
      median(deployed.times) / reference,
      "at most",
      COLD_BUDGET,
    )],
  };
}

/** A running manual backup of workflow run RUN_ID, as the reports expect. */
async function insertRunning(sql: postgres.Sql): Promise<string> {
  const dispatchId = crypto.randomUUID();
  await sql`
    insert into backup_history
      (dispatch_id, trigger_source, workflow_run_id, started_at)
    values (${dispatchId}::uuid, 'manual', ${RUN_ID}, now())`;
  return dispatchId;
}

/**
 * Cold starts whose first request is what the function is for: a signed
 * `progress` report to a running backup, answered 200 after the function
 * connects to the database, against bench/baseline_function.ts doing the
 * same. Interleaved like coldStarts(); the unsigned measure above isolates
 * what loading the core costs, this one is what the workflow waits for.
 */
async function coldReports(cluster: Cluster): Promise<Part> {
  const dbUrl = await migratedDatabase(cluster, "bench_cold");
  const sql = postgres(dbUrl, { max: 1, onnotice: () => {} });
  try {
    const dispatchId = await insertRunning(sql);
    let serial = 0;
    const report: FirstRequest = {
      env: { SUPABASE_DB_URL: dbUrl },
      make: async () => {
        const body = JSON.stringify(progress(dispatchId, serial++));
        return {
          body,
          headers: {
            ...await webhookHeaders(body, WEBHOOK_SECRET),
            "content-type": "application/json",
          },
        };
      },
      expect: (status, body) => status === 200 && body.changed === true,
    };
    const contenders: Contender[] = [
      {
        label: DEPLOYED,
        run: () =>
          coldStart(
            "supabase/functions/finalize-backup/index.ts",
            "/",
            ROOT,
            report,
          ),
        times: [],
      },
      {
        label: "bench/baseline_function.ts (TS + postgres)",
        run: () => coldStart("bench/baseline_function.ts", "/", ROOT, report),
        times: [],
      },
    ];
    return await interleaved(
      contenders,
      "bench/baseline",
      "the baseline function",
      "a signed progress report → 200, the database connected on the way",
      "cold start, signed report first (200)",
    );
  } finally {
    await sql.end();
  }
}

// --- PostgreSQL --------------------------------------------------------------------

interface Cluster {
  url: string;
  dir: string;
  stop(): Promise<void>;
}

async function startCluster(): Promise<Cluster> {
  let parent = Deno.env.get("TMPDIR") ?? "/tmp";
  try {
    if (Deno.statSync("/dev/shm").isDirectory) parent = "/dev/shm";
  } catch { /* no tmpfs */ }
  const dir = await Deno.makeTempDir({ dir: parent, prefix: "backup-bench-" });
  // As root the cluster runs as `postgres`, which must be able to enter it.
  await Deno.chmod(dir, 0o711);
  const pgDir = `${dir}/pg`;
  const stop = async () => {
    try {
      await run("bash", ["scripts/pg_cluster.sh", "stop", pgDir]);
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  };
  try {
    const port = await run("bash", ["scripts/pg_cluster.sh", "free-port"]);
    const url = await run("bash", [
      "scripts/pg_cluster.sh",
      "start",
      pgDir,
      port,
    ]);
    return { url, dir, stop };
  } catch (e) {
    await stop().catch(() => {});
    throw e;
  }
}

function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = "/" + db;
  return u.toString();
}

/** A new database on the cluster, migrated. */
async function migratedDatabase(
  cluster: Cluster,
  name: string,
): Promise<string> {
  const admin = postgres(cluster.url, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create database ${name}`);
  } finally {
    await admin.end({ timeout: 5 });
  }
  const url = withDatabase(cluster.url, name);
  await migrate(url);
  return url;
}

// --- 3. finalize-backup throughput, beside a baseline --------------------------

/** One load: how many answers of each kind, how fast. */
interface Load {
  rps: number;
  p50: number;
  p99: number;
  /** Status (and error code) → count. */
  statuses: Map<string, number>;
  /** 200s with `changed: true`. */
  changed: number;
  /** Answers that are not 2xx. */
  errors: number;
}

interface Signed {
  body: string;
  headers: Record<string, string>;
}

/** Sends `requests` from `clients` concurrent clients, each request once. */
async function load(
  url: string,
  requests: Signed[],
  clients: number,
): Promise<Load> {
  const statuses = new Map<string, number>();
  const latencies: number[] = [];
  let changed = 0;
  let next = 0;
  const deadline = performance.now() + MAX_LOAD_MS;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < requests.length && performance.now() < deadline) {
        const { body, headers } = requests[next++];
        const t0 = performance.now();
        let key: string;
        try {
          const r = await fetch(url, { method: "POST", headers, body });
          const text = await r.text();
          key = String(r.status);
          try {
            const answer = JSON.parse(text);
            if (answer.changed === true) changed++;
            if (answer.error) key += ` ${answer.error.code}`;
          } catch { /* not JSON */ }
        } catch {
          key = "no answer";
        }
        latencies.push(performance.now() - t0);
        statuses.set(key, (statuses.get(key) ?? 0) + 1);
      }
    }),
  );
  const elapsed = performance.now() - started;
  const errors = [...statuses.entries()]
    .filter(([k]) => !k.startsWith("2"))
    .reduce((n, [, c]) => n + c, 0);
  return {
    rps: latencies.length / (elapsed / 1000),
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    statuses,
    changed,
    errors,
  };
}

/** Reports as the workflow sends them, each with a new webhook-id. */
async function sign(
  reports: Record<string, unknown>[],
): Promise<Signed[]> {
  return await Promise.all(reports.map(async (report) => {
    const body = JSON.stringify(report);
    return { body, headers: await webhookHeaders(body, WEBHOOK_SECRET) };
  }));
}

const RUN_ID = 4242;

function progress(dispatchId: string, i: number): Record<string, unknown> {
  return {
    event: "progress",
    dispatch_id: dispatchId,
    workflow_run_id: RUN_ID,
    run_attempt: 1,
    progress: { phase: "dump", bytes: i * 4096 },
  };
}

/**
 * History rows in the states a busy project has, and a report each may
 * get again without a 4xx: the running run's progress, a success's
 * `succeeded` and a reported failure's `failed` (both answered
 * `changed: false`).
 */
async function manyRuns(
  sql: postgres.Sql,
  running: string,
  n: number,
): Promise<(i: number) => Record<string, unknown>> {
  const finished = await sql<{ dispatch_id: string; status: string }[]>`
    insert into backup_history
      (dispatch_id, status, failure_reason, outcome_source, s3_key,
       error_text, trigger_source, workflow_run_id, started_at, finished_at)
    select gen_random_uuid(),
           case when g % 2 = 0 then 'success' else 'failed' end,
           case when g % 2 = 1 then 'step_failed' end, 'report',
           case when g % 2 = 0 then 'bench/' || g || '.dump' end,
           case when g % 2 = 1 then 'pg_dump failed' end,
           'manual', 10000 + g, now(), now()
      from generate_series(1, ${n}::int) g
    returning dispatch_id::text, status, workflow_run_id::int8::text as wr,
              s3_key, error_text`;
  return (i: number) => {
    if (i % 3 === 0) return progress(running, i);
    const row = finished[i % finished.length] as unknown as {
      dispatch_id: string;
      status: string;
      wr: string;
      s3_key: string | null;
      error_text: string | null;
    };
    return row.status === "success"
      ? {
        event: "succeeded",
        dispatch_id: row.dispatch_id,
        workflow_run_id: Number(row.wr),
        run_attempt: 1,
        s3_key: row.s3_key,
      }
      : {
        event: "failed",
        dispatch_id: row.dispatch_id,
        workflow_run_id: Number(row.wr),
        run_attempt: 1,
        error_text: row.error_text,
      };
  };
}

/**
 * The budget that throughput does not fall as clients are added, up to 32:
 * the project's req/s on one run at each client count, in client order.
 */
export function rising(cells: [number, number][]): string {
  const upTo32 = cells.filter(([c]) => c <= 32).sort(([a], [b]) => a - b);
  const falls = upTo32.slice(1).filter(([, rps], i) => rps < upTo32[i][1]);
  const figures = upTo32.map(([c, rps]) => `${c}: ${fmtInt(rps)}`).join(", ");
  return summaryLine(
    "throughput from 1 to 32 clients",
    `${figures} req/s`,
    upTo32.length < 2
      ? "not measured"
      : falls.length === 0
      ? "never falls: met"
      : "falls: NOT MET",
  );
}

async function throughput(cluster: Cluster): Promise<Part> {
  const dbUrl = await migratedDatabase(cluster, "bench_http");
  const sql = postgres(dbUrl, { max: 1, onnotice: () => {} });
  const env = { SUPABASE_DB_URL: dbUrl };
  // The function as deployed: its own index.ts, serving on its own port.
  const project = spawnFunction(
    "supabase/functions/finalize-backup/index.ts",
    env,
  );
  const baseline = spawnFunction("bench/baseline_function.ts", env);
  try {
    const dispatchId = await insertRunning(sql);
    const many = await manyRuns(sql, dispatchId, 500);
    await Promise.all([project.listening, baseline.listening]);
    const targets = [
      ["project", project.url + "/"],
      ["baseline", baseline.url + "/"],
    ] as const;
    const version = async () =>
      Number(
        (await sql`
          select version from backup_history
           where dispatch_id = ${dispatchId}::uuid`)[0].version,
      );

    // Warm-up of both: the wasm instance, the pools, the JIT.
    let serial = 0;
    for (const [, url] of targets) {
      const warm = await sign(
        Array.from(
          { length: WARMUP_REQUESTS },
          () => progress(dispatchId, serial++),
        ),
      );
      await load(url, warm, 1);
    }

    const scenarios: [
      string,
      number,
      (i: number) => Record<string, unknown>,
    ][] = [
      ...CONCURRENCY.map((c): [
        string,
        number,
        (i: number) => Record<string, unknown>,
      ] => [
        `one run, ${c} client${c > 1 ? "s" : ""}`,
        c,
        (i) => progress(dispatchId, i),
      ]),
      ["501 runs in 3 states, 32 clients", 32, many],
    ];
    const rows: string[] = [];
    const budgets: string[] = [];
    // The project's req/s on one run, by client count, in the order measured.
    const oneRun: [number, number][] = [];
    let projectErrors = 0;
    const mismatches: string[] = [];
    let totalErrors = 0;
    const answered = new Map<string, number>();
    // Every load's answers count, the warm-up's too.
    const tally = (label: string, name: string, result: Load) => {
      totalErrors += result.errors;
      if (label === "project") projectErrors += result.errors;
      for (const [k, n] of result.statuses) {
        const key = `  ${label.padEnd(9)}${name.padEnd(34)}${k}`;
        answered.set(key, (answered.get(key) ?? 0) + n);
      }
    };
    for (const [name, clients, make] of scenarios) {
      const rounds: Load[][] = [[], []];
      for (const [label, url] of targets) {
        const warm = await sign(
          Array.from({ length: CELL_WARMUP }, () => make(serial++)),
        );
        tally(label, name, await load(url, warm, clients));
      }
      for (let round = 0; round < ROUNDS; round++) {
        // Alternate which goes first, so neither always meets a warmer cache.
        const order = (rows.length + round) % 2 === 0 ? [0, 1] : [1, 0];
        for (const t of order) {
          const [label, url] = targets[t];
          const reports = await sign(
            Array.from({ length: REQUESTS }, () => make(serial++)),
          );
          const before = await version();
          const result = await load(url, reports, clients);
          const after = await version();
          // On one run, every changed:true is one write of the row.
          if (
            name.startsWith("one run") && after - before !== result.changed
          ) {
            mismatches.push(
              `${label}, ${name}: ${result.changed} changes answered, row version moved ${
                after - before
              }`,
            );
          }
          rounds[t].push(result);
          tally(label, name, result);
        }
      }
      // Each side's median round (by req/s), with its own latencies.
      const results = rounds.map((side) =>
        [...side].sort((x, y) => x.rps - y.rps)[side.length >> 1]
      );
      const [p, b] = results;
      const [pErrors, bErrors] = rounds.map((side) =>
        side.reduce((n, r) => n + r.errors, 0)
      );
      const budget = throughputBudget(clients);
      budgets.push(
        budgetLine(`throughput, ${name}`, p.rps / b.rps, "at least", budget),
      );
      if (name.startsWith("one run")) oneRun.push([clients, p.rps]);
      rows.push(
        `| ${name.padEnd(33)}| ${fmtInt(p.rps).padStart(6)} | ${
          ms(p.p50).padStart(8)
        } | ${ms(p.p99).padStart(9)} | ${String(pErrors).padStart(6)} | ${
          fmtInt(b.rps).padStart(6)
        } | ${ms(b.p50).padStart(8)} | ${ms(b.p99).padStart(9)} | ${
          String(bErrors).padStart(6)
        } | ${(p.rps / b.rps).toFixed(2).padStart(5)}× | ≥ ${
          budget.toFixed(1)
        }× |`,
      );
    }
    budgets.push(
      rising(oneRun),
      summaryLine(
        "non-2xx answers of the project, every cell",
        fmtInt(projectErrors),
        against("0", projectErrors === 0),
      ),
    );

    // What the servers said about their errors (log lines carry no secrets).
    const errorLines: string[] = [];
    for (
      const [label, server] of [["project", project], [
        "baseline",
        baseline,
      ]] as const
    ) {
      const errors = new Map<string, number>();
      for (const line of server.output().split("\n")) {
        if (!line.includes('"level":"error"')) continue;
        let message = line;
        try {
          message = String(JSON.parse(line).message ?? line);
        } catch { /* not JSON */ }
        message = message.replace(/[0-9a-f]{8}-[0-9a-f-]{27}/g, "<id>");
        errors.set(message, (errors.get(message) ?? 0) + 1);
      }
      for (const [m, n] of errors) {
        errorLines.push(`${label} log  ${fmtInt(n)}× ${m}`);
      }
    }

    const lines = [
      `${
        fmtInt(REQUESTS)
      } signed reports per round (a new webhook-id each), sent by concurrent clients over loopback;`,
      `${ROUNDS} rounds per side in each cell, the sides alternating; each side's median round is shown (non-2xx: all rounds);`,
      `project: supabase/functions/finalize-backup/index.ts as deployed (the Rust core); baseline: bench/baseline_function.ts (WebCrypto signature check,`,
      `one guarded UPDATE); same database, same run, ${WARMUP_REQUESTS} warm-up reports each first and ${CELL_WARMUP} of its kind before each cell;`,
      "ratio = project / baseline req/s",
      "",
      "| scenario                         | project req/s | p50 | p99 | non-2xx | baseline req/s | p50 | p99 | non-2xx | ratio | budget |",
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
      ...rows,
      "",
      "answers (the warm-up before each cell included):",
      ...[...answered.entries()].map(([k, n]) => `${k}: ${fmtInt(n)}`),
      `non-2xx answers in all: ${fmtInt(totalErrors)}`,
      mismatches.length === 0
        ? "row version on the running run: moved once per changed:true answer, in every one-run cell"
        : `row version MISMATCH: ${mismatches.join("; ")}`,
      ...errorLines,
    ];
    return { lines, budgets };
  } finally {
    await Promise.all([project.stop(), baseline.stop()]);
    await sql.end({ timeout: 5 });
  }
}

// --- 4. the sweep's candidate query -----------------------------------------------------

/** Finished history rows [from, to], without the per-row triggers. */
async function insertHistory(
  sql: postgres.Sql,
  from: number,
  to: number,
): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`set local session_replication_role = replica`;
    await tx`
      insert into backup_history
        (dispatch_id, status, failure_reason, s3_key, outcome_source,
         trigger_source, created_at, updated_at, started_at, finished_at,
         workflow_run_id, size_bytes)
      select gen_random_uuid(),
             case when g % 10 = 0 then 'failed' else 'success' end,
             case when g % 10 = 0 then 'step_failed' end,
             case when g % 10 <> 0 then 'backups/' || g || '.dump' end,
             'report', 'schedule',
             now() - g * interval '1 minute', now() - g * interval '1 minute',
             now() - g * interval '1 minute',
             now() - g * interval '1 minute' + interval '4 minutes',
             g, 1048576
        from generate_series(${from}::int, ${to}::int) g`;
  });
  await sql`analyze backup_history`;
}

interface QueryFigures {
  rows: number;
  plan: string[];
  executionMs: number;
  roundTripMs: number;
  scan: string;
  buffers: number;
}

async function measureQuery(
  sql: postgres.Sql,
  query: string,
): Promise<QueryFigures> {
  const [{ rows }] =
    await sql`select count(*)::int as rows from backup_history`;
  for (let i = 0; i < 5; i++) await sql.unsafe(query);
  const plan = (await sql.unsafe(`explain (analyze, buffers) ${query}`)).map(
    (r) => String(r["QUERY PLAN"]),
  );
  const exec: number[] = [];
  let scan = "";
  let buffers = 0;
  for (let i = 0; i < QUERY_RUNS; i++) {
    const [{ "QUERY PLAN": json }] = await sql.unsafe(
      `explain (analyze, buffers, format json) ${query}`,
    );
    exec.push(json[0]["Execution Time"]);
    const top = json[0].Plan;
    const child = top.Plans?.[0];
    scan = child
      ? `${top["Node Type"]} ← ${child["Node Type"]} on ${
        child["Index Name"] ?? top["Relation Name"]
      }`
      : `${top["Node Type"]} on ${top["Index Name"] ?? top["Relation Name"]}`;
    buffers = top["Shared Hit Blocks"] + top["Shared Read Blocks"];
  }
  const trips: number[] = [];
  for (let i = 0; i < QUERY_RUNS; i++) {
    const t0 = performance.now();
    const found = await sql.unsafe(query);
    trips.push(performance.now() - t0);
    if (found.length !== 1) {
      throw new Error(`expected one row, got ${found.length}`);
    }
  }
  return {
    rows,
    plan,
    executionMs: median(exec),
    roundTripMs: median(trips),
    scan,
    buffers,
  };
}

async function candidateQuery(cluster: Cluster): Promise<string[]> {
  const dbUrl = await migratedDatabase(cluster, "bench_history");
  const sql = postgres(dbUrl, { max: 1, onnotice: () => {} });
  try {
    // The query the core runs (src/ports/store.rs `running`).
    const select = await Deno.readTextFile(
      new URL("../src/sql/select_run.sql", import.meta.url),
    );
    const query = select
      .split("\n")
      .filter((l) => !l.trim().startsWith("--"))
      .join("\n")
      .trim() + "\nwhere h.status = 'in_progress'";

    await sql`
      insert into backup_history (dispatch_id, trigger_source, workflow_run_id, started_at)
      values (gen_random_uuid(), 'manual', 1, now())`;
    await insertHistory(sql, 1, 9);
    const small = await measureQuery(sql, query);

    const t0 = performance.now();
    await insertHistory(sql, 10, LARGE_HISTORY - 1);
    const loadMs = performance.now() - t0;
    const large = await measureQuery(sql, query);

    const col = (s: string) => s.padEnd(42);
    const lines = [
      `query: src/sql/select_run.sql + "where h.status = 'in_progress'" (one in_progress row); ${QUERY_RUNS} runs each`,
      `${col("history rows")}${fmtInt(small.rows).padStart(12)}${
        fmtInt(large.rows).padStart(14)
      }`,
      `${col("plan")}${small.scan}  |  ${large.scan}`,
      `${col("shared buffers touched")}${String(small.buffers).padStart(12)}${
        String(large.buffers).padStart(14)
      }`,
      `${col("median execution time (EXPLAIN ANALYZE)")}${
        ms(small.executionMs, 3).padStart(12)
      }${ms(large.executionMs, 3).padStart(14)}`,
      `${col("median round trip (postgres.js)")}${
        ms(small.roundTripMs, 3).padStart(12)
      }${ms(large.roundTripMs, 3).padStart(14)}`,
      `(${
        fmtInt(LARGE_HISTORY - 10)
      } rows inserted with generate_series and analyzed in ${ms(loadMs, 0)})`,
      ...(small.scan.startsWith("Seq Scan")
        ? [
          "(at 10 rows the whole table is one page, which the planner rightly reads directly;",
          " with a history it uses the one-row partial index, so the cost does not grow)",
        ]
        : []),
      "",
      `EXPLAIN (ANALYZE, BUFFERS), ${fmtInt(small.rows)} rows:`,
      ...small.plan.map((l) => "  " + l),
      "",
      `EXPLAIN (ANALYZE, BUFFERS), ${fmtInt(large.rows)} rows:`,
      ...large.plan.map((l) => "  " + l),
    ];
    return lines;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

// --- main -----------------------------------------------------------------------

/** `deno task bench [size] [cold] [cold-report] [throughput] [query]`: only those parts. */
const ONLY = new Set(Deno.args);
const wanted = (part: string) => ONLY.size === 0 || ONLY.has(part);

async function main(): Promise<void> {
  const began = performance.now();
  console.log("deno task bench: the performance budget");
  for (const l of await machine()) console.log(l);
  console.log(
    "figures are medians (unless marked) from one run on a shared machine; expect noise between runs",
  );
  // Each part prints its lines as it ends; the budgets come last, together.
  const budgets: string[] = [];
  const report = (part: Part) => {
    for (const l of part.lines) console.log(l);
    budgets.push(...part.budgets);
  };

  section("1. size of pkg/ (what a function deploys)");
  const size = await sizes();
  report(size);

  if (wanted("cold")) {
    section("2. cold start");
    report(await coldStarts());
  }
  if (wanted("throughput") || wanted("query") || wanted("cold-report")) {
    const cluster = await startCluster();
    const onSignal = () => {
      cluster.stop().finally(() => Deno.exit(130));
    };
    Deno.addSignalListener("SIGINT", onSignal);
    try {
      console.log(
        `\n(PostgreSQL ${
          (await run("/usr/lib/postgresql/15/bin/postgres", ["--version"]))
            .replace(/^postgres \(PostgreSQL\) /, "")
        }: a throwaway cluster, fsync off, on ${cluster.dir})`,
      );
      if (wanted("cold-report")) {
        section("2b. cold start, first request a signed report");
        report(await coldReports(cluster));
      }
      if (wanted("throughput")) {
        section("3. finalize-backup throughput (loopback)");
        report(await throughput(cluster));
      }
      if (wanted("query")) {
        section("4. the sweep's candidate query");
        for (const l of await candidateQuery(cluster)) console.log(l);
      }
    } finally {
      Deno.removeSignalListener("SIGINT", onSignal);
      await cluster.stop();
    }
  }

  section("budgets (only the size budget fails the run)");
  for (const l of budgets) console.log(l);
  console.log(
    `\nbench took ${
      ms((performance.now() - began) / 1000, 1).replace(" ms", " s")
    }`,
  );
  if (size.gzipped > BUDGET_BYTES) Deno.exitCode = 1;
}

if (import.meta.main) {
  await main();
}
