// Independent TypeScript implementations of the two credential formats the
// functions accept: Supabase user access tokens (HS256) and Standard
// Webhooks signatures. The tests use them to check the Rust core against the
// specifications rather than against itself; `deno task dev` uses them to
// print ready-to-paste curl commands.

import { Buffer } from "node:buffer";

/** base64url without padding, as JWTs use it. */
export function b64url(bytes: Uint8Array | string): string {
  return Buffer.from(bytes).toString("base64url");
}

async function hmac(key: Uint8Array, data: string): Promise<Uint8Array> {
  const k = await crypto.subtle.importKey(
    "raw",
    key as BufferSource,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  return new Uint8Array(
    await crypto.subtle.sign("HMAC", k, new TextEncoder().encode(data)),
  );
}

/** An HS256 access token as Supabase Auth issues for a signed-in user. */
export async function userToken(
  sub: string,
  overrides: Record<string, unknown> = {},
  secret: string,
): Promise<string> {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const claims = {
    sub,
    role: "authenticated",
    aud: "authenticated",
    exp: Math.floor(Date.now() / 1000) + 3600,
    ...overrides,
  };
  const input = `${header}.${b64url(JSON.stringify(claims))}`;
  const sig = await hmac(new TextEncoder().encode(secret), input);
  return `${input}.${b64url(sig)}`;
}

/** The Standard Webhooks v1 signature (base64) of a delivery, keyed with
 * the base64 part of a `whsec_<base64>` secret. */
export async function webhookSignature(
  secret: string,
  id: string,
  timestamp: number | string,
  body: string,
): Promise<string> {
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const sig = await hmac(new Uint8Array(key), `${id}.${timestamp}.${body}`);
  return Buffer.from(sig).toString("base64");
}

/** Standard Webhooks headers for `body`. */
export async function webhookHeaders(
  body: string,
  secret: string,
  opts: { id?: string; timestamp?: number } = {},
): Promise<Record<string, string>> {
  const id = opts.id ?? `msg_${crypto.randomUUID()}`;
  const timestamp = opts.timestamp ?? Math.floor(Date.now() / 1000);
  const sig = await webhookSignature(secret, id, timestamp, body);
  return {
    "content-type": "application/json",
    "webhook-id": id,
    "webhook-timestamp": String(timestamp),
    "webhook-signature": `v1,${sig}`,
  };
}
