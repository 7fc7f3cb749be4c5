// The functions configured as hosted Supabase configures them: no JWT
// secret, but SUPABASE_URL, SUPABASE_JWKS and the API keys of both
// generations. Supabase Auth (`/auth/v1/user` and the published JWKS) is a
// loopback stand-in here that counts its calls; everything else is real.
//
// - HS256 tokens of projects still on the legacy JWT secret are confirmed
//   by Auth, and Auth's yes is remembered (briefly) per token.
// - The Supabase CLI passes the legacy secret as a `kty: "oct"` key of
//   SUPABASE_JWKS: such tokens are verified without asking anyone.
// - A token under a `kid` the injected set lacks (a rotated key) is checked
//   against the published set, fetched again at most once a minute.
// - reconcile-backups takes an `sb_secret_…` key in `apikey` or as a bearer.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { asymmetricUserToken, b64url, signingKey } from "../scripts/signing.ts";
import { freshDatabase } from "./support/db.ts";
import {
  ADMIN_ID,
  freePort,
  type Json,
  NON_ADMIN_ID,
  type Stack,
  startStack,
  TEST_JWT_SECRET,
  userToken,
} from "./support/stack.ts";

const PUBLISHABLE_KEY = "sb_publishable_supabase-auth-test_0123456789";
const SECRET_KEY = "sb_secret_supabase-auth-test_0123456789abcdef";
const CRON_SECRET_KEY = "sb_secret_supabase-auth-test_cron_9876543210";

/** What the stand-in for Supabase Auth answers to `GET /auth/v1/user`. */
type UserMode = "ok" | "refuse" | "down";

/** A loopback Supabase Auth: `/auth/v1/user` answers for the token's `sub`
 * (decoded, not verified: that is Auth's job and not under test), and
 * `/auth/v1/.well-known/jwks.json` publishes `published`. */
function supabaseAuth(published: () => JsonWebKey[]) {
  const calls = { user: 0, jwks: 0 };
  const seen: { authorization?: string | null; apikey?: string | null } = {};
  let mode: UserMode = "ok";
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/auth/v1/.well-known/jwks.json") {
      calls.jwks++;
      return Response.json({ keys: published() });
    }
    if (path !== "/auth/v1/user" || req.method !== "GET") {
      return new Response("not found", { status: 404 });
    }
    calls.user++;
    seen.authorization = req.headers.get("authorization");
    seen.apikey = req.headers.get("apikey");
    if (mode === "down") {
      return new Response("upstream connect error", { status: 503 });
    }
    if (mode === "refuse") {
      return Response.json({
        code: 403,
        error_code: "session_not_found",
        msg: "Session from session_id claim in JWT does not exist",
      }, { status: 403 });
    }
    const token = (seen.authorization ?? "").replace(/^Bearer /, "");
    const claims = JSON.parse(
      Buffer.from(token.split(".")[1] ?? "", "base64url").toString() || "{}",
    );
    return Response.json({
      id: claims.sub,
      aud: "authenticated",
      role: "authenticated",
    });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    calls,
    seen,
    setMode: (m: UserMode) => {
      mode = m;
    },
    close: () => server.shutdown(),
  };
}

/** GET the history with a token: 200 for an admin, 401/403 otherwise. */
async function history(
  stack: Stack,
  token: string,
): Promise<{ status: number; body: Json }> {
  const r = await fetch(stack.fn("backup-status") + "?limit=1", {
    headers: { authorization: `Bearer ${token}` },
  });
  return { status: r.status, body: await r.json() };
}

async function sweep(
  stack: Stack,
  headers: Record<string, string>,
): Promise<{ status: number; body: Json }> {
  const r = await fetch(stack.fn("reconcile-backups"), {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: "{}",
  });
  return { status: r.status, body: await r.json() };
}

const INVALID_TOKEN = {
  error: {
    code: "invalid_token",
    message: "the access token is invalid or expired",
  },
};

