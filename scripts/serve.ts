// `deno task serve`: every function at /functions/v1/<name> on PORT (54321),
// as the Supabase CLI would route them, configured from the environment.
// Each function runs its own core (pkg/<function>/), as deployed.
import { Core, type CoreModule } from "../supabase/functions/_shared/core.ts";

const PKG = new URL("../pkg/", import.meta.url);

/** Every function's core, loaded from the modules under pkg/. */
async function loadCores(): Promise<Map<string, Core>> {
  const cores = new Map<string, Core>();
  const dirs = [...Deno.readDirSync(PKG)].filter((e) => e.isDirectory)
    .map((e) => e.name).sort();
  for (const dir of dirs) {
    const { wasmModule } = await import(
      new URL(`${dir}/backup_core_wasm.js`, PKG).href
    );
    const generated: CoreModule = await import(
      new URL(`${dir}/backup_core.js`, PKG).href
    );
    const core = new Core(generated, await wasmModule);
    cores.set(core.name, core);
  }
  const [any] = cores.values();
  const missing = any
    ? any.functionNames().filter((n) => !cores.has(n))
    : ["every function"];
  if (missing.length) {
    throw new Error(
      `pkg/ has no core for ${missing.join(", ")}: run scripts/build_wasm.sh`,
    );
  }
  return cores;
}

const cores = await loadCores();

/** Functions served locally: the core's list (src/app.rs), in its order. */
export const FUNCTIONS: readonly string[] = [...cores.values()][0]
  .functionNames();

/** The router, exported so tests and `deno task dev` can embed it. */
export function route(req: Request): Promise<Response> {
  const { pathname } = new URL(req.url);
  const match = /^\/functions\/v1\/([a-z0-9_-]+)\/?$/.exec(pathname);
  const core = match ? cores.get(match[1]) : undefined;
  if (core) return core.serve(req);
  return Promise.resolve(
    Response.json(
      { error: { code: "not_found", message: "no such endpoint" } },
      { status: 404 },
    ),
  );
}

if (import.meta.main) {
  const port = Number(Deno.env.get("PORT") ?? "54321");
  const hostname = Deno.env.get("HOST") ?? "127.0.0.1";
  Deno.serve({
    port,
    hostname,
    onListen: ({ hostname, port }) =>
      console.log(
        `functions at http://${hostname}:${port}/functions/v1/{${
          FUNCTIONS.join(",")
        }}`,
      ),
  }, route);
}
