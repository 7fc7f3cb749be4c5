// @ts-self-types="./backup_client.d.ts"
/**
 * A dependency-free browser client for the backup control plane's Edge
 * Functions: press the button, watch a run live, read the history.
 *
 * ```js
 * import { createBackupClient } from "./backup_client.js";
 * const backups = createBackupClient({
 *   supabaseUrl: "https://<project>.supabase.co",
 *   // With supabase-js: a fresh token for every request.
 *   getAccessToken: async () =>
 *     (await supabase.auth.getSession()).data.session.access_token,
 * });
 * const { dispatch_id } = await backups.triggerBackup({ reason: "pre-deploy" });
 * const final = await backups.watchBackup(dispatch_id, (run) => render(run));
 * ```
 *
 * Live updates use the status endpoint's long-poll (`wait=25` with
 * `If-None-Match`): one request in flight per watch, answered as soon as the
 * run changes. Without this module, supabase-js Realtime works too (the
 * table is published and its SELECT policy admits backup admins):
 *
 * ```js
 * supabase.channel("backups").on(
 *   "postgres_changes",
 *   { event: "*", schema: "public", table: "backup_history" },
 *   (change) => render(change.new),
 * ).subscribe();
 * ```
 * (Realtime rows are the table's columns, not the API's `Run` view: no
 * `phase` or `duration_ms`.)
 *
 * Plain ES2020, no build step; the types are in backup_client.d.ts.
 */

/** The statuses after which a run never changes again (but a re-run). */
export const TERMINAL_STATUSES = Object.freeze(["success", "failed"]);

/** Whether `status` is final (`success` or `failed`). */
export function isTerminal(status) {
  return TERMINAL_STATUSES.includes(status);
}

/** The longest long-poll the status endpoint accepts, in seconds. */
export const MAX_WAIT_SECONDS = 25;

/**
 * Every failed call: a non-2xx answer (`status` is the HTTP status, `code`
 * the API's error code), or a network failure (`status` 0, `code`
 * `network_error`).
 */
export class BackupApiError extends Error {
  constructor(status, code, message, options = {}) {
    super(
      message,
      options.cause === undefined ? undefined : {
        cause: options.cause,
      },
    );
    this.name = "BackupApiError";
    this.status = status;
    this.code = code;
    this.dispatchId = options.dispatchId;
    this.body = options.body;
  }
}

/** trigger-backup's 409: a backup is already running (`dispatchId`). */
export class BackupInProgressError extends BackupApiError {
  constructor(dispatchId, options = {}) {
    super(409, "backup_in_progress", `already running: ${dispatchId}`, {
      ...options,
      dispatchId,
    });
    this.name = "BackupInProgressError";
  }
}

/** Answers worth retrying: network errors, timeouts, 429 and 5xx. */
function isTransient(error) {
  return error instanceof BackupApiError &&
    (error.status === 0 || error.status === 408 || error.status === 429 ||
      error.status >= 500);
}

function abortError(signal) {
  if (signal && signal.reason !== undefined) return signal.reason;
  return new DOMException("The operation was aborted.", "AbortError");
}

/** Resolves after `ms`, or rejects with the abort reason. */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) return reject(abortError(signal));
    const done = () => {
      clearTimeout(timer);
      if (signal) signal.removeEventListener("abort", aborted);
    };
    const aborted = () => {
      done();
      reject(abortError(signal));
    };
    const timer = setTimeout(() => {
      done();
      resolve();
    }, Math.max(0, ms));
    if (signal) signal.addEventListener("abort", aborted, { once: true });
  });
}

/**
 * Exponential backoff with jitter: attempt 1 waits about `base`, each next
 * one twice as long, up to `cap`; the wait is drawn from [d/2, d) so that
 * many clients that failed together do not retry together.
 */
export function backoffDelay(attempt, base = 1000, cap = 30000) {
  const d = Math.min(cap, base * 2 ** Math.max(0, attempt - 1));
  return Math.round(d / 2 + Math.random() * (d / 2));
}

/**
 * A run's state for change detection. The API leaves `duration_ms` null
 * until a run is finished; should a server count the elapsed time into a
 * running backup's body, that alone is still not a new state.
 */
