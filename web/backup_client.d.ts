// Types of backup_client.js (a plain ES module, no build step).

/** The three statuses a run can have. */
export type BackupStatus = "in_progress" | "success" | "failed";

/** Why a run failed. */
export type FailureReason =
  | "step_failed"
  | "cancelled"
  | "timed_out"
  | "dispatch_failed"
  | "lost";

/** One backup run, as `GET /functions/v1/backup-status` shows it. */
export interface BackupRun {
  dispatch_id: string;
  status: BackupStatus;
  /**
   * `queued` (dispatched, not started), `running`, the latest reported
   * progress phase (e.g. `dumped`, `uploaded`), or the final status.
   */
  phase: string;
  failure_reason: FailureReason | null;
  error_text: string | null;
  trigger_source: "manual" | "schedule";
  /** The admin who pressed the button; null for scheduled runs. */
  triggered_by: string | null;
  reason: string | null;
  /** ISO 8601, UTC, milliseconds. */
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  updated_at: string;
  /**
   * finished − started (or − created, for a run that never started); null
   * until the run is finished: count the elapsed time from `started_at`.
   */
  duration_ms: number | null;
  s3_key: string | null;
  size_bytes: number | null;
  sha256: string | null;
  workflow_run_id: number | null;
  run_attempt: number;
  /** The GitHub Actions run page. */
  run_url: string | null;
  /** The latest progress report, e.g. `{ "phase": "dumped" }`. */
  progress: Record<string, unknown> | null;
  /** What the workflow found when it read the stored object back. */
  verification: Verification | null;
  /** Present (true) only when that check failed: still a success. */
  verification_failed?: true;
  /** When retention deleted the object (ISO 8601). */
  pruned_at: string | null;
  /**
   * A presigned S3 GET of the object, valid 5 minutes from the answer.
   * Absent unless the run succeeded, its object was not pruned, and the
   * functions have the BACKUP_S3_* download secrets. Not part of the ETag:
   * read the run again (without If-None-Match) for a fresh one.
   */
  download_url?: string;
}

/** The workflow's verdict on a stored object (README "Verification"). */
export interface Verification {
  mode: "list" | "restore";
  ok: boolean;
  /** Tables whose rows the dump holds (custom format), else null. */
  tables: number | null;
  /** Rows restored (restore mode), else null. */
  rows: number | null;
  /** The first tables whose counts differ (at most 50, 4 KB of JSON). */
  mismatches: {
    table: string;
    expected: number | null;
    actual: number | null;
  }[];
  /** How many more tables differ than `mismatches` lists, when any. */
  mismatches_omitted?: number;
  error?: string;
}

/** trigger-backup's 202. */
export interface TriggerResult {
  dispatch_id: string;
  status: "in_progress";
  workflow_run_id: number | null;
  run_url: string | null;
}

/**
 * Whether the scheduled sweep (pg_cron → pg_net → reconcile-backups, every
 * minute) is alive. Without it, a backup whose workflow stops reporting
 * stays `in_progress` until someone presses the button again.
 */
export interface SweeperHealth {
  /** When reconcile-backups last ran a sweep (ISO 8601); null: never. */
  last_run_at: string | null;
  /** Whether that was within the last 3 minutes (decided by the server). */
  healthy: boolean;
  /**
   * Why the database could not call the function, e.g. `pg_net is not
   * enabled; Vault secret backup_service_key is not set`; null when it
   * could (or never tried).
   */
  problem: string | null;
}

/**
 * An alert in the outbox (`backup_notifications`) and where its delivery
 * stands. At least once: a receiver drops repeats by `webhook_id`.
 */
export interface BackupNotification {
  id: number;
  event: "failed" | "verification_failed" | "silence" | "recovery" | "test";
  /** The run it is about; null for a silence and a test. */
  dispatch_id: string | null;
  /** The destination's URL setting, e.g. `BACKUP_ALERT_WEBHOOK_URL_2` (never the URL). */
  destination: string;
  /** `dead`: given up a day after the event. */
  status: "pending" | "delivered" | "dead";
  /** Sends started so far. */
  attempts: number;
  /** The Standard Webhooks `webhook-id`, the same on every retry. */
  webhook_id: string;
  created_at: string;
  /** When it is tried again; pending rows only. */
  next_attempt_at: string | null;
  delivered_at: string | null;
  /** Why the last try failed, e.g. `HTTP 503`. */
  last_error: string | null;
}

/** One page of the history, newest first. */
export interface BackupPage {
  runs: BackupRun[];
  /** Pass as `cursor` for the next page; null on the last one. */
  next_cursor: string | null;
  /** The sweeper's health, as of this answer. */
  sweeper: SweeperHealth;
  /** The 20 newest alerts, newest first. */
  notifications: BackupNotification[];
}

