// `deno task serve`: every function at /functions/v1/<name> on PORT (54321),
// as the Supabase CLI would route them, configured from the environment.
import { functionNames, serve } from "../supabase/functions/_shared/core.ts";

/** Functions served locally: the core's list (src/app.rs). */
export const FUNCTIONS: readonly string[] = functionNames();

/** The router, exported so tests and `deno task dev` can embed it. */
export function route(req: Request): Promise<Response> {
  const { pathname } = new URL(req.url);
  const match = /^\/functions\/v1\/([a-z0-9_-]+)\/?$/.exec(pathname);
  const name = match?.[1];
  if (name && FUNCTIONS.includes(name)) return serve(name, req);
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