Deno.test("user tokens and service keys as hosted Supabase provides them", async (t) => {
  const db = await freshDatabase();
  await db.sql`insert into backup_admins (user_id) values (${ADMIN_ID})`;
  const injected = await signingKey("ES256", "es-injected");
  const rotated = await signingKey("ES256", "es-rotated");
  const auth = supabaseAuth(() => [injected.jwk, rotated.jwk]);
  // The secret keys, legacy or not, of a hosted project; no JWT secret.
  const hosted = await startStack({
    databaseUrl: db.url,
    env: {
      BACKUP_JWT_SECRET: null,
      SUPABASE_URL: auth.url,
      SUPABASE_JWKS: JSON.stringify({ keys: [injected.jwk] }),
      SUPABASE_PUBLISHABLE_KEYS: JSON.stringify({ default: PUBLISHABLE_KEY }),
      SUPABASE_ANON_KEY: "eyJ-legacy-anon-key",
      SUPABASE_SECRET_KEYS: JSON.stringify({
        default: SECRET_KEY,
        cron: CRON_SECRET_KEY,
      }),
    },
  });
  // What `supabase functions serve` injects: the legacy secret as an oct key
  // without a kid (supabase/cli, pkg/config/config.go, ResolveJWKS).
  const local = await startStack({
    databaseUrl: db.url,
    env: {
      BACKUP_JWT_SECRET: null,
      SUPABASE_URL: auth.url,
      SUPABASE_JWKS: JSON.stringify({
        keys: [{ kty: "oct", k: b64url(TEST_JWT_SECRET) }],
      }),
      SUPABASE_ANON_KEY: "eyJ-legacy-anon-key",
    },
  });
  const tokens: string[] = [];
  const made = (token: string) => {
    tokens.push(token);
    return token;
  };
  try {
    await t.step(
      "an HS256 token is accepted as an admin's when Supabase Auth answers for its sub",
      async () => {
        const token = made(await userToken(ADMIN_ID, {}, TEST_JWT_SECRET));
        const r = await history(hosted, token);
        assert.equal(r.status, 200, JSON.stringify(r.body));
        assert.deepEqual(r.body, {
          runs: [],
          next_cursor: null,
          sweeper: { last_run_at: null, healthy: false, problem: null },
          notifications: [],
        });
        assert.equal(auth.calls.user, 1);
        assert.equal(auth.seen.authorization, `Bearer ${token}`);
        assert.equal(auth.seen.apikey, PUBLISHABLE_KEY);
        assert.equal(auth.calls.jwks, 0, "an HS256 token never fetches keys");
      },
    );

    await t.step(
      "a second request within 60 s is served from memory: Auth sees one call",
      async () => {
        const token = tokens[0];
        for (let i = 0; i < 3; i++) {
          assert.equal((await history(hosted, token)).status, 200);
        }
        assert.equal(auth.calls.user, 1);
      },
    );

    await t.step(
      "an HS256 token of a user Auth vouches for who is not an admin gets 403",
      async () => {
        const r = await history(
          hosted,
          made(await userToken(NON_ADMIN_ID, {}, TEST_JWT_SECRET)),
        );
        assert.equal(r.status, 403);
        assert.equal(r.body.error.code, "not_admin");
        assert.equal(auth.calls.user, 2);
      },
    );

    await t.step(
      "an HS256 token Auth refuses gets 401 invalid_token",
      async () => {
        auth.setMode("refuse");
        const token = made(
          await userToken(ADMIN_ID, { session_id: "gone" }, TEST_JWT_SECRET),
        );
        for (let i = 0; i < 2; i++) {
          const r = await history(hosted, token);
          assert.equal(r.status, 401);
          assert.deepEqual(r.body, INVALID_TOKEN);
        }
        assert.equal(auth.calls.user, 4, "a refusal is not remembered");
      },
    );

    await t.step(
      "Auth down is a 502 upstream_unavailable, never an accepted token",
      async () => {
        auth.setMode("down");
        const r = await history(
          hosted,
          made(await userToken(ADMIN_ID, { n: 1 }, TEST_JWT_SECRET)),
        );
        assert.equal(r.status, 502);
        assert.deepEqual(r.body, {
          error: {
            code: "upstream_unavailable",
            message: "an upstream service is unavailable",
          },
        });
        assert.equal(auth.calls.user, 5);
        auth.setMode("ok");
      },
    );

    await t.step(
      "an expired or anon HS256 token is refused without asking Auth",
      async () => {
        const before = auth.calls.user;
        for (
          const token of [
            await userToken(ADMIN_ID, {
              exp: Math.floor(Date.now() / 1000) - 120,
            }, TEST_JWT_SECRET),
            await userToken(ADMIN_ID, { role: "anon" }, TEST_JWT_SECRET),
          ]
        ) {
          const r = await history(hosted, made(token));
          assert.equal(r.status, 401);
          assert.deepEqual(r.body, INVALID_TOKEN);
        }
        assert.equal(auth.calls.user, before);
      },
    );

    await t.step(
      "with the CLI's oct key an HS256 token is verified without Auth, and a forged one refused",
      async () => {
        const before = { ...auth.calls };
        for (const header of [{}, { kid: "any-kid" }]) {
          const r = await history(
            local,
            made(await userToken(ADMIN_ID, {}, TEST_JWT_SECRET, header)),
          );
          assert.equal(r.status, 200, JSON.stringify(r.body));
        }
        const forged = await history(
          local,
          made(
            await userToken(
              ADMIN_ID,
              {},
              "not-the-project-secret-0123456789ab",
            ),
          ),
        );
        assert.equal(forged.status, 401);
        assert.deepEqual(forged.body, INVALID_TOKEN);
        assert.deepEqual(auth.calls, before, "no call to Auth at all");
      },
    );

    await t.step(
      "a token under a kid only the published JWKS has is accepted; the JWKS is asked at most once a minute",
      async () => {
        assert.equal(auth.calls.jwks, 0);
        const ok = await history(
          hosted,
          made(await asymmetricUserToken(rotated, ADMIN_ID)),
        );
        assert.equal(ok.status, 200, JSON.stringify(ok.body));
        assert.equal(auth.calls.jwks, 1);
        // Known now: no further fetch.
        const again = await history(
          hosted,
          made(await asymmetricUserToken(rotated, ADMIN_ID, { n: 2 })),
        );
        assert.equal(again.status, 200);
        // A kid nobody publishes: refused, and no second fetch this minute.
        for (let i = 0; i < 3; i++) {
          const r = await history(
            hosted,
            made(await asymmetricUserToken(rotated, ADMIN_ID, {}, `gone-${i}`)),
          );
          assert.equal(r.status, 401);
          assert.deepEqual(r.body, INVALID_TOKEN);
        }
        assert.equal(auth.calls.jwks, 1);
        // The injected key never needed the endpoint.
        const inline = await history(
          hosted,
          made(await asymmetricUserToken(injected, ADMIN_ID)),
        );
        assert.equal(inline.status, 200);
        assert.equal(auth.calls.jwks, 1);
      },
    );

    await t.step(
      "reconcile-backups takes an sb_secret key in apikey or as a bearer token",
      async () => {
        for (
          const headers of <Record<string, string>[]> [
            { apikey: SECRET_KEY },
            { authorization: `Bearer ${SECRET_KEY}` },
            {
              apikey: CRON_SECRET_KEY,
              authorization: `Bearer ${CRON_SECRET_KEY}`,
            },
            { apikey: PUBLISHABLE_KEY, authorization: `Bearer ${SECRET_KEY}` },
          ]
        ) {
          const r = await sweep(hosted, headers);
          assert.equal(r.status, 200, JSON.stringify([headers, r.body]));
          assert.deepEqual(r.body, {
            checked: 0,
            changed: [],
            github: "skipped",
          });
        }
      },
    );

    await t.step(
      "reconcile-backups refuses a wrong key with 401 and no key with missing_token",
      async () => {
        for (
          const headers of <Record<string, string>[]> [
            { apikey: SECRET_KEY.slice(0, -1) },
            { authorization: `Bearer ${SECRET_KEY}x` },
            { apikey: PUBLISHABLE_KEY },
            { authorization: `Bearer ${tokens[0]}` },
          ]
        ) {
          const r = await sweep(hosted, headers);
          assert.equal(r.status, 401, JSON.stringify(headers));
          assert.deepEqual(r.body, INVALID_TOKEN);
        }
        const none = await sweep(hosted, {});
        assert.equal(none.status, 401);
        assert.equal(none.body.error.code, "missing_token");
      },
    );

    await t.step(
      "no token, key or API key reaches the server log",
      () => {
        for (const stack of [hosted, local]) {
          const log = stack.output();
          for (
            const secret of [
              ...tokens,
              SECRET_KEY,
              CRON_SECRET_KEY,
              PUBLISHABLE_KEY,
              TEST_JWT_SECRET,
            ]
          ) {
            assert.ok(!log.includes(secret), `the log shows ${secret}`);
          }
        }
      },
    );
  } finally {
    await hosted.close();
    await local.close();
    await auth.close();
    await db.close();
  }
});

