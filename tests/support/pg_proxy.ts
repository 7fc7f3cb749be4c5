// A loopback proxy in front of the real PostgreSQL that refuses LISTEN, the
// way a pooler or proxy that cannot hold a session does: everything else
// reaches the server unchanged, and a LISTEN (simple or extended protocol) is
// answered with an error (0A000) instead of being forwarded. It lets the
// tests prove that a long-poll still answers when LISTEN cannot be
// established, against a database that otherwise works.

export interface ListenRefusingProxy {
  /** `databaseUrl` with its host and port replaced by the proxy's. */
  url: string;
  /** How many LISTEN statements were refused so far. */
  refused(): number;
  close(): Promise<void>;
}

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function int32(bytes: Uint8Array, at: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset + at, 4).getInt32(0);
}

function message(type: string, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + body.length);
  out[0] = type.charCodeAt(0);
  new DataView(out.buffer).setInt32(1, 4 + body.length);
  out.set(body, 5);
  return out;
}

/** ErrorResponse then ReadyForQuery (idle): what a refused statement gets. */
function refusal(): Uint8Array {
  const fields = "SERROR\0VERROR\0C0A000\0MLISTEN is not supported here\0\0";
  const error = message("E", encoder.encode(fields));
  const ready = message("Z", encoder.encode("I"));
  const out = new Uint8Array(error.length + ready.length);
  out.set(error);
  out.set(ready, error.length);
  return out;
}

/** The SQL of a Query ('Q') or Parse ('P') message. */
function statement(type: string, body: Uint8Array): string {
  let start = 0;
  if (type === "P") start = body.indexOf(0) + 1; // skip the statement name
  const end = body.indexOf(0, start);
  return decoder.decode(body.subarray(start, end < 0 ? body.length : end));
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await conn.write(bytes.subarray(done));
}

/** Starts the proxy for the server of `databaseUrl`. */
export function startListenRefusingProxy(
  databaseUrl: string,
): ListenRefusingProxy {
  const target = new URL(databaseUrl);
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  let refused = 0;

  function shut(conn: Deno.Conn | undefined): void {
    if (!conn) return;
    open.delete(conn);
    try {
      conn.close();
    } catch { /* already closed */ }
  }

  async function relay(client: Deno.Conn): Promise<void> {
    let upstream: Deno.Conn | undefined;
    try {
      upstream = await Deno.connect({
        hostname: target.hostname,
        port: Number(target.port || 5432),
      });
      open.add(upstream);
      const db = upstream;
      // Server to client: unchanged. (A refusal is only written while the
      // server is idle: the client sends LISTEN after ReadyForQuery.)
      const down = (async () => {
        const buf = new Uint8Array(65536);
        for (;;) {
          const n = await db.read(buf);
          if (n === null) break;
          await writeAll(client, buf.subarray(0, n));
        }
      })().catch(() => {}).finally(() => shut(client));
      await up(client, db);
      await down;
    } finally {
      shut(client);
      shut(upstream);
    }
  }

  // Client to server, message by message, minus the LISTENs.
  async function up(client: Deno.Conn, upstream: Deno.Conn): Promise<void> {
    let pending = new Uint8Array(0);
    let started = false;
    let swallowing = false;
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await client.read(buf).catch(() => null);
      if (n === null) return;
      const joined = new Uint8Array(pending.length + n);
      joined.set(pending);
      joined.set(buf.subarray(0, n), pending.length);
      pending = joined;
      const forward: Uint8Array[] = [];
      for (;;) {
        if (!started) {
          // The startup packet has no type byte.
          if (pending.length < 8) break;
          const length = int32(pending, 0);
          if (pending.length < length) break;
          const code = int32(pending, 4);
          if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
            await writeAll(client, encoder.encode("N"));
          } else {
            forward.push(pending.slice(0, length));
            started = true;
          }
          pending = pending.slice(length);
          continue;
        }
        if (pending.length < 5) break;
        const total = 1 + int32(pending, 1);
        if (pending.length < total) break;
        const type = String.fromCharCode(pending[0]);
        const msg = pending.slice(0, total);
        pending = pending.slice(total);
        if (swallowing) {
          // The rest of the refused extended-protocol batch, up to Sync.
          if (type === "S") {
            swallowing = false;
            await writeAll(client, refusal());
          }
          continue;
        }
        if (
          (type === "Q" || type === "P") &&
          /^\s*listen\b/i.test(statement(type, msg.subarray(5)))
        ) {
          refused++;
          if (type === "Q") await writeAll(client, refusal());
          else swallowing = true;
          continue;
        }
        forward.push(msg);
      }
      for (const m of forward) await writeAll(upstream, m);
    }
  }

  const accepting = (async () => {
    for await (const client of server) {
      open.add(client);
      relay(client).catch(() => {});
    }
  })().catch(() => {});

  const proxied = new URL(databaseUrl);
  proxied.hostname = "127.0.0.1";
  proxied.port = String((server.addr as Deno.NetAddr).port);
  return {
    url: proxied.toString(),
    refused: () => refused,
    async close() {
      server.close();
      for (const c of [...open]) shut(c);
      await accepting;
    },
  };
}
