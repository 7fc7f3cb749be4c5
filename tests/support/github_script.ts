// A scripted stand-in for the GitHub REST API on 127.0.0.1: it records every
// request and answers from a queue of scripted responses (then from
// `fallback`). A raw TCP server rather than Deno.serve, so that a response
// can also be "no response at all": the connection is closed after the
// request is read, which `fetch` reports as a network error.

import type { Json } from "./stack.ts";

/** One scripted answer. */
export interface Scripted {
  status?: number;
  /** A string is sent as is; anything else as JSON. */
  body?: Json;
  headers?: Record<string, string>;
  /** Waits this long before answering (or before dropping the connection). */
  delayMs?: number;
  /** Closes the connection without an answer. */
  networkError?: boolean;
}

/** One request as received. */
export interface Recorded {
  method: string;
  path: string;
  /** Lower-cased names. */
  headers: Record<string, string>;
  body: string;
  /** Date.now() when it was read completely. */
  at: number;
}

export interface ScriptedGitHub {
  /** Base URL (GITHUB_API_URL). */
  url: string;
  requests: Recorded[];
  /** Appends answers to the queue. */
  script(...answers: Scripted[]): void;
  /** The answer once the queue is empty. */
  fallback: (req: Recorded) => Scripted;
  /** Empties the queue and the record; restores the default fallback. */
  reset(): void;
  close(): Promise<void>;
}

let runIds = 9_000_000;

/** 200 with run details, as GitHub answers `return_run_details: true`. */
export function runDetails(id = ++runIds): Scripted {
  return {
    status: 200,
    body: {
      workflow_run_id: id,
      run_url: `https://api.github.com/repos/acme/app/actions/runs/${id}`,
      html_url: `https://github.com/acme/app/actions/runs/${id}`,
    },
  };
}

const REASONS: Record<number, string> = {
  200: "OK",
  204: "No Content",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  422: "Unprocessable Entity",
  429: "Too Many Requests",
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
};

const enc = new TextEncoder();
const dec = new TextDecoder();

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return i;
  }
  return -1;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Reads one HTTP/1.1 request (Content-Length bodies only). */
async function readRequest(conn: Deno.Conn): Promise<Recorded | null> {
  let buf: Uint8Array = new Uint8Array();
  const chunk = new Uint8Array(16 * 1024);
  const sep = enc.encode("\r\n\r\n");
  let end = -1;
  while ((end = indexOf(buf, sep)) < 0) {
    const n = await conn.read(chunk);
    if (n === null) return null;
    buf = concat(buf, chunk.subarray(0, n));
  }
  const [requestLine, ...lines] = dec.decode(buf.subarray(0, end)).split(
    "\r\n",
  );
  const [method, path] = requestLine.split(" ");
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const i = line.indexOf(":");
    headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  const length = Number(headers["content-length"] ?? "0");
  let body: Uint8Array = buf.subarray(end + sep.length);
  while (body.length < length) {
    const n = await conn.read(chunk);
    if (n === null) return null;
    body = concat(body, chunk.subarray(0, n));
  }
  return { method, path, headers, body: dec.decode(body), at: Date.now() };
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/** Starts the stand-in on a free port. */
export function startScriptedGitHub(): ScriptedGitHub {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const queue: Scripted[] = [];
  const conns = new Set<Deno.Conn>();
  const handlers = new Set<Promise<void>>();
  const closing = new AbortController();
  const defaultFallback = () => runDetails();

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      if (closing.signal.aborted) return resolve();
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        closing.signal.removeEventListener("abort", done);
        resolve();
      }
      closing.signal.addEventListener("abort", done);
    });

  const gh: ScriptedGitHub = {
    url: `http://127.0.0.1:${port}`,
    requests: [],
    script: (...answers) => queue.push(...answers),
    fallback: defaultFallback,
    reset() {
      queue.length = 0;
      gh.requests.length = 0;
      gh.fallback = defaultFallback;
    },
    async close() {
      closing.abort();
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
      await accepting;
      await Promise.all(handlers);
    },
  };

  async function handle(conn: Deno.Conn): Promise<void> {
    try {
      const req = await readRequest(conn);
      if (!req) return;
      gh.requests.push(req);
      const answer = queue.shift() ?? gh.fallback(req);
      if (answer.delayMs) await sleep(answer.delayMs);
      if (answer.networkError || closing.signal.aborted) return;
      const status = answer.status ?? 200;
      const body = answer.body === undefined
        ? ""
        : typeof answer.body === "string"
        ? answer.body
        : JSON.stringify(answer.body);
      const bytes = enc.encode(body);
      const head = [
        `HTTP/1.1 ${status} ${REASONS[status] ?? "Status"}`,
        "connection: close",
        `content-length: ${bytes.length}`,
        ...(body && typeof answer.body !== "string"
          ? ["content-type: application/json; charset=utf-8"]
          : []),
        ...Object.entries(answer.headers ?? {}).map(([k, v]) => `${k}: ${v}`),
      ].join("\r\n") + "\r\n\r\n";
      await writeAll(conn, concat(enc.encode(head), bytes));
    } catch {
      // The peer went away, or close() closed the connection.
    } finally {
      conns.delete(conn);
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  }

  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        conns.add(conn);
        const h = handle(conn);
        handlers.add(h);
        h.finally(() => handlers.delete(h));
      }
    } catch {
      // The listener was closed.
    }
  })();

  return gh;
}
