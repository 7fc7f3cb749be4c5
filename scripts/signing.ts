// Independent TypeScript implementations of the credential formats the
// functions accept: Supabase user access tokens (HS256, ES256, RS256) and
// Standard Webhooks signatures. The tests use them to check the Rust core against the
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

/** The claims of a signed-in user's access token, one hour long. */
function userClaims(
  sub: string,
  overrides: Record<string, unknown>,
): Record<string, unknown> {
  return {
    sub,
    role: "authenticated",
    aud: "authenticated",
    exp: Math.floor(Date.now() / 1000) + 3600,
    ...overrides,
  };
}

/** An HS256 access token as Supabase Auth issues for a signed-in user;
 * `header` adds members to the JOSE header (e.g. a `kid`). */
export async function userToken(
  sub: string,
  overrides: Record<string, unknown> = {},
  secret: string,
  header: Record<string, unknown> = {},
): Promise<string> {
  const h = b64url(JSON.stringify({ alg: "HS256", typ: "JWT", ...header }));
  const input = `${h}.${b64url(JSON.stringify(userClaims(sub, overrides)))}`;
  const sig = await hmac(new TextEncoder().encode(secret), input);
  return `${input}.${b64url(sig)}`;
}

export type AsymmetricAlg = "ES256" | "RS256";

/** A project signing key: the private half, and the public JWK as a JWKS
 * publishes it. */
export interface SigningKey {
  alg: AsymmetricAlg;
  kid: string;
  privateKey: CryptoKey;
  jwk: JsonWebKey & { kid: string; alg: AsymmetricAlg; use: string };
}

/** A fresh ES256 (P-256) or RS256 (2048-bit) signing key. */
export async function signingKey(
  alg: AsymmetricAlg,
  kid: string,
): Promise<SigningKey> {
  const params = alg === "ES256" ? { name: "ECDSA", namedCurve: "P-256" } : {
    name: "RSASSA-PKCS1-v1_5",
    modulusLength: 2048,
    publicExponent: new Uint8Array([1, 0, 1]),
    hash: "SHA-256",
  };
  const pair = await crypto.subtle.generateKey(params, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const pub = await crypto.subtle.exportKey("jwk", pair.publicKey);
  return {
    alg,
    kid,
    privateKey: pair.privateKey,
    jwk: { ...pub, kid, alg, use: "sig" },
  };
}

/** A user access token signed with `key`, its header naming `kid`. */
export async function asymmetricUserToken(
  key: SigningKey,
  sub: string,
  overrides: Record<string, unknown> = {},
  kid = key.kid,
): Promise<string> {
  const header = b64url(JSON.stringify({ alg: key.alg, kid, typ: "JWT" }));
  const payload = b64url(JSON.stringify(userClaims(sub, overrides)));
  const algorithm = key.alg === "ES256"
    ? { name: "ECDSA", hash: "SHA-256" }
    : { name: "RSASSA-PKCS1-v1_5" };
  const sig = await crypto.subtle.sign(
    algorithm,
    key.privateKey,
    new TextEncoder().encode(`${header}.${payload}`),
  );
  return `${header}.${payload}.${b64url(new Uint8Array(sig))}`;
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
