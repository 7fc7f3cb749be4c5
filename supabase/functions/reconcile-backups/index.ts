// POST /functions/v1/reconcile-backups: the sweep that ends silent runs
// (pg_cron calls it every minute). All behaviour is in the Rust core
// (src/sweep.rs, src/reconcile.rs).
import { serveFunction } from "../_shared/core.ts";

Deno.serve(serveFunction("reconcile-backups"));
