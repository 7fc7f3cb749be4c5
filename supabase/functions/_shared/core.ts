// Loads the Rust core (pkg/, WebAssembly) and serves requests through it.
//
// Loading: the WebAssembly bytes are embedded in a generated JS module
// (pkg/backup_core_wasm.js), so they are part of every function's import
// graph, which is exactly what `supabase functions deploy` ships (with
// Docker, with --use-api, and from Branching alike). They are compiled and
// instantiated here at module top level: that work happens while the
// isolate starts, not inside the first request, and no file is read at run
// time (the edge runtime deprecates sync file reads in requests).
//
// Panics: a Rust panic leaves the instance unusable. The core's panic hook
// calls back here before the instance traps; every request still in flight on
// that instance is answered 500 at once (its promise would otherwise never
// settle), and the next request re-instantiates the module first.

import {
  __wbg_reset_state,
  type CoreResponse,
  functionNames,
  handle,
  type Host as HostContract,
  initSync,
  installPanicHook,
  maxBodyBytes,
} from "../../../pkg/backup_core.js";
import { wasmModule } from "../../../pkg/backup_core_wasm.js";
import { query, waitForChange, watch } from "./db.ts";

export { functionNames };

let poisoned = false;
// Rejected when the current instance panics; every request races it.
let panicked!: Promise<never>;
let rejectPanicked!: (reason: Error) => void;
let instances = 0;

function arm(): void {
  panicked = new Promise<never>((_, reject) => {
    rejectPanicked = reject;
  });
  // Requests race this promise; nobody may be racing when it rejects.
  panicked.catch(() => {});
  installPanicHook((message: string) => {
    poisoned = true;
    log("error", "core", `panic: ${message}`);
    rejectPanicked(new Error("the core panicked"));
  });
  instances++;
}

// Top level: compile and instantiate once per isolate, at start.
initSync({ module: await wasmModule });
arm();

/** Re-instantiates the core if the last instance panicked. */
function ready(): void {
  if (poisoned) {
    __wbg_reset_state();
    poisoned = false;
    arm();
    log("warn", "core", "re-instantiated the WebAssembly core after a panic");
  }
}

/** How many times the core has been instantiated (tests read it). */
export function instanceCount(): number {
  return instances;
}

function log(level: string, fn: string, message: string): void {
  const line = JSON.stringify({ level, fn, message });
  if (level === "error") console.error(line);
  else if (level === "warn") console.warn(line);
  else if (level === "debug") console.debug(line);
  else console.log(line);
}

// A trap surfaces as an exception in whatever JS frame called into the
// instance, sometimes a promise callback nobody awaits. Those are expected
// after a panic and must not bring the whole server down.
function isTrap(reason: unknown): boolean {
  return reason instanceof WebAssembly.RuntimeError ||
    (reason instanceof Error &&
      reason.message.includes("previous WASM instance"));
}
globalThis.addEventListener("unhandledrejection", (event) => {
  if (isTrap(event.reason)) event.preventDefault();
});
globalThis.addEventListener("error", (event) => {
  if (isTrap(event.error)) event.preventDefault();
});

/**
 * What the core may ask of this host. Every method is plain I/O. The
 * contract is generated from the Rust side (src/wasm.rs): `deno check`
 * fails when this class stops matching it.
 */
class Host implements HostContract {
  constructor(private readonly fn: string) {}
  env(name: string): string | undefined {
    return Deno.env.get(name);
  }
  nowMs(): number {
    return Date.now();
  }
  log(level: "info" | "warn" | "error", message: string): void {
    log(level, this.fn, message);
  }
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }
  // BACKUP_DB_URL overrides SUPABASE_DB_URL (e.g. a direct URL where the
  // injected one is a transaction pooler); src/change_feed.rs reads the same.
  private dbUrl(): string | undefined {
    return this.env("BACKUP_DB_URL") || this.env("SUPABASE_DB_URL");
  }
  query(sql: string, params: (string | null)[]): Promise<unknown[]> {
    return query(this.dbUrl(), sql, params);
  }
  watch(dispatchId: string): Promise<number> {
    return watch(this.dbUrl(), dispatchId);
  }
  waitForChange(
    dispatchId: string,
    since: number,
    timeoutMs: number,
  ): Promise<boolean> {
    return waitForChange(dispatchId, since, timeoutMs);
  }
  // The core chose the key and the algorithms; WebCrypto does the arithmetic.
  async verifySignature(
    importAlgorithm: RsaHashedImportParams | EcKeyImportParams,
    verifyAlgorithm: AlgorithmIdentifier | EcdsaParams,
    jwk: JsonWebKey,
    signed: Uint8Array,
    signature: Uint8Array,
  ): Promise<boolean> {
    const key = await crypto.subtle.importKey(
      "jwk",
      jwk,
      importAlgorithm,
      false,
      ["verify"],
    );
    return crypto.subtle.verify(
      verifyAlgorithm,
      key,
      signature as BufferSource,
      signed as BufferSource,
    );
  }
}

/** Reads at most `limit` bytes of the body; more means "too large". */
async function readBody(req: Request, limit: number): Promise<Uint8Array> {
  if (!req.body) return new Uint8Array();
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  while (size <= limit) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.byteLength;
  }
  await reader.cancel().catch(() => {});
  const body = new Uint8Array(Math.min(size, limit + 1));
  let offset = 0;
  for (const chunk of chunks) {
    const part = chunk.subarray(0, body.byteLength - offset);
    body.set(part, offset);
    offset += part.byteLength;
    if (offset >= body.byteLength) break;
  }
  return body;
}

function internalError(): Response {
  return Response.json(
    { error: { code: "internal", message: "internal error" } },
    { status: 500, headers: { "cache-control": "no-store" } },
  );
}

function toResponse(r: CoreResponse): Response {
  const empty = r.status === 204 || r.status === 304 || r.body === "";
  return new Response(empty ? null : r.body, {
    status: r.status,
    headers: r.headers,
  });
}

/** Serves `req` as the function `name`. Never throws. */
export async function serve(name: string, req: Request): Promise<Response> {
  try {
    ready();
    let body: Uint8Array;
    try {
      body = await readBody(req, maxBodyBytes());
    } catch (error) {
      // Reading the body fails when the client goes away mid-request (or
      // sends a broken stream): nothing is wrong here, and no one will
      // read the answer.
      log("debug", name, `client disconnected: ${String(error).slice(0, 300)}`);
      return internalError();
    }
    const result = handle(
      name,
      { method: req.method, url: req.url, headers: [...req.headers], body },
      new Host(name),
    );
    return toResponse(await Promise.race([result, panicked]));
  } catch (error) {
    if (!poisoned) {
      log("error", name, `host error: ${String(error).slice(0, 300)}`);
    }
    return internalError();
  }
}

/** A `Deno.serve` handler for one function. */
export function serveFunction(
  name: string,
): (req: Request) => Promise<Response> {
  return (req) => serve(name, req);
}
