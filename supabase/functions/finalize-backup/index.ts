// POST /functions/v1/finalize-backup: the workflow's reports.
// All behaviour is in the Rust core (src/endpoints/finalize.rs).
//
// pkg/finalize-backup/ is the core built with this endpoint alone. Its bytes are
// imported first, so that they compile in the background while the rest
// (the database driver) loads.
import { wasmModule } from "../../../pkg/finalize-backup/backup_core_wasm.js";
import * as core from "../../../pkg/finalize-backup/backup_core.js";
import { serveFunction } from "../_shared/core.ts";

Deno.serve(await serveFunction(core, wasmModule));
