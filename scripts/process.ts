// Small process and network helpers shared by `deno task dev`, the
// benchmark and the tests.

import { fileURLToPath } from "node:url";

// A path, not a URL's: a clone under a directory with a space in its
// name must not become "%20".
const ROOT = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");

/** A free TCP port on 127.0.0.1. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/**
 * Runs `cmd args` from the repository root (with `env` added to this
 * process's environment) and resolves to its trimmed stdout; rejects with
 * its stderr when it fails.
 */
export async function run(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed:\n${
        new TextDecoder().decode(out.stderr)
      }`,
    );
  }
  return new TextDecoder().decode(out.stdout).trim();
}

/** A server process started by {@link spawnServer}. */
export interface Served {
  /** Everything it printed so far (stdout and stderr). */
  output(): string;
  /** SIGTERM, then waits for it and its output to end. */
  stop(): Promise<void>;
}

/**
 * Spawns `command` (stdout and stderr piped), collects its output, and
 * resolves once `probe` gets any HTTP answer; after 20 s it kills the
 * process and rejects with what it printed, naming it `what`.
 */
export async function spawnServer(
  command: Deno.Command,
  probe: string | URL,
  what: string,
  init: RequestInit = {},
): Promise<Served> {
  const child = command.spawn();
  let output = "";
  const decoder = new TextDecoder();
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) output += decoder.decode(chunk);
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  const deadline = Date.now() + 20_000;
  while (true) {
    try {
      const r = await fetch(probe, init);
      await r.body?.cancel();
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        await pumps;
        throw new Error(`${what} did not start:\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    output: () => output,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await child.status;
      await pumps;
    },
  };
}
