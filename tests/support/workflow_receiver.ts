/**
 * A stand-in finalize-backup for tests of the workflow alone: verifies each
 * report's Standard Webhooks signature with WebCrypto (an implementation
 * independent of the workflow's openssl one), records it, and answers as the
 * contract says — or as a test scripts it.
 */

import { webhookSignature } from "../../scripts/signing.ts";

export interface ReceivedReport {
  webhookId: string;
  timestamp: number;
  signature: string;
  /** The v1 signature matched HMAC-SHA256 over "{id}.{timestamp}.{raw body}". */
  verified: boolean;
  raw: string;
  // deno-lint-ignore no-explicit-any
  body: any;
  headers: Record<string, string>;
  at: number;
}

export interface Receiver {
  url: string;
  reports: ReceivedReport[];
  /** Replaceable: return a Response to override the default answer. */
  respond?: (
    r: ReceivedReport,
    nth: number,
  ) => Response | undefined | Promise<Response | undefined>;
  close(): Promise<void>;
}

/** The signature the workflow must send (an independent WebCrypto implementation). */
export const standardWebhookSignature = webhookSignature;

export function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/**
 * Starts the receiver. Default answers: a `started` report without
 * dispatch_id registers a scheduled run (201, one dispatch id per webhook-id,
 * so re-sends get the same one); anything else is 200. Bad signatures: 401.
 */
export function startReceiver(secret: string): Promise<Receiver> {
  const reports: ReceivedReport[] = [];
  const registered = new Map<string, string>();
  const receiver: Receiver = {
    url: "",
    reports,
    respond: undefined,
    close: async () => await server.shutdown(),
  };
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, async (req) => {
    const raw = await req.text();
    const headers = Object.fromEntries(req.headers);
    const webhookId = headers["webhook-id"] ?? "";
    const timestamp = Number(headers["webhook-timestamp"] ?? "0");
    const signature = headers["webhook-signature"] ?? "";
    const expected = await standardWebhookSignature(
      secret,
      webhookId,
      timestamp,
      raw,
    );
    const verified = signature.split(" ").some((s) => s === `v1,${expected}`);
    // deno-lint-ignore no-explicit-any
    let body: any = null;
    try {
      body = JSON.parse(raw);
    } catch { /* recorded as null */ }
    const report: ReceivedReport = {
      webhookId,
      timestamp,
      signature,
      verified,
      raw,
      body,
      headers,
      at: Date.now(),
    };
    reports.push(report);
    const custom = await receiver.respond?.(report, reports.length);
    if (custom) return custom;
    if (!verified) {
      return json(401, {
        error: { code: "bad_signature", message: "signature mismatch" },
      });
    }
    if (body?.event === "started" && !body.dispatch_id) {
      let id = registered.get(webhookId);
      const fresh = !id;
      if (!id) registered.set(webhookId, id = crypto.randomUUID());
      return json(fresh ? 201 : 200, {
        dispatch_id: id,
        status: "in_progress",
        changed: fresh,
      });
    }
    const status =
      { succeeded: "success", failed: "failed", cancelled: "failed" }[
        body?.event as string
      ] ?? "in_progress";
    return json(200, { dispatch_id: body?.dispatch_id, status, changed: true });
  });
  receiver.url =
    `http://127.0.0.1:${server.addr.port}/functions/v1/finalize-backup`;
  return Promise.resolve(receiver);
}
