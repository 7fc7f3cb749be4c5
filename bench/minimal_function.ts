// The cold-start baseline of `deno task bench`: a function with no
// WebAssembly and no imports, started the same way as scripts/serve.ts
// (deno run --allow-env --allow-net --allow-read, PORT from the
// environment), answering every request with the same shape of JSON 401 the
// core gives an unsigned report.

const port = Number(Deno.env.get("PORT") ?? "54321");

Deno.serve({
  port,
  hostname: "127.0.0.1",
  onListen: ({ hostname, port }) =>
    console.log(`minimal function at http://${hostname}:${port}/`),
}, async (req) => {
  await req.body?.cancel();
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
