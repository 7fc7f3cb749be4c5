/**
 * A loopback stand-in for the parts of GitHub's REST API that the control
 * plane uses, optionally running the real backup workflow with `act`.
 *
 *   POST /repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches
 *   GET  /repos/{owner}/{repo}/actions/runs/{id}
 *   POST /repos/{owner}/{repo}/actions/runs/{id}/cancel
 *
 * Used by the lead's tests (scripted answers, no act), by the workflow's
 * end-to-end tests and by `deno task dev` (with act: each accepted dispatch
 * runs .github/workflows/backup.yml in act's host mode, `-P
 * ubuntu-latest=-self-hosted`, so no Docker and no network are needed).
 *
 * act runs with a cleared environment (PATH, a private HOME and XDG dirs
 * under a temp dir, plus ActOptions.env), with secrets and variables passed
 * through files in that temp dir, never on its command line, and with its
 * action cache, workspace and RUNNER_TEMP in that temp dir too, outside the
 * repository. act never pulls images or fetches actions: the workflow has no
 * `uses:` steps and act runs with --action-offline-mode and no cache server.
 *
 * Only `npm:`/`node:` imports (none needed): Deno built-ins only.
 */

export interface DispatchCall {
  repo: string;
  workflow: string;
  headers: Record<string, string>;
  // deno-lint-ignore no-explicit-any
  body: any;
  at: number;
}

/**
 * How dispatched runs are executed with act. The object is read again at
 * every run, so a caller may fill in values known only later (e.g. set
 * `vars.BACKUP_FINALIZE_URL` once the functions are listening).
 */
export interface ActOptions {
  /** Workflow secrets (BACKUP_DATABASE_URL, BACKUP_WEBHOOK_SECRET, AWS_*). */
  secrets?: Record<string, string>;
  /** Workflow variables (BACKUP_FINALIZE_URL, BACKUP_S3_BUCKET, ...). */
  vars?: Record<string, string>;
  /** Extra environment of the act process. In host mode the job inherits
   * act's environment, so keep secrets out of here (use `secrets`). */
  env?: Record<string, string>;
  /** Repository root; default: the repository holding this module. */
  repoRoot?: string;
  /** Workflow file, relative to repoRoot. */
  workflow?: string;
  /** act executable; default $ACT_BIN or `act` on PATH. */
  actBin?: string;
  /** Kill (SIGKILL, conclusion "failure") a run still going after this long. Default 300 s. */
  runTimeoutMs?: number;
  /** Where act's caches, workspaces and logs go; default a fresh temp dir, removed by close(). */
  workDir?: string;
  /** Copy act's output to stderr as it runs; default: env LOCAL_GITHUB_ECHO=1. */
  echo?: boolean;
  /** Repository full name used for scheduled runs started with startScheduledRun(). */
  repo?: string;
  /** Give each run ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN, as GitHub does for
   * a job with `permissions: id-token: write`; default true. false: a
   * GitHub without OIDC (GitHub Enterprise Server without it). */
  oidc?: boolean;
}

/** Claims and header members of a token minted with `mintOidcToken`. */
export interface OidcTokenOptions {
  /** Claims to set (or, with null, to drop) over those of `runId`'s run. */
  claims?: Record<string, unknown>;
  /** JOSE header members over `{alg: "RS256", kid, typ: "JWT"}`. */
  header?: Record<string, unknown>;
  /** Sign with a key the issuer does not publish. */
  foreignKey?: boolean;
}

export type RunConclusion = "success" | "failure" | "cancelled";

export interface ActResult {
  runId: number;
  /** act's exit code (null when it died of a signal). */
  code: number | null;
  signal: string | null;
  conclusion: RunConclusion;
  log: string;
  durationMs: number;
}

export interface ActRun {
  runId: number;
  event: "workflow_dispatch" | "schedule";
  dispatchId?: string;
  pid: number;
  startedAt: number;
  /** Set when cancel() was called: the conclusion the run gets when act exits. */
  cancelledWith?: string;
  done: Promise<ActResult>;
}

