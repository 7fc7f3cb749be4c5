// The throughput baseline of `deno task bench`: the least a plain TypeScript
// implementation of finalize-backup's contract must do for a progress
// report, measured beside the real function on the same database in the
// same run. It verifies the Standard Webhooks signature with WebCrypto,
// then applies the report with one guarded UPDATE that records the delivery
// in the same statement, through the same driver, pool size and statement
// preparation as supabase/functions/_shared/db.ts. There is no state machine: a report for
// a run that is not in progress in that attempt changes nothing (200,
// `changed: false`). Started like scripts/serve.ts (PORT, SUPABASE_DB_URL,
// BACKUP_WEBHOOK_SECRET from the environment).

// deno-lint-ignore no-import-prefix
import postgres from "npm:postgres@3.4.9";
import { Buffer } from "node:buffer";

const sql = postgres(Deno.env.get("SUPABASE_DB_URL") ?? "", {
  max: 5,
  // As db.ts connects to a direct URL like this bench's: prepared (the core
  // decides so for any URL that is not a transaction pooler's).
  prepare: true,
  onnotice: () => {},
});
const secret = Deno.env.get("BACKUP_WEBHOOK_SECRET") ?? "";
const key = await crypto.subtle.importKey(
  "raw",
  Buffer.from(secret.replace(/^whsec_/, ""), "base64"),
  { name: "HMAC", hash: "SHA-256" },
  false,
  ["sign"],
);
const encoder = new TextEncoder();

const APPLY = `
with d as (
  insert into public.backup_report_deliveries (webhook_id, dispatch_id)
  values ($1::text, $2::uuid) on conflict do nothing returning 1
)
update public.backup_history
   set progress = coalesce($4::text::jsonb, progress), version = version + 1
 where dispatch_id = $2::uuid and status = 'in_progress'
   and run_attempt = $3::int4 and exists (select from d)
returning status`;

function error(status: number, code: string, message: string): Response {
  return Response.json({ error: { code, message } }, { status });
}

async function handle(req: Request): Promise<Response> {
  const id = req.headers.get("webhook-id");
  const timestamp = req.headers.get("webhook-timestamp");
  const signatures = req.headers.get("webhook-signature");
  const body = await req.text();
  const now = Math.floor(Date.now() / 1000);
  if (
    !id || !timestamp || !signatures ||
    Math.abs(now - Number(timestamp)) > 300
  ) {
    return error(401, "invalid_signature", "missing or stale signature");
  }
  const mac = Buffer.from(
    await crypto.subtle.sign(
      "HMAC",
      key,
      encoder.encode(`${id}.${timestamp}.${body}`),
    ),
  ).toString("base64");
  if (!signatures.split(" ").includes(`v1,${mac}`)) {
    return error(401, "invalid_signature", "no signature matches");
  }
  let report: {
    dispatch_id?: string;
    run_attempt?: number;
    progress?: unknown;
  };
  try {
    report = JSON.parse(body);
  } catch {
    return error(400, "invalid_body", "the body must be a JSON object");
  }
  const rows = await sql.unsafe(APPLY, [
    id,
    String(report.dispatch_id),
    String(report.run_attempt),
    report.progress === undefined ? null : JSON.stringify(report.progress),
  ], { prepare: true });
  return Response.json({
    dispatch_id: report.dispatch_id,
    status: rows[0]?.status ?? "in_progress",
    changed: rows.length > 0,
  });
}

Deno.serve(
  {
    port: Number(Deno.env.get("PORT") ?? "54321"),
    hostname: "127.0.0.1",
    onListen: ({ hostname, port }) =>
      console.log(`baseline function at http://${hostname}:${port}/`),
  },
  (req) =>
    handle(req).catch(() =>
      error(503, "database_unavailable", "the database is unavailable")
    ),
);