/** What a test alert did, and the alerts as they stand after it. */
export interface TestAlertResult {
  sent: { delivered: number; retrying: number; dead: number };
  notifications: BackupNotification[];
}

export interface BackupClientOptions {
  /** The project URL, e.g. `https://<ref>.supabase.co` or `http://127.0.0.1:54321`. */
  supabaseUrl: string;
  /** A backup admin's access token (fixed). */
  accessToken?: string;
  /**
   * Called before every request, e.g. with supabase-js:
   * `async () => (await supabase.auth.getSession()).data.session.access_token`.
   */
  getAccessToken?: () => string | Promise<string>;
  /** Defaults to `globalThis.fetch`. */
  fetch?: typeof fetch;
}

export interface CallOptions {
  signal?: AbortSignal;
}

export interface WatchOptions {
  /** Stops the watch; the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Long-poll seconds, 0–25 (default 25). */
  wait?: number;
  /**
   * An answer that brought no new state is followed by the next request no
   * sooner than this many ms after it was sent (default 1000), so a server
   * that answers at once cannot cause a request storm.
   */
  minIntervalMs?: number;
  /** First retry delay after a network error, 429 or 5xx (default 1000 ms). */
  baseBackoffMs?: number;
  /** The longest retry delay (default 30000 ms); delays double, with jitter. */
  maxBackoffMs?: number;
  /** Told about each transient failure before the retry. */
  onError?: (error: BackupApiError, retryInMs: number) => void;
}

/** The promise of a run's final state; `stop()` aborts the watch. */
export interface WatchPromise extends Promise<BackupRun> {
  stop(): void;
}

export interface BackupClient {
  /**
   * Presses "Back up now". Rejects with {@link BackupInProgressError} when
   * one is running, and a {@link BackupApiError} for any other non-2xx.
   */
  triggerBackup(
    options?: { reason?: string } & CallOptions,
  ): Promise<TriggerResult>;
  /**
   * Follows a run with long-polls (one request in flight, `wait=25`,
   * `If-None-Match`), calling `onChange` with each new state (the elapsed
   * time alone is not a new state). Retries network errors, 429 and 5xx with
   * exponential backoff and jitter; resolves with the run once it is
   * `success` or `failed`; rejects on a 4xx or when stopped.
   */
  watchBackup(
    dispatchId: string,
    onChange?: (run: BackupRun) => void,
    options?: WatchOptions,
  ): WatchPromise;
  /**
   * One page of the history, newest first (limit 1–100, default 20), with
   * the sweeper's health: show a warning when `sweeper.healthy` is false.
   */
  listBackups(
    options?: { limit?: number; cursor?: string | null } & CallOptions,
  ): Promise<BackupPage>;
  /** One run; a 404 `unknown_dispatch_id` for an id never issued. */
  getBackup(dispatchId: string, options?: CallOptions): Promise<BackupRun>;
  /**
   * Sends a test alert to every configured destination now. A 500
   * `config_missing` naming `BACKUP_ALERT_WEBHOOK_URL` when none is set.
   */
  sendTestAlert(options?: CallOptions): Promise<TestAlertResult>;
}

/** Any failed call: a non-2xx answer, or `status` 0 for a network error. */
export class BackupApiError extends Error {
  constructor(
    status: number,
    code: string,
    message: string,
    options?: { dispatchId?: string; body?: unknown; cause?: unknown },
  );
  /** The HTTP status, or 0 for a network error or timeout. */
  readonly status: number;
  /** The API's error code (`not_admin`, `dispatch_failed`, …), `network_error`, or `http_<status>`. */
  readonly code: string;
  /** The run concerned: the running one (409) or the refused one (502). */
  readonly dispatchId?: string;
  /** The parsed error body, if any. */
  readonly body?: unknown;
}

/** trigger-backup's 409: message "already running: <dispatch id>". */
export class BackupInProgressError extends BackupApiError {
  constructor(
    dispatchId: string,
    options?: { body?: unknown; cause?: unknown },
  );
  readonly status: 409;
  readonly code: "backup_in_progress";
  readonly dispatchId: string;
}

export const TERMINAL_STATUSES: readonly ["success", "failed"];
export const MAX_WAIT_SECONDS: 25;

/** Whether `status` is final (`success` or `failed`). */
export function isTerminal(status: string): boolean;

/** The retry delay for the `attempt`-th consecutive failure (1-based), jittered. */
export function backoffDelay(
  attempt: number,
  base?: number,
  cap?: number,
): number;

export function createBackupClient(options: BackupClientOptions): BackupClient;