export interface LocalGitHub {
  url: string;
  dispatches: DispatchCall[];
  runs: Map<number, Record<string, unknown>>;
  requests: { method: string; path: string }[];
  onDispatch: (call: DispatchCall) => Response | Promise<Response>;
  /** act runs by run id (only with `act` options). */
  actRuns: Map<number, ActRun>;
  /** Resolves when the run's act process has exited. */
  waitForRun(runId: number, timeoutMs?: number): Promise<ActResult>;
  /** act's output so far (stdout and stderr interleaved). */
  runLog(runId: number): string;
  /** Starts `act schedule` (a run without dispatch id); returns its run id. */
  startScheduledRun(): Promise<number>;
  /** The OIDC issuer this stand-in serves (`GITHUB_OIDC_ISSUER`): its
   * `/.well-known/jwks`, `/.well-known/openid-configuration`, and the
   * token endpoint a run's ACTIONS_ID_TOKEN_REQUEST_URL points at. */
  oidcIssuer: string;
  /** An RS256 token as GitHub mints it for run `runId` (which must exist),
   * for `audience`, with `opts` changing claims, header or key. */
  mintOidcToken(
    runId: number,
    audience: string,
    opts?: OidcTokenOptions,
  ): Promise<string>;
  /**
   * Cancels a running act run. SIGINT (default) is a GitHub-style cancel:
   * act kills the running step and still runs `if: always()` /
   * `if: cancelled()` steps with job.status = cancelled. SIGTERM makes act
   * stop without running them. SIGKILL kills act and every process it
   * started (a lost runner). The run's conclusion becomes `conclusion`.
   */
  cancel(
    runId: number,
    signal?: Deno.Signal,
    conclusion?: RunConclusion,
  ): Promise<void>;
  close(): Promise<void>;
}

const DISPATCH_RE =
  /^\/repos\/([^/]+)\/([^/]+)\/actions\/workflows\/([^/]+)\/dispatches$/;
const RUN_RE = /^\/repos\/([^/]+)\/([^/]+)\/actions\/runs\/(\d+)$/;
const CANCEL_RE = /^\/repos\/([^/]+)\/([^/]+)\/actions\/runs\/(\d+)\/cancel$/;

/** The root of the repository this module belongs to. */
export function repoRootDir(): string {
  return decodeURIComponent(new URL("..", import.meta.url).pathname).replace(
    /\/$/,
    "",
  );
}

