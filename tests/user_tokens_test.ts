// User access tokens signed with asymmetric keys (ES256, RS256), as Supabase
// projects with JWT signing keys issue them, verified end to end: the core
// picks the key from the JWKS and checks the claims, the host's WebCrypto
// checks the signature. Keys and tokens are made here with WebCrypto, so the
// core is checked against the JWS format rather than against itself.

import assert from "node:assert/strict";
import { asymmetricUserToken, b64url, signingKey } from "../scripts/signing.ts";
import { freshDatabase } from "./support/db.ts";
import {
  ADMIN_ID,
  type Json,
  NON_ADMIN_ID,
  startStack,
} from "./support/stack.ts";

/** GET the history with a token: 200 for an admin, 401/403 otherwise. */
async function history(
  url: string,
  token: string,
): Promise<{ status: number; body: Json }> {
  const r = await fetch(`${url}/functions/v1/backup-status?limit=1`, {
    headers: { authorization: `Bearer ${token}` },
  });
  return { status: r.status, body: await r.json() };
}

/** A loopback Supabase Auth JWKS endpoint that counts its requests. */
function jwksServer(keys: () => JsonWebKey[] | null) {
  let hits = 0;
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, (req) => {
    hits++;
    const found =
      new URL(req.url).pathname === "/auth/v1/.well-known/jwks.json" && keys();
    return found
      ? Response.json({ keys: found })
      : new Response("unavailable", { status: 503 });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    hits: () => hits,
    close: () => server.shutdown(),
  };
}

Deno.test("user tokens signed with the project's asymmetric keys", async (t) => {
  const db = await freshDatabase();
  await db.sql`insert into backup_admins (user_id) values (${ADMIN_ID})`;
  const es = await signingKey("ES256", "es-1");
  const rs = await signingKey("RS256", "rs-1");
  const stranger = await signingKey("ES256", "es-1"); // same kid, another key
  const inline = await startStack({
    databaseUrl: db.url,
    env: {
      SUPABASE_JWKS: JSON.stringify({ keys: [es.jwk, rs.jwk] }),
      BACKUP_JWT_SECRET: null,
    },
  });
  let published: JsonWebKey[] | null = [es.jwk];
  const auth = jwksServer(() => published);
  const fetched = await startStack({
    databaseUrl: db.url,
    env: { SUPABASE_URL: auth.url, BACKUP_JWT_SECRET: null },
  });
  try {
    await t.step(
      "an ES256 and an RS256 token from SUPABASE_JWKS are accepted",
      async () => {
        for (const key of [es, rs]) {
          const r = await history(
            inline.url,
            await asymmetricUserToken(key, ADMIN_ID),
          );
          assert.equal(r.status, 200, `${key.alg}: ${JSON.stringify(r.body)}`);
          assert.deepEqual(r.body.runs, []);
        }
      },
    );

    await t.step(
      "a valid asymmetric token of a user who is not an admin gets 403",
      async () => {
        const r = await history(
          inline.url,
          await asymmetricUserToken(es, NON_ADMIN_ID),
        );
        assert.equal(r.status, 403);
        assert.equal(r.body.error.code, "not_admin");
      },
    );

    await t.step(
      "a tampered, foreign, expired or unknown-kid token gets 401",
      async () => {
        const good = await asymmetricUserToken(es, ADMIN_ID);
        const [h, , s] = good.split(".");
        const forged = `${h}.${
          b64url(
            JSON.stringify({
              sub: ADMIN_ID,
              role: "authenticated",
              exp: 4102444800,
            }),
          )
        }.${s}`;
        const cases: [string, string][] = [
          ["tampered claims", forged],
          [
            "another key with the same kid",
            await asymmetricUserToken(stranger, ADMIN_ID),
          ],
          [
            "expired",
            await asymmetricUserToken(es, ADMIN_ID, {
              exp: Math.floor(Date.now() / 1000) - 120,
            }),
          ],
          ["unknown kid", await asymmetricUserToken(es, ADMIN_ID, {}, "es-2")],
          [
            "RS256 header over an ES256 key",
            (await asymmetricUserToken(rs, ADMIN_ID)).replace(
              /^[^.]+/,
              b64url(JSON.stringify({ alg: "RS256", kid: "es-1" })),
            ),
          ],
        ];
        for (const [what, token] of cases) {
          const r = await history(inline.url, token);
          assert.equal(r.status, 401, what);
          assert.deepEqual(r.body, {
            error: {
              code: "invalid_token",
              message: "the access token is invalid or expired",
            },
          }, what);
        }
      },
    );

    await t.step(
      "an HS256 token is refused when only the JWKS is configured",
      async () => {
        const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
        const payload = b64url(
          JSON.stringify({
            sub: ADMIN_ID,
            role: "authenticated",
            exp: 4102444800,
          }),
        );
        const r = await history(
          inline.url,
          `${header}.${payload}.${b64url("x".repeat(32))}`,
        );
        assert.equal(r.status, 401);
      },
    );

    await t.step(
      "without SUPABASE_JWKS the key set is fetched from SUPABASE_URL once and cached",
      async () => {
        const token = await asymmetricUserToken(es, ADMIN_ID);
        for (let i = 0; i < 3; i++) {
          assert.equal((await history(fetched.url, token)).status, 200);
        }
        assert.equal(
          auth.hits(),
          1,
          "one JWKS request for three verifications",
        );
      },
    );

    await t.step(
      "an unreachable JWKS endpoint is a 502, not a 500, and not an accepted token",
      async () => {
        published = null;
        const cold = await startStack({
          databaseUrl: db.url,
          env: { SUPABASE_URL: auth.url, BACKUP_JWT_SECRET: null },
        });
        try {
          const r = await history(
            cold.url,
            await asymmetricUserToken(es, ADMIN_ID),
          );
          assert.equal(r.status, 502);
          assert.equal(r.body.error.code, "upstream_unavailable");
        } finally {
          await cold.close();
        }
      },
    );
  } finally {
    await inline.close();
    await fetched.close();
    await auth.close();
    await db.close();
  }
});
