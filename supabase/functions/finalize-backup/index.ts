// POST /functions/v1/finalize-backup: the workflow's reports.
// All behaviour is in the Rust core (src/finalize.rs).
import { serveFunction } from "../_shared/core.ts";

Deno.serve(serveFunction("finalize-backup"));
