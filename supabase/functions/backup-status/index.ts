// GET /functions/v1/backup-status: one run (optionally long-polled) or the
// history. All behaviour is in the Rust core (src/status.rs).
import { serveFunction } from "../_shared/core.ts";

Deno.serve(serveFunction("backup-status"));
