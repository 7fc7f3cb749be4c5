// POST /functions/v1/reconcile-backups: the sweep that ends silent runs
// (pg_cron calls it every minute). All behaviour is in the Rust core
// (src/endpoints/sweep.rs, src/reconcile.rs).
//
// pkg/reconcile-backups/ is the core built with this endpoint alone. Its bytes are
// imported first, so that they compile in the background while the rest
// (the database driver) loads.
import { wasmModule } from "../../../pkg/reconcile-backups/backup_core_wasm.js";
import * as core from "../../../pkg/reconcile-backups/backup_core.js";
import { serveFunction } from "../_shared/core.ts";

Deno.serve(await serveFunction(core, wasmModule));
