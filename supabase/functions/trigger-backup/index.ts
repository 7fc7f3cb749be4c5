// POST /functions/v1/trigger-backup: the "Back up now" button.
// All behaviour is in the Rust core (src/trigger.rs).
import { serveFunction } from "../_shared/core.ts";

Deno.serve(serveFunction("trigger-backup"));
