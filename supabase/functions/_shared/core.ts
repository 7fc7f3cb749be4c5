// Loads a function's Rust core (pkg/<function>/, WebAssembly) and serves
// requests through it.
//
// Loading: each function has its own module, the crate built with that
// function's endpoint alone (scripts/build_wasm.sh). Its bytes are embedded
// in a generated JS module (pkg/<function>/backup_core_wasm.js), so they are
// part of the function's import graph, which is exactly what `supabase
// functions deploy` ships (with Docker, with --use-api, and from Branching
// alike). The function's index.ts compiles and instantiates it at module top
// level: that work happens while the isolate starts, not inside the first
// request, and no file is read at run time (the edge runtime deprecates sync
// file reads in requests).
//
// Panics: a Rust panic leaves the instance unusable. The core's panic hook
// calls back here before the instance traps; every request still in flight on
// that instance is answered 500 at once (its promise would otherwise never
// settle), and the next request re-instantiates the module first.

import type * as Generated from "../../../pkg/finalize-backup/backup_core.js";
import type {
  CoreResponse,
  Host as HostContract,
} from "../../../pkg/finalize-backup/backup_core.js";
import { query, waitForChange, watch } from "./db.ts";

/**
 * A function's generated module (pkg/<function>/backup_core.js). Every
 * function's module has this shape; the type is read from one of them
 * (a type-only import, which no function ships), and `deno check` compares
 * each function's own module with it where index.ts passes it in.
 */
export type CoreModule = typeof Generated;

/** One function's core: its WebAssembly instance, renewed after a panic. */
export class Core {
  /** The function this module was built for. */
  readonly name: string;
  // Both fixed for the instance's life: read once, not on every request.
  readonly #host: Host;
  readonly #maxBodyBytes: number;
  #poisoned = false;
  // The requests in flight, each by the function that fails its answer: a
  // panic fails them all at once. Each request adds itself and removes
  // itself when answered, so nothing outlives its request. (Racing every
  // request against one promise that settles only on a panic would not do:
  // each race leaves a reaction on that promise, holding the request's
  // answer for the instance's life, about 0.8 KB a request.)
  readonly #inFlight = new Set<(reason: Error) => void>();

  /** Instantiates `module` (compiled from the function's embedded bytes). */
  constructor(
    private readonly generated: CoreModule,
    module: WebAssembly.Module,
  ) {
    generated.initSync({ module });
    const served = generated.servedFunctions();
    if (served.length !== 1) {
      throw new Error(
        `a function's core serves one function, this one ${
          JSON.stringify(served)
        }: rebuild pkg/ with scripts/build_wasm.sh`,
      );
    }
    this.name = served[0];
    this.#host = new Host(this.name);
    this.#maxBodyBytes = generated.maxBodyBytes();
    this.#arm();
  }

  #arm(): void {
    this.generated.installPanicHook((message: string) => {
      this.#poisoned = true;
      log("error", this.name, `panic: ${message}`);
      const failed = new Error("the core panicked");
      for (const fail of this.#inFlight) fail(failed);
    });
  }

  /** `result`, or a rejection as soon as the instance panics. */
  async #answer(result: Promise<CoreResponse>): Promise<CoreResponse> {
    let fail!: (reason: Error) => void;
    const answer = new Promise<CoreResponse>((resolve, reject) => {
      fail = reject;
      result.then(resolve, reject);
    });
    this.#inFlight.add(fail);
    try {
      return await answer;
    } finally {
      this.#inFlight.delete(fail);
    }
  }

  /** Re-instantiates the core if the last instance panicked. */
  #ready(): void {
    if (this.#poisoned) {
      this.generated.__wbg_reset_state();
      this.#poisoned = false;
      this.#arm();
      log(
        "warn",
        this.name,
        "re-instantiated the WebAssembly core after a panic",
      );
    }
  }

  /** Every function's name (the core's one list, src/app.rs). */
  functionNames(): string[] {
    return this.generated.functionNames();
  }

  /** Serves `req`. Never throws. */
  async serve(req: Request): Promise<Response> {
    const name = this.name;
    try {
      this.#ready();
      let body: Uint8Array;
      try {
        body = await readBody(req, this.#maxBodyBytes);
      } catch (error) {
        // Reading the body fails when the client goes away mid-request (or
        // sends a broken stream): nothing is wrong here, and no one will
        // read the answer.
        log(
          "debug",
          name,
          `client disconnected: ${String(error).slice(0, 300)}`,
        );
        return internalError();
      }
      const result = this.generated.handle(
        name,
        req.method,
        req.url,
        joined(req.headers),
        body,
        this.#host,
      );
      return toResponse(await this.#answer(result));
    } catch (error) {
      if (!this.#poisoned) {
        log("error", name, `host error: ${String(error).slice(0, 300)}`);
      }
      return internalError();
    }
  }
}

/**
 * A function's `Deno.serve` handler: its core, instantiated once `module`
 * (compiling in the background since the bytes were imported) is ready.
 * index.ts awaits it at top level, so this happens at isolate start.
 */
export async function serveFunction(
  generated: CoreModule,
  module: Promise<WebAssembly.Module>,
): Promise<(req: Request) => Promise<Response>> {
  const core = new Core(generated, await module);
  return (req) => core.serve(req);
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
 * contract is generated from the Rust side (src/ports/wasm.rs): `deno check`
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
  query(
    databaseUrl: string,
    prepare: boolean,
    sql: string,
    params: (string | null)[],
  ): Promise<unknown[]> {
    return query(databaseUrl, prepare, sql, params);
  }
  watch(databaseUrl: string, dispatchId: string): Promise<number> {
    return watch(databaseUrl, dispatchId);
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

/**
 * The headers as the core reads them (src/http.rs, host_headers): one
 * string, every name and every value followed by a NUL, in the order
 * iterating them gives (names lower-case, sorted, repeats combined). A value
 * cannot hold a NUL: Headers refuses one. forEach, because the spread form
 * costs ten times as much in Deno (10 µs a request against 1).
 */
function joined(headers: Headers): string {
  let out = "";
  headers.forEach((value, name) => {
    out += name + "\0" + value + "\0";
  });
  return out;
}

/** Reads at most `limit` bytes of the body; more means "too large". */
async function readBody(req: Request, limit: number): Promise<Uint8Array> {
  // A declared length within the limit is read whole (the server holds the
  // body to it); otherwise the stream is read up to one byte past the limit.
  // `req.body` is touched only then: asking for it makes Deno build a
  // ReadableStream, which arrayBuffer() would then drain (about 7 µs a
  // request, against taking the whole body at once).
  const declared = Number(req.headers.get("content-length") ?? NaN);
  if (Number.isInteger(declared) && declared >= 0 && declared <= limit) {
    return new Uint8Array(await req.arrayBuffer());
  }
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
