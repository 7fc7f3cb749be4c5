// The cold-start baseline of `deno task bench`: a pure-TypeScript function
// with no WebAssembly that imports the same database driver as the real
// functions (npm:postgres, whose loading is most of any such function's
// start), started the same way as scripts/serve.ts (deno run --allow-env
// --allow-net --allow-read, PORT from the environment), answering every
// request with the same shape of JSON 401 the core gives an unsigned report.

// deno-lint-ignore no-import-prefix
import postgres from "npm:postgres@3.4.9";

// Made, as the real host makes it, but not connected: no request needs it.
const sql = postgres(Deno.env.get("SUPABASE_DB_URL") ?? "", { max: 1 });

const port = Number(Deno.env.get("PORT") ?? "54321");

Deno.serve({
  port,
  hostname: "127.0.0.1",
  onListen: ({ hostname, port }) =>
    console.log(`minimal function at http://${hostname}:${port}/`),
}, async (req) => {
  await req.body?.cancel();
  if (req.headers.has("x-bench-query")) await sql`select 1`;
  return Response.json(
    {
      error: {
        code: "invalid_signature",
        message: "missing webhook-id, webhook-timestamp or webhook-signature",
      },
    },
    { status: 401, headers: { "cache-control": "no-store" } },
  );
});