/** True when the act CLI can be executed. */
export async function actAvailable(
  actBin = Deno.env.get("ACT_BIN") ?? "act",
): Promise<boolean> {
  try {
    const out = await new Deno.Command(actBin, {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false;
  }
}

function json(
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

function notFound(): Response {
  return json(404, {
    message: "Not Found",
    documentation_url: "https://docs.github.com/rest",
    status: "404",
  });
}

/** dotenv line for act's --secret-file/--var-file (godotenv; single quotes are literal). */
function dotenvLine(name: string, value: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
    throw new Error(`invalid name ${name}`);
  }
  if (/['\n\r]/.test(value)) {
    throw new Error(
      `value of ${name} may not contain a single quote or a newline`,
    );
  }
  return `${name}='${value}'\n`;
}

/**
 * Starts the stand-in on 127.0.0.1 (`port` 0 or absent: a free one). Run ids
 * count up from `firstRunId` (default 1000); give a process that shares a
 * long-lived database with earlier ones a distinct start (e.g. based on the
 * clock), since a scheduled run's registration is keyed by its run id.
 */
export async function startLocalGitHub(
  opts: { port?: number; act?: ActOptions; firstRunId?: number } = {},
): Promise<LocalGitHub> {
  const act = opts.act;
  const dispatches: DispatchCall[] = [];
  const runs = new Map<number, Record<string, unknown>>();
  const requests: { method: string; path: string }[] = [];
  const actRuns = new Map<number, ActRun>();
  const logs = new Map<number, string[]>();
  const children = new Map<number, Deno.ChildProcess>();
  let nextRunId = opts.firstRunId ?? 1000;
  let runNumber = 0;

  const repoRoot = act?.repoRoot ?? repoRootDir();
  const workflowRel = act?.workflow ?? ".github/workflows/backup.yml";
  const workflowFile = workflowRel.split("/").pop()!;
  const ownWorkDir = act && !act.workDir;
  const workDir = act
    ? (act.workDir ?? await Deno.makeTempDir({ prefix: "local-github-" }))
    : "";
  const echo = act?.echo ?? Deno.env.get("LOCAL_GITHUB_ECHO") === "1";

  let url = "";
  const now = () => new Date().toISOString().replace(/\.\d+Z$/, "Z");

  // The OIDC issuer: one published signing key, and one that is not (to
  // sign tokens the issuer never issued). Request tokens name their run.
  const rsa = {
    name: "RSASSA-PKCS1-v1_5",
    modulusLength: 2048,
    publicExponent: new Uint8Array([1, 0, 1]),
    hash: "SHA-256",
  };
  const oidcKey = await crypto.subtle.generateKey(rsa, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const foreignKey = await crypto.subtle.generateKey(rsa, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const oidcKid = "local-github-1";
  const publicJwk = await crypto.subtle.exportKey("jwk", oidcKey.publicKey);
  const requestTokens = new Map<string, number>();
  const b64url = (bytes: Uint8Array) =>
    btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(
      /\//g,
      "_",
    ).replace(/=+$/, "");
  const text64 = (v: unknown) =>
    b64url(new TextEncoder().encode(JSON.stringify(v)));

  async function mintOidcToken(
    runId: number,
    audience: string,
    opts: OidcTokenOptions = {},
  ): Promise<string> {
    const run = runs.get(runId);
    if (!run) throw new Error(`no run ${runId}`);
    const repo = (run.repository as { full_name: string }).full_name;
    const ref = `refs/heads/${run.head_branch}`;
    const t = Math.floor(Date.now() / 1000);
    const claims: Record<string, unknown> = {
      jti: crypto.randomUUID(),
      sub: `repo:${repo}:ref:${ref}`,
      aud: audience,
      ref,
      sha: run.head_sha,
      repository: repo,
      repository_owner: repo.split("/")[0],
      run_id: String(runId),
      run_number: String(run.run_number),
      run_attempt: String(run.run_attempt),
      actor: "local",
      workflow: run.name,
      workflow_ref: `${repo}/${workflowRel}@${ref}`,
      event_name: run.event,
      ref_type: "branch",
      iss: gh.oidcIssuer,
      nbf: t - 5,
      iat: t - 5,
      exp: t + 300,
    };
    for (const [k, v] of Object.entries(opts.claims ?? {})) {
      if (v === null) delete claims[k];
      else claims[k] = v;
    }
    const header = {
      alg: "RS256",
      kid: oidcKid,
      typ: "JWT",
      ...opts.header,
    };
    const signed = `${text64(header)}.${text64(claims)}`;
    const key = opts.foreignKey ? foreignKey : oidcKey;
    const sig = await crypto.subtle.sign(
      "RSASSA-PKCS1-v1_5",
      key.privateKey,
      new TextEncoder().encode(signed),
    );
    return `${signed}.${b64url(new Uint8Array(sig))}`;
  }

  /** GitHub's token endpoint: `GET ?audience=` with the run's request token. */
  async function oidcToken(req: Request): Promise<Response> {
    const auth = req.headers.get("authorization") ?? "";
    const runId = requestTokens.get(auth.replace(/^bearer /i, ""));
    if (runId === undefined) {
      return json(401, { message: "Bad credentials", status: "401" });
    }
    const audience = new URL(req.url).searchParams.get("audience") ??
      gh.oidcIssuer;
    return json(200, { value: await mintOidcToken(runId, audience) });
  }

  function registerRun(
    repo: string,
    event: "workflow_dispatch" | "schedule",
    ref: string,
    title: string,
  ): Record<string, unknown> {
    const id = nextRunId++;
    runNumber++;
    const ts = now();
    const run: Record<string, unknown> = {
      id,
      name: "Database backup",
      display_title: title,
      run_number: runNumber,
      run_attempt: 1,
      event,
      status: "queued",
      conclusion: null,
      workflow_id: 1,
      path: workflowRel,
      head_branch: ref.replace(/^refs\/heads\//, ""),
      head_sha: "0000000000000000000000000000000000000000",
      url: `${url}/repos/${repo}/actions/runs/${id}`,
      html_url: `https://github.com/${repo}/actions/runs/${id}`,
      created_at: ts,
      updated_at: ts,
      run_started_at: ts,
      repository: { full_name: repo },
    };
    runs.set(id, run);
    return run;
  }

  function setRun(id: number, patch: Record<string, unknown>) {
    const run = runs.get(id);
    if (run) Object.assign(run, patch, { updated_at: now() });
  }

  async function startAct(
    run: Record<string, unknown>,
    event: "workflow_dispatch" | "schedule",
    dispatchId?: string,
  ): Promise<ActRun> {
    if (!act) {
      throw new Error("startLocalGitHub was called without act options");
    }
    const runId = run.id as number;
    const dir = `${workDir}/run-${runId}`;
    await Deno.mkdir(`${dir}/home`, { recursive: true });
    await Deno.writeTextFile(
      `${dir}/secrets`,
      Object.entries(act.secrets ?? {}).map(([k, v]) => dotenvLine(k, v)).join(
        "",
      ),
      { mode: 0o600 },
    );
    await Deno.writeTextFile(
      `${dir}/vars`,
      Object.entries(act.vars ?? {}).map(([k, v]) => dotenvLine(k, v)).join(""),
    );
    await Deno.writeTextFile(`${dir}/empty.env`, "");
    const eventJson = event === "schedule" ? { schedule: "17 3 * * *" } : {
      inputs: { dispatch_id: dispatchId },
      ref: `refs/heads/${run.head_branch}`,
      workflow: workflowRel,
    };
    await Deno.writeTextFile(`${dir}/event.json`, JSON.stringify(eventJson));

    const args = [
      "act",
      event,
      "-W",
      workflowRel,
      "-P",
      "ubuntu-latest=-self-hosted",
      "-e",
      `${dir}/event.json`,
      "--action-cache-path",
      `${dir}/act`,
      "--cache-server-path",
      `${dir}/actcache`,
      "--no-cache-server",
      "--action-offline-mode",
      "--container-daemon-socket",
      "-",
      "--secret-file",
      `${dir}/secrets`,
      "--var-file",
      `${dir}/vars`,
      "--env-file",
      `${dir}/empty.env`,
      "--input-file",
      `${dir}/empty.env`,
      "--env",
      `GITHUB_RUN_ID=${runId}`,
      "--env",
      `GITHUB_RUN_ATTEMPT=${run.run_attempt}`,
      "--env",
      `GITHUB_RUN_NUMBER=${run.run_number}`,
    ];
    if (event === "workflow_dispatch") {
      args.push("--input", `dispatch_id=${dispatchId}`);
    }
    args[0] = act.actBin ?? Deno.env.get("ACT_BIN") ?? "act";

    const env: Record<string, string> = {
      PATH: Deno.env.get("PATH") ?? "/usr/local/bin:/usr/bin:/bin",
      HOME: `${dir}/home`,
      XDG_CACHE_HOME: `${dir}/cache`,
      XDG_CONFIG_HOME: `${dir}/config`,
      LANG: "C.UTF-8",
      TZ: "UTC",
    };
    // pyenv shims (act, aws from pip) need their root when HOME changes.
    for (const name of ["PYENV_ROOT", "PYENV_VERSION"]) {
      const v = Deno.env.get(name);
      if (v) env[name] = v;
    }
    Object.assign(env, act.env ?? {});
    if (act.oidc ?? true) {
      const requestToken = crypto.randomUUID();
      requestTokens.set(requestToken, runId);
      args.push(
        "--env",
        `ACTIONS_ID_TOKEN_REQUEST_URL=${url}/oidc/token?api-version=2.0`,
        "--env",
        `ACTIONS_ID_TOKEN_REQUEST_TOKEN=${requestToken}`,
      );
    }
    // setsid: act leads its own process group, so SIGKILL can take down
    // everything it started (a lost runner), and nothing outlives close().
    const child = new Deno.Command("setsid", {
      args,
      cwd: repoRoot,
      env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const started = Date.now();
    const lines: string[] = [];
    logs.set(runId, lines);
    children.set(runId, child);
    setRun(runId, { status: "in_progress", run_started_at: now() });

    const pump = async (stream: ReadableStream<Uint8Array>) => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) {
        const text = decoder.decode(chunk, { stream: true });
        lines.push(text);
        if (echo) Deno.stderr.writeSync(new TextEncoder().encode(text));
      }
    };
    const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
    const record: ActRun = {
      runId,
      event,
      dispatchId,
      pid: child.pid,
      startedAt: started,
      done: Promise.resolve() as unknown as Promise<ActResult>,
    };
    const timeoutMs = act.runTimeoutMs ?? 300_000;
    const timer = setTimeout(() => {
      lines.push(
        `\n[local_github] run ${runId} exceeded ${timeoutMs} ms: killing act\n`,
      );
      record.cancelledWith ??= "failure";
      killGroup(child.pid, "SIGKILL");
    }, timeoutMs);
    record.done = (async () => {
      const status = await child.status;
      clearTimeout(timer);
      await pumps.catch(() => {});
      children.delete(runId);
      const conclusion: RunConclusion = record.cancelledWith
        ? record.cancelledWith as RunConclusion
        : status.success
        ? "success"
        : "failure";
      setRun(runId, { status: "completed", conclusion });
      return {
        runId,
        code: status.signal ? null : status.code,
        signal: status.signal ?? null,
        conclusion,
        log: lines.join(""),
        durationMs: Date.now() - started,
      };
    })();
    actRuns.set(runId, record);
    return record;
  }

  function killGroup(pid: number, signal: Deno.Signal) {
    try {
      Deno.kill(-pid, signal);
    } catch {
      try {
        Deno.kill(pid, signal);
      } catch { /* already gone */ }
    }
  }

  async function defaultDispatch(call: DispatchCall): Promise<Response> {
    const auth = call.headers["authorization"] ?? "";
    if (!/^(Bearer|token) \S+$/.test(auth)) {
      return json(401, {
        message: "Requires authentication",
        documentation_url: "https://docs.github.com/rest",
        status: "401",
      });
    }
    if (act && call.workflow !== workflowFile) return notFound();
    const body = call.body;
    if (typeof body !== "object" || body === null) {
      return json(400, { message: "Problems parsing JSON", status: "400" });
    }
    if (typeof body.ref !== "string" || body.ref === "") {
      return json(422, {
        message: 'Invalid request.\n\n"ref" wasn\'t supplied.',
        status: "422",
      });
    }
    const inputs = body.inputs ?? {};
    if (typeof inputs !== "object" || typeof inputs.dispatch_id !== "string") {
      return json(422, {
        message: "Required input 'dispatch_id' not provided",
        status: "422",
      });
    }
    const unexpected = Object.keys(inputs).filter((k) => k !== "dispatch_id");
    if (unexpected.length) {
      return json(422, {
        message: `Unexpected inputs provided: ${JSON.stringify(unexpected)}`,
        status: "422",
      });
    }
    const run = registerRun(
      call.repo,
      "workflow_dispatch",
      body.ref,
      `Backup ${inputs.dispatch_id}`,
    );
    if (act) {
      try {
        await startAct(run, "workflow_dispatch", inputs.dispatch_id);
      } catch (e) {
        setRun(run.id as number, {
          status: "completed",
          conclusion: "failure",
        });
        return json(500, {
          message: `local_github: cannot start act: ${e}`,
          status: "500",
        });
      }
    }
    if (body.return_run_details !== true) {
      return new Response(null, { status: 204 });
    }
    return json(200, {
      workflow_run_id: run.id,
      run_url: run.url,
      html_url: run.html_url,
    });
  }

  const gh: LocalGitHub = {
    url: "",
    oidcIssuer: "",
    mintOidcToken,
    dispatches,
    runs,
    requests,
    onDispatch: (call) => defaultDispatch(call),
    actRuns,
    async waitForRun(runId, timeoutMs = 240_000) {
      const run = actRuns.get(runId);
      if (!run) throw new Error(`no act run ${runId}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new Error(
                `act run ${runId} still running after ${timeoutMs} ms; log:\n${
                  gh.runLog(runId)
                }`,
              ),
            ),
          timeoutMs,
        );
      });
      try {
        return await Promise.race([run.done, timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
    runLog(runId) {
      return (logs.get(runId) ?? []).join("");
    },
    async startScheduledRun() {
      const run = registerRun(
        act?.repo ?? "local/backup",
        "schedule",
        "refs/heads/main",
        "Scheduled backup",
      );
      await startAct(run, "schedule");
      return run.id as number;
    },
    async cancel(runId, signal = "SIGINT", conclusion = "cancelled") {
      const run = actRuns.get(runId);
      const child = children.get(runId);
      if (!run || !child) return;
      run.cancelledWith = conclusion;
      if (signal === "SIGKILL") killGroup(child.pid, "SIGKILL");
      else {
        try {
          Deno.kill(child.pid, signal);
        } catch { /* exited meanwhile */ }
      }
      await Promise.resolve();
    },
    async close() {
      for (const child of children.values()) killGroup(child.pid, "SIGKILL");
      await Promise.allSettled([...actRuns.values()].map((r) => r.done));
      await server.shutdown();
      if (ownWorkDir) {
        await Deno.remove(workDir, { recursive: true }).catch(() => {});
      }
    },
  };

  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: opts.port ?? 0,
    onListen: () => {},
  }, async (req) => {
    const path = new URL(req.url).pathname;
    requests.push({ method: req.method, path });
    if (req.method === "GET" && path === "/oidc/.well-known/jwks") {
      return json(200, {
        keys: [{
          kty: "RSA",
          kid: oidcKid,
          alg: "RS256",
          use: "sig",
          n: publicJwk.n,
          e: publicJwk.e,
        }],
      });
    }
    if (
      req.method === "GET" && path === "/oidc/.well-known/openid-configuration"
    ) {
      return json(200, {
        issuer: gh.oidcIssuer,
        jwks_uri: `${gh.oidcIssuer}/.well-known/jwks`,
        subject_types_supported: ["public", "pairwise"],
        response_types_supported: ["id_token"],
        id_token_signing_alg_values_supported: ["RS256"],
      });
    }
    if (req.method === "GET" && path === "/oidc/token") return oidcToken(req);
    let m = path.match(DISPATCH_RE);
    if (m) {
      if (req.method !== "POST") return notFound();
      const text = await req.text();
      // deno-lint-ignore no-explicit-any
      let body: any = text;
      try {
        body = JSON.parse(text);
      } catch { /* left as text: the default handler answers 400 */ }
      const call: DispatchCall = {
        repo: `${m[1]}/${m[2]}`,
        workflow: decodeURIComponent(m[3]),
        headers: Object.fromEntries(req.headers),
        body,
        at: Date.now(),
      };
      dispatches.push(call);
      return await gh.onDispatch(call);
    }
    m = path.match(RUN_RE);
    if (m && req.method === "GET") {
      const id = Number(m[3]);
      const run = runs.get(id);
      return run ? json(200, run) : notFound();
    }
    m = path.match(CANCEL_RE);
    if (m && req.method === "POST") {
      const id = Number(m[3]);
      const run = runs.get(id);
      if (!run) return notFound();
      if (run.status === "completed") {
        return json(409, {
          message: "Cannot cancel a workflow run that is completed.",
          status: "409",
        });
      }
      if (actRuns.has(id)) await gh.cancel(id, "SIGINT");
      else setRun(id, { status: "completed", conclusion: "cancelled" });
      return json(202, {});
    }
    return notFound();
  });
  url = `http://127.0.0.1:${server.addr.port}`;
  gh.url = url;
  gh.oidcIssuer = `${url}/oidc`;
  return gh;
}

if (import.meta.main) {
  // Stand-alone: `deno run -A scripts/local_github.ts [port]` serves scripted
  // GitHub answers (no act) until interrupted.
  const gh = await startLocalGitHub({
    port: Number(Deno.args[0] ?? 0) || undefined,
  });
  console.log(`local GitHub API at ${gh.url}`);
  Deno.addSignalListener("SIGINT", () => gh.close().then(() => Deno.exit(0)));
}
