// GET /functions/v1/backup-status: one run (optionally long-polled) or the
// history. All behaviour is in the Rust core (src/endpoints/status.rs).
//
// pkg/backup-status/ is the core built with this endpoint alone. Its bytes are
// imported first, so that they compile in the background while the rest
// (the database driver) loads.
import { wasmModule } from "../../../pkg/backup-status/backup_core_wasm.js";
import * as core from "../../../pkg/backup-status/backup_core.js";
import { serveFunction } from "../_shared/core.ts";

Deno.serve(await serveFunction(core, wasmModule));