function stateKey(run) {
  if (!run) return "";
  const copy = { ...run };
  if (!isTerminal(run.status)) delete copy.duration_ms;
  // Signed afresh on every read: a new link is not a new state.
  delete copy.download_url;
  return JSON.stringify(copy);
}

/**
 * Creates a client.
 * @param {import("./backup_client.d.ts").BackupClientOptions} options
 */
export function createBackupClient(options) {
  if (!options || typeof options.supabaseUrl !== "string") {
    throw new TypeError("createBackupClient: supabaseUrl is required");
  }
  const base = options.supabaseUrl.replace(/\/+$/, "") + "/functions/v1/";
  const doFetch = options.fetch ||
    ((input, init) => globalThis.fetch(input, init));
  const tokenOf = typeof options.getAccessToken === "function"
    ? options.getAccessToken
    : () => options.accessToken;
  if (
    typeof options.getAccessToken !== "function" &&
    typeof options.accessToken !== "string"
  ) {
    throw new TypeError(
      "createBackupClient: accessToken or getAccessToken is required",
    );
  }

  /**
   * One call. Resolves to {status, etag, body} for a 2xx or 304; throws a
   * BackupApiError for anything else, or the abort reason.
   */
  async function call(name, init = {}) {
    const { query, method = "GET", body, headers = {}, signal } = init;
    const token = await tokenOf();
    const url = base + name + (query ? "?" + query : "");
    const reqHeaders = { ...headers };
    if (token) reqHeaders.authorization = `Bearer ${token}`;
    if (body !== undefined) reqHeaders["content-type"] = "application/json";
    let response;
    try {
      response = await doFetch(url, {
        method,
        headers: reqHeaders,
        body: body === undefined ? undefined : JSON.stringify(body),
        // Conditional requests are ours to make; never a cached answer.
        cache: "no-store",
        signal,
      });
    } catch (error) {
      if (signal && signal.aborted) throw abortError(signal);
      throw new BackupApiError(
        0,
        "network_error",
        `network error: ${error && error.message ? error.message : error}`,
        { cause: error },
      );
    }
    const etag = response.headers.get("etag");
    if (response.status === 304) return { status: 304, etag, body: null };
    let text = "";
    let unread = null;
    try {
      text = await response.text();
    } catch (error) {
      if (signal && signal.aborted) throw abortError(signal);
      unread = error;
    }
    let parsed = null;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = null;
      }
    }
    if (response.ok) {
      // A success whose body did not arrive whole (the connection dropped
      // mid-body) or is not the JSON object every endpoint answers is no
      // answer: a network error, retried like one. Its ETag goes with it,
      // or a watch would wait on a state it never saw.
      if (parsed === null || typeof parsed !== "object") {
        throw new BackupApiError(
          0,
          "network_error",
          unread
            ? `network error: the answer was cut off (${
              unread.message || unread
            })`
            : `network error: HTTP ${response.status} without a JSON body`,
          unread ? { cause: unread } : {},
        );
      }
      return { status: response.status, etag, body: parsed };
    }
    const error = parsed && parsed.error ? parsed.error : {};
    const dispatchId = parsed && typeof parsed.dispatch_id === "string"
      ? parsed.dispatch_id
      : undefined;
    if (response.status === 409 && error.code === "backup_in_progress") {
      throw new BackupInProgressError(dispatchId || "unknown", {
        body: parsed,
      });
    }
    throw new BackupApiError(
      response.status,
      typeof error.code === "string" ? error.code : `http_${response.status}`,
      typeof error.message === "string"
        ? error.message
        : `HTTP ${response.status} ${response.statusText || ""}`.trim(),
      { dispatchId, body: parsed },
    );
  }

  function idQuery(dispatchId) {
    return "dispatch_id=" + encodeURIComponent(String(dispatchId));
  }

  async function triggerBackup(opts = {}) {
    const body = {};
    if (opts.reason !== undefined) body.reason = opts.reason;
    const r = await call("trigger-backup", {
      method: "POST",
      body,
      signal: opts.signal,
    });
    return r.body;
  }

  async function getBackup(dispatchId, opts = {}) {
    const r = await call("backup-status", {
      query: idQuery(dispatchId),
      signal: opts.signal,
    });
    return r.body.run;
  }

  async function listBackups(opts = {}) {
    const params = [];
    if (opts.limit !== undefined) params.push("limit=" + opts.limit);
    if (opts.cursor) params.push("cursor=" + encodeURIComponent(opts.cursor));
    const r = await call("backup-status", {
      query: params.join("&"),
      signal: opts.signal,
    });
    return r.body;
  }

  async function sendTestAlert(opts = {}) {
    const r = await call("backup-status", {
      method: "POST",
      body: { action: "send_test_alert" },
      signal: opts.signal,
    });
    return r.body;
  }

  function watchBackup(dispatchId, onChange, opts = {}) {
    const wait = Math.max(
      0,
      Math.min(MAX_WAIT_SECONDS, Math.floor(opts.wait ?? MAX_WAIT_SECONDS)),
    );
    const minIntervalMs = opts.minIntervalMs ?? 1000;
    const baseBackoffMs = opts.baseBackoffMs ?? 1000;
    const maxBackoffMs = opts.maxBackoffMs ?? 30000;
    const stopper = new AbortController();
    const outer = opts.signal;
    const onOuterAbort = () => stopper.abort(abortError(outer));
    if (outer) {
      if (outer.aborted) onOuterAbort();
      else outer.addEventListener("abort", onOuterAbort, { once: true });
    }
    const signal = stopper.signal;

    async function loop() {
      let etag = null;
      let last = null;
      let lastKey = "";
      let failures = 0;
      for (;;) {
        if (signal.aborted) throw abortError(signal);
        const startedAt = Date.now();
        let changed = false;
        // A request that outlives its wait by far is a dead connection.
        const perRequest = new AbortController();
        const abortRequest = () => perRequest.abort(abortError(signal));
        signal.addEventListener("abort", abortRequest, { once: true });
        const timer = setTimeout(
          () => perRequest.abort(new DOMException("timed out", "TimeoutError")),
          (wait + 15) * 1000,
        );
        try {
          const r = await call("backup-status", {
            query: idQuery(dispatchId) + "&wait=" + wait,
            headers: etag ? { "if-none-match": etag } : {},
            signal: perRequest.signal,
          });
          if (r.status !== 304 && !(r.body && r.body.run)) {
            throw new BackupApiError(
              0,
              "network_error",
              "network error: an answer without its run",
            );
          }
          failures = 0;
          if (r.etag) etag = r.etag;
          if (r.status !== 304) {
            const run = r.body.run;
            const key = stateKey(run);
            last = run;
            if (key !== lastKey) {
              lastKey = key;
              changed = true;
              if (onChange) onChange(run);
            }
          }
          if (last && isTerminal(last.status)) return last;
        } catch (error) {
          if (signal.aborted) throw abortError(signal);
          const timedOut = perRequest.signal.aborted;
          const wrapped = timedOut
            ? new BackupApiError(0, "network_error", "the request timed out")
            : error;
          if (!isTransient(wrapped)) throw wrapped;
          failures += 1;
          const delay = backoffDelay(failures, baseBackoffMs, maxBackoffMs);
          if (opts.onError) opts.onError(wrapped, delay);
          await sleep(delay, signal);
          continue;
        } finally {
          clearTimeout(timer);
          signal.removeEventListener("abort", abortRequest);
        }
        // An answer without a new state that came back early (a server or
        // proxy that does not hold the request) is followed by the next
        // request no sooner than minIntervalMs after this one: whatever the
        // server does, a watch cannot become a request storm. After a new
        // state, the next long-poll goes out at once (it will wait).
        const spent = Date.now() - startedAt;
        if (!changed && spent < minIntervalMs) {
          await sleep(minIntervalMs - spent, signal);
        }
      }
    }

    const promise = loop().finally(() => {
      if (outer) outer.removeEventListener("abort", onOuterAbort);
    });
    promise.stop = () => stopper.abort();
    return promise;
  }

  return { triggerBackup, watchBackup, listBackups, getBackup, sendTestAlert };
}
