// POST /functions/v1/trigger-backup: the "Back up now" button.
// All behaviour is in the Rust core (src/endpoints/trigger.rs).
//
// pkg/trigger-backup/ is the core built with this endpoint alone. Its bytes are
// imported first, so that they compile in the background while the rest
// (the database driver) loads.
import { wasmModule } from "../../../pkg/trigger-backup/backup_core_wasm.js";
import * as core from "../../../pkg/trigger-backup/backup_core.js";
import { serveFunction } from "../_shared/core.ts";

Deno.serve(await serveFunction(core, wasmModule));