Deno.test("an HS256 token while Supabase Auth is unreachable is a 502 upstream_unavailable", async () => {
  const db = await freshDatabase();
  await db.sql`insert into backup_admins (user_id) values (${ADMIN_ID})`;
  const stack = await startStack({
    databaseUrl: db.url,
    env: {
      BACKUP_JWT_SECRET: null,
      // Nothing listens there: the connection is refused.
      SUPABASE_URL: `http://127.0.0.1:${freePort()}`,
      SUPABASE_PUBLISHABLE_KEYS: JSON.stringify({ default: PUBLISHABLE_KEY }),
    },
  });
  try {
    const r = await history(
      stack,
      await userToken(ADMIN_ID, {}, TEST_JWT_SECRET),
    );
    assert.equal(r.status, 502);
    assert.equal(r.body.error.code, "upstream_unavailable");
  } finally {
    await stack.close();
    await db.close();
  }
});

Deno.test("with no key source at all, a user token gets 500 config_missing naming BACKUP_JWT_SECRET", async () => {
  const db = await freshDatabase();
  const stack = await startStack({
    databaseUrl: db.url,
    env: { BACKUP_JWT_SECRET: null },
  });
  try {
    const r = await history(
      stack,
      await userToken(ADMIN_ID, {}, TEST_JWT_SECRET),
    );
    assert.equal(r.status, 500);
    assert.equal(r.body.error.code, "config_missing");
    assert.equal(
      r.body.error.message,
      "server misconfigured: BACKUP_JWT_SECRET is not set, and neither SUPABASE_JWKS nor SUPABASE_URL is available to check access tokens with",
    );
  } finally {
    await stack.close();
    await db.close();
  }
});
