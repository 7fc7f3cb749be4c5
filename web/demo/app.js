// The demo page: a "Back up now" button, the running backup's live phase,
// the history and a chart, written with ../backup_client.js only.
//
// Settings come from GET /dev/session on this origin (`deno task dev` serves
// {"supabase_url", "access_token"}), else from the form, kept in
// sessionStorage. Every value from the server is put in the page with
// textContent or attributes, never as HTML.

import {
  BackupApiError,
  BackupInProgressError,
  createBackupClient,
  isTerminal,
} from "../backup_client.js";

const STORAGE_KEY = "backup-demo-settings";
const STEPS = ["queued", "running", "dumped", "uploaded"];
const FAILURE_REASONS = {
  step_failed: "A workflow step failed",
  cancelled: "Cancelled",
  timed_out: "Timed out",
  dispatch_failed: "GitHub did not start it",
  lost: "Never reported back (lost)",
};
const STATUS_LABELS = {
  in_progress: "In progress",
  success: "Success",
  failed: "Failed",
};

const $ = (id) => document.getElementById(id);

const state = {
  settings: null,
  client: null,
  runs: [],
  nextCursor: null,
  live: null, // { run, receivedAt }
  watch: null, // { id, stop }
  refreshing: null,
  refreshAgain: false,
  messageTimer: 0,
};

// --- small DOM helpers ----------------------------------------------------------

/** createElement with properties/attributes and children (text or nodes). */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(
      typeof child === "string" ? document.createTextNode(child) : child,
    );
  }
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(
      typeof child === "string" ? document.createTextNode(child) : child,
    );
  }
  return node;
}

// --- formatting -----------------------------------------------------------------

/** 1536 → "1.5 KiB". */
export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${units[unit]}`;
}

/** 83000 → "1 min 23 s". */
export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A short axis label: "45 s", "3.5 min", "1.2 h". */
function formatAxisDuration(ms) {
  const s = ms / 1000;
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

const dateFormat = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
});
function formatDate(iso) {
  return iso ? dateFormat.format(new Date(iso)) : "—";
}

function shortId(id) {
  return String(id).slice(0, 8) + "…";
}

function badge(status) {
  return el("span", {
    className: "badge",
    "data-status": status,
    text: STATUS_LABELS[status] || status,
  });
}

// --- messages -----------------------------------------------------------------------

/** Shows a message; `parts` are strings or nodes. kind: error|warn|info. */
function showMessage(kind, ...parts) {
  const box = $("message");
  clearTimeout(state.messageTimer);
  box.className = `message ${kind}`;
  box.dataset.kind = kind;
  box.replaceChildren(...parts);
  box.hidden = false;
}

function clearMessage(kind) {
  const box = $("message");
  if (kind && box.dataset.kind !== kind) return;
  box.hidden = true;
  box.replaceChildren();
  delete box.dataset.kind;
}

function runLink(dispatchId, label) {
  return el("a", {
    href: `#run-${dispatchId}`,
    className: "run-link",
    "data-dispatch-id": dispatchId,
    text: label,
    onclick: (event) => {
      event.preventDefault();
      follow(dispatchId);
      highlight(dispatchId);
    },
  });
}

/** A clear sentence for every way a call can fail. */
function explain(error, action) {
  if (error instanceof BackupInProgressError) {
    return [
      "warn",
      `A backup is already running (${shortId(error.dispatchId)}). `,
      runLink(error.dispatchId, "Show the running backup"),
    ];
  }
  if (!(error instanceof BackupApiError)) {
    return ["error", `${action} failed: ${error && error.message || error}`];
  }
  const settings = el("button", {
    type: "button",
    className: "link",
    text: "Open the settings",
    onclick: () => showSettings(),
  });
  switch (error.status) {
    case 0:
      return [
        "error",
        `Cannot reach the backup service at ${state.settings.supabase_url} ` +
        `(${error.message}). Check your connection, the Supabase URL, and ` +
        "that this page's origin is in ALLOWED_ORIGINS.",
      ];
    case 401:
      return [
        "error",
        `You are not signed in, or your session expired (401 ${error.code}). ` +
        "Sign in again and use a fresh access token. ",
        settings,
      ];
    case 403:
      return error.code === "not_admin"
        ? [
          "error",
          "This account is not a backup admin (403 not_admin): an owner " +
          "can add it to public.backup_admins.",
        ]
        : ["error", `Not allowed (403 ${error.code}): ${error.message}`];
    case 502:
      return [
        "error",
        `GitHub did not start the backup workflow (502 ${error.code}): ` +
        `${error.message}. The attempt is in the history as failed.`,
      ];
    case 503:
      return [
        "error",
        "The database is unavailable right now (503): try again in a minute.",
      ];
    default:
      return [
        "error",
        `${action} failed (${error.status} ${error.code}): ${error.message}`,
      ];
  }
}

function showError(error, action) {
  const [kind, ...parts] = explain(error, action);
  showMessage(kind, ...parts);
  if (error instanceof BackupApiError && error.status === 401) {
    showSettings(false);
  }
}

// --- settings -----------------------------------------------------------------------

async function loadSettings() {
  try {
    const r = await fetch("/dev/session", {
      cache: "no-store",
      headers: { accept: "application/json" },
    });
    if (r.ok) {
      const s = await r.json();
      if (
        s && typeof s.supabase_url === "string" &&
        typeof s.access_token === "string"
      ) {
        return { ...s, source: "dev" };
      }
    }
  } catch {
    // No dev server: the form it is.
  }
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
    if (saved && saved.supabase_url && saved.access_token) {
      return { ...saved, source: "form" };
    }
  } catch {
    // Unreadable: ask again.
  }
  return null;
}

function showSettings(hideDashboard = true) {
  const form = $("settings");
  if (state.settings) $("settings-url").value = state.settings.supabase_url;
  form.hidden = false;
  if (hideDashboard && !state.client) $("dashboard").hidden = true;
  $("settings-token").focus();
}

function onSettingsSubmit(event) {
  event.preventDefault();
  const settings = {
    supabase_url: $("settings-url").value.trim(),
    access_token: $("settings-token").value.trim(),
  };
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(settings));
  $("settings").hidden = true;
  connect({ ...settings, source: "form" });
}

function connect(settings) {
  state.settings = settings;
  if (state.watch) state.watch.stop();
  state.watch = null;
  state.live = null;
  state.runs = [];
  renderSweeper(null);
  state.client = createBackupClient({
    supabaseUrl: settings.supabase_url,
    getAccessToken: () => state.settings.access_token,
  });
  $("connection").textContent = `${settings.supabase_url}` +
    (settings.source === "dev" ? " · local dev session" : "");
  $("change-settings").hidden = false;
  $("dashboard").hidden = false;
  clearMessage();
  renderLive();
  refreshHistory({ followRunning: true });
}

// --- the button ---------------------------------------------------------------------

async function backupNow() {
  const button = $("backup-now");
  button.disabled = true;
  button.textContent = "Starting…";
  try {
    const started = await state.client.triggerBackup({
      reason: "Back up now (demo page)",
    });
    showMessage(
      "info",
      `Backup ${shortId(started.dispatch_id)} started. `,
      started.run_url
        ? el("a", {
          href: started.run_url,
          target: "_blank",
          rel: "noopener",
          text: "Open the workflow run",
        })
        : "",
    );
    follow(started.dispatch_id);
  } catch (error) {
    showError(error, "Starting a backup");
    if (error instanceof BackupApiError && error.dispatchId) {
      // 409: the running one; 502: the refused attempt, now in the history.
      if (error instanceof BackupInProgressError) follow(error.dispatchId);
      else refreshHistory();
    }
  } finally {
    button.disabled = false;
    button.textContent = "Back up now";
  }
}

// --- the live run ------------------------------------------------------------------

/** Watches one run (stopping any other watch) until it is final. */
function follow(dispatchId) {
  if (state.watch && state.watch.id === dispatchId) return;
  if (state.watch) state.watch.stop();
  const known = state.runs.find((r) => r.dispatch_id === dispatchId);
  state.live = known ? { run: known, receivedAt: Date.now() } : null;
  renderLive();
  let retryTimer = 0;
  const current = { id: dispatchId, stop: () => {} };
  state.watch = current;
  const watch = state.client.watchBackup(dispatchId, (run) => {
    if (state.watch !== current) return;
    clearMessage("warn-retry");
    state.live = { run, receivedAt: Date.now() };
    renderLive();
    refreshHistory();
  }, {
    onError: (error, retryInMs) => {
      showMessage(
        "warn",
        `Lost contact with the backup service (${
          error.status ? `${error.status} ${error.code}` : error.message
        }); retrying in ${Math.ceil(retryInMs / 1000)} s…`,
      );
      $("message").dataset.kind = "warn-retry";
      clearTimeout(retryTimer);
      retryTimer = setTimeout(
        () => clearMessage("warn-retry"),
        retryInMs + 1500,
      );
    },
  });
  current.stop = () => watch.stop();
  watch.then(
    (run) => {
      if (state.watch !== current) return;
      state.watch = null;
      state.live = { run, receivedAt: Date.now() };
      renderLive();
      refreshHistory();
      if (run.status === "success" && run.verification_failed) {
        showMessage("error", verificationWarning(run));
      } else if (run.status === "success") {
        showMessage(
          "info",
          `Backup ${shortId(run.dispatch_id)} succeeded: ${
            formatBytes(run.size_bytes)
          } in ${formatDuration(run.duration_ms)}.`,
        );
      } else {
        showMessage(
          "error",
          `Backup ${shortId(run.dispatch_id)} failed: ${
            FAILURE_REASONS[run.failure_reason] || run.failure_reason
          }.`,
        );
      }
    },
    (error) => {
      if (state.watch !== current) return;
      state.watch = null;
      if (error && error.name === "AbortError") return;
      showError(error, "Following the backup");
    },
  );
}

function liveElapsed() {
  const live = state.live;
  if (!live) return "";
  const { run } = live;
  if (isTerminal(run.status)) return `took ${formatDuration(run.duration_ms)}`;
  // The API gives a duration to finished runs only (so that a running
  // one's ETag changes only with the run); the page counts the rest.
  const since = Date.parse(run.started_at || run.created_at);
  const ms = Math.max(0, Date.now() - since);
  return `${formatDuration(Math.floor(ms / 1000) * 1000)} ${
    run.started_at ? "elapsed" : "waiting"
  }`;
}

function renderLive() {
  const live = state.live;
  $("live-empty").hidden = Boolean(live);
  $("live-run").hidden = !live;
  if (!live) return;
  const { run } = live;
  const status = $("live-status");
  status.dataset.status = run.status;
  status.textContent = STATUS_LABELS[run.status] || run.status;
  const phase = $("live-phase");
  phase.textContent = run.phase;
  phase.dataset.phase = run.phase;
  // A final phase is the status the badge already shows.
  phase.hidden = isTerminal(run.status);
  $("live-elapsed").textContent = liveElapsed();
  $("live-run").dataset.dispatchId = run.dispatch_id;

  // queued → running → dumped → uploaded → success/failed
  const last = run.status === "in_progress"
    ? run.phase
    : (run.progress && run.progress.phase) ||
      (run.started_at ? "running" : "queued");
  let reached = STEPS.indexOf(last);
  if (reached < 0) reached = 1; // a progress phase of its own: after running
  const finalLabel = run.status === "in_progress" ? "done" : run.status;
  const items = [...STEPS, finalLabel].map((name, i) => {
    let cls = "";
    if (run.status === "success") cls = "done";
    else if (run.status === "failed") cls = i <= reached ? "done" : "";
    else if (i < reached) cls = "done";
    else if (i === reached) cls = "current";
    if (run.status === "failed" && i === STEPS.length) cls = "failed";
    return el("li", { className: cls, text: name });
  });
  $("live-steps").replaceChildren(...items);

  const detail = [`Backup ${shortId(run.dispatch_id)}`];
  if (run.reason) detail.push(`“${run.reason}”`);
  detail.push(`requested ${formatDate(run.created_at)}`);
  const nodes = [detail.join(" · ")];
  if (run.status === "failed") {
    nodes.push(
      " · ",
      el("span", {
        className: "reason",
        text: FAILURE_REASONS[run.failure_reason] || run.failure_reason,
        title: run.error_text || "",
      }),
    );
  }
  if (run.status === "success") {
    nodes.push(` · ${formatBytes(run.size_bytes)}`);
    if (run.verification_failed) {
      nodes.push(
        " · ",
        el("span", {
          className: "reason verification-failed",
          text: "verification FAILED",
          title: verificationWarning(run),
        }),
      );
    }
  }
  if (run.run_url) {
    nodes.push(
      " · ",
      el("a", {
        href: run.run_url,
        target: "_blank",
        rel: "noopener",
        text: "workflow run",
      }),
    );
  }
  $("live-detail").replaceChildren(...nodes);
}

// --- the sweeper --------------------------------------------------------------------

/**
 * Shows how to fix the scheduled sweep when backup-status says it has not
 * run lately (`healthy` is decided by the server), with the database's own
 * reason when it gave one. Hidden when healthy, or when the server is too
 * old to say.
 */
function renderSweeper(sweeper) {
  const box = $("sweeper");
  box.hidden = !sweeper || sweeper.healthy !== false;
  if (box.hidden) return;
  let last = "It has never run.";
  if (sweeper.last_run_at) {
    const minutes = Math.max(
      0,
      Math.floor((Date.now() - Date.parse(sweeper.last_run_at)) / 60_000),
    );
    const ago = minutes < 120
      ? `${minutes} min ago`
      : `${Math.floor(minutes / 60)} h ago`;
    last = `It last ran ${formatDate(sweeper.last_run_at)} (${ago}).`;
  }
  $("sweeper-last").textContent = last;
  $("sweeper-problem").hidden = !sweeper.problem;
  $("sweeper-problem-text").textContent = sweeper.problem || "";
  // The functions URL of the project this page is connected to.
  const functions = `${
    state.settings.supabase_url.replace(/\/+$/, "")
  }/functions/v1`;
  const quote = (s) => `'${s.replaceAll("'", "''")}'`;
  $("sweeper-secrets").textContent =
    `select vault.create_secret(${
      quote(functions)
    }, 'backup_functions_url');\n` +
    "select vault.create_secret('<secret key>', 'backup_service_key');";
}

// --- the history ---------------------------------------------------------------------

/** Re-reads the first page; at most one request at a time. */
function refreshHistory(opts = {}) {
  if (!state.client) return Promise.resolve();
  if (state.refreshing) {
    state.refreshAgain = true;
    return state.refreshing;
  }
  state.refreshing = (async () => {
    do {
      state.refreshAgain = false;
      try {
        const page = await state.client.listBackups({ limit: 20 });
        // Keep every row already shown that the new first page does not
        // hold: the older pages loaded, and the rows that new runs pushed
        // off the first page (the cursor still points past the last).
        const ids = new Set(page.runs.map((r) => r.dispatch_id));
        const older = state.runs.filter((r) => !ids.has(r.dispatch_id));
        state.runs = [...page.runs, ...older];
        if (!older.length) state.nextCursor = page.next_cursor;
        renderSweeper(page.sweeper);
        renderAlerts(page.notifications);
        renderHistory();
        renderChart();
        if (opts.followRunning && !state.watch) {
          const running = page.runs.find((r) => r.status === "in_progress");
          if (running) follow(running.dispatch_id);
        }
      } catch (error) {
        showError(error, "Loading the history");
        return;
      }
    } while (state.refreshAgain);
  })().finally(() => {
    state.refreshing = null;
  });
  return state.refreshing;
}

async function loadOlder() {
  if (!state.nextCursor) return;
  try {
    const page = await state.client.listBackups({
      limit: 20,
      cursor: state.nextCursor,
    });
    const ids = new Set(state.runs.map((r) => r.dispatch_id));
    state.runs.push(...page.runs.filter((r) => !ids.has(r.dispatch_id)));
    state.nextCursor = page.next_cursor;
    renderHistory();
    renderChart();
  } catch (error) {
    showError(error, "Loading older backups");
  }
}

/** What a failed verification found, for people. */
function verificationWarning(run) {
  const v = run.verification || {};
  const lines = [
    `Backup ${shortId(run.dispatch_id)} is stored, but its ${
      v.mode || ""
    } verification FAILED: ${v.error || "see the workflow run"}.`,
  ];
  for (const m of v.mismatches || []) {
    lines.push(
      `${m.table}: ${m.actual ?? "missing"} rows, expected ${m.expected}`,
    );
  }
  if (v.mismatches_omitted > 0) {
    lines.push(`and ${v.mismatches_omitted} more tables`);
  }
  return lines.join("\n");
}

function detailsCell(run) {
  if (run.status === "failed") {
    const label = FAILURE_REASONS[run.failure_reason] || run.failure_reason;
    if (!run.error_text) {
      return el(
        "td",
        { className: "details" },
        el("span", {
          className: "reason",
          text: label,
        }),
      );
    }
    return el(
      "td",
      { className: "details", title: run.error_text },
      el(
        "details",
        {},
        el("summary", {}, el("span", { className: "reason", text: label })),
        el("pre", { text: run.error_text }),
      ),
    );
  }
  if (run.status === "in_progress") {
    return el("td", { className: "details", text: `phase: ${run.phase}` });
  }
  const key = run.s3_key || "";
  if (run.verification_failed) {
    // The object exists, so the run is a success; but what was checked of
    // it did not hold, and that must not look like an ordinary success.
    return el(
      "td",
      { className: "details", title: key },
      el(
        "details",
        {},
        el(
          "summary",
          {},
          el("span", {
            className: "reason verification-failed",
            text: "Verification failed",
          }),
        ),
        el("pre", { text: verificationWarning(run) }),
      ),
    );
  }
  return el(
    "td",
    {
      className: "details muted",
      title: [key, run.sha256 ? `sha256 ${run.sha256}` : ""].filter(Boolean)
        .join("\n"),
    },
    el("span", { className: "key", text: key.split("/").pop() }),
    downloadButton(run),
  );
}

/**
 * A Download button when backup-status gave the run a link (a success
 * whose object still exists, on a server with download secrets). Each
 * click asks for a fresh link: one is valid for five minutes, and the
 * page may have been open for longer.
 */
function downloadButton(run) {
  if (!run.download_url) return "";
  const button = el("button", {
    className: "link download",
    type: "button",
    text: "Download",
    title: `Download ${run.s3_key} (a link valid for 5 minutes)`,
  });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const fresh = await state.client.getBackup(run.dispatch_id);
      if (!fresh.download_url) throw new Error("no download link any more");
      location.assign(fresh.download_url);
    } catch (error) {
      showError(error, "Downloading the backup");
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

function renderHistory() {
  const rows = state.runs.map((run) =>
    el(
      "tr",
      {
        id: `run-${run.dispatch_id}`,
        "data-dispatch-id": run.dispatch_id,
        "data-status": run.status,
      },
      el("td", {}, badge(run.status)),
      el("td", { text: formatDate(run.created_at), title: run.created_at }),
      el(
        "td",
        {},
        run.trigger_source,
        run.reason
          ? el("span", {
            className: "muted",
            text: ` · ${
              run.reason.length > 24
                ? run.reason.slice(0, 23) + "…"
                : run.reason
            }`,
            title: run.reason,
          })
          : "",
      ),
      detailsCell(run),
      el("td", {
        className: "num",
        text: run.status === "in_progress"
          ? "running"
          : formatDuration(run.duration_ms),
      }),
      el("td", {
        className: "num",
        text: formatBytes(run.size_bytes),
        title: run.size_bytes === null ? "" : `${run.size_bytes} bytes`,
      }),
      el(
        "td",
        {},
        run.run_url
          ? el("a", {
            href: run.run_url,
            target: "_blank",
            rel: "noopener",
            text: run.workflow_run_id ? `#${run.workflow_run_id}` : "run",
            title: run.run_attempt > 1 ? `attempt ${run.run_attempt}` : "",
          })
          : el("span", { className: "muted", text: "—" }),
      ),
    )
  );
  const body = $("history").tBodies[0];
  if (!rows.length) {
    rows.push(el(
      "tr",
      {},
      el("td", {
        colspan: 7,
        className: "muted",
        text: "No backups yet.",
      }),
    ));
  }
  body.replaceChildren(...rows);
  $("older").hidden = !state.nextCursor;
  // A stored object without a link: the server has no download secrets.
  $("download-hint").hidden = !state.runs.some((run) =>
    run.status === "success" && !run.pruned_at && !run.download_url
  );
}

function highlight(dispatchId) {
  for (const row of document.querySelectorAll("tr.highlight")) {
    row.classList.remove("highlight");
  }
  const row = document.getElementById(`run-${dispatchId}`);
  if (row) {
    row.classList.add("highlight");
    row.scrollIntoView({ block: "nearest" });
  }
}

// --- the chart ------------------------------------------------------------------------

/** Bars: size of each successful backup; line: its duration. Oldest left. */
function renderChart() {
  const box = $("chart");
  const points = state.runs
    .filter((r) => r.status === "success" && r.size_bytes !== null)
    .slice(0, 20)
    .reverse();
  if (points.length < 2) {
    box.replaceChildren(el("p", {
      className: "muted",
      text: "The chart appears after two successful backups.",
    }));
    return;
  }
  const W = 460;
  const H = 160;
  const left = 52;
  const right = 52;
  const top = 10;
  const bottom = 22;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const maxSize = Math.max(...points.map((p) => p.size_bytes), 1);
  const maxDuration = Math.max(...points.map((p) => p.duration_ms), 1);
  const step = plotW / points.length;
  const barW = Math.max(2, Math.min(22, step * 0.6));
  const nodes = [];
  for (const frac of [0, 0.5, 1]) {
    const y = top + plotH * (1 - frac);
    nodes.push(
      svg("line", {
        x1: left,
        x2: W - right,
        y1: y,
        y2: y,
        stroke: "#e4e7eb",
      }),
      svg("text", {
        x: left - 6,
        y: y + 4,
        "text-anchor": "end",
        "font-size": 10,
        fill: "#18794e",
      }, formatBytes(maxSize * frac)),
      svg("text", {
        x: W - right + 6,
        y: y + 4,
        "font-size": 10,
        fill: "#6e56cf",
      }, formatAxisDuration(maxDuration * frac)),
    );
  }
  const line = [];
  points.forEach((p, i) => {
    const cx = left + step * i + step / 2;
    const h = (p.size_bytes / maxSize) * plotH;
    const label = `${formatDate(p.created_at)}: ${formatBytes(p.size_bytes)}, ${
      formatDuration(p.duration_ms)
    }`;
    nodes.push(svg(
      "rect",
      {
        x: cx - barW / 2,
        y: top + plotH - h,
        width: barW,
        height: Math.max(1, h),
        rx: 2,
        fill: "#3ecf8e",
      },
      svg("title", {}, label),
    ));
    line.push([cx, top + plotH * (1 - p.duration_ms / maxDuration), label]);
  });
  nodes.push(svg("polyline", {
    points: line.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "),
    fill: "none",
    stroke: "#6e56cf",
    "stroke-width": 2,
    "stroke-linejoin": "round",
  }));
  for (const [x, y, label] of line) {
    nodes.push(svg(
      "circle",
      { cx: x, cy: y, r: 3, fill: "#6e56cf" },
      svg("title", {}, label),
    ));
  }
  nodes.push(
    svg("text", {
      x: left,
      y: H - 6,
      "font-size": 10,
      fill: "#687076",
    }, formatDate(points[0].created_at)),
    svg("text", {
      x: W - right,
      y: H - 6,
      "font-size": 10,
      fill: "#687076",
      "text-anchor": "end",
    }, formatDate(points[points.length - 1].created_at)),
  );
  const chart = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-label":
      `Size and duration of the last ${points.length} successful backups`,
  }, nodes);
  const legend = el(
    "div",
    { className: "legend" },
    el("span", {}, el("i", { style: "background:#3ecf8e" }), "size"),
    el("span", {}, el("i", { style: "background:#6e56cf" }), "duration"),
    el("span", { text: `last ${points.length} successful backups` }),
  );
  box.replaceChildren(chart, legend);
}

// --- alerts -------------------------------------------------------------------------

const ALERT_EVENTS = {
  failed: "Backup failed",
  verification_failed: "Verification failed",
  silence: "No successful backup",
  recovery: "Recovered",
  test: "Test",
};

const DELIVERY_LABELS = {
  pending: "Retrying",
  delivered: "Delivered",
  dead: "Gave up",
};

/** The outbox as the status API lists it, newest first. */
function renderAlerts(notifications) {
  const list = notifications || [];
  $("alerts-empty").hidden = list.length > 0;
  $("alerts").hidden = list.length === 0;
  const rows = list.map((n) =>
    el(
      "tr",
      {
        id: `alert-${n.id}`,
        "data-event": n.event,
        "data-status": n.status,
        title: `webhook-id ${n.webhook_id}`,
      },
      el(
        "td",
        {},
        el("span", {
          className: "badge",
          "data-status": n.status,
          text: DELIVERY_LABELS[n.status] || n.status,
        }),
      ),
      el("td", { text: ALERT_EVENTS[n.event] || n.event }),
      el("td", { text: formatDate(n.created_at), title: n.created_at }),
      el("td", { className: "key", text: n.destination }),
      el("td", { className: "num", text: String(n.attempts) }),
      el("td", {
        className: "details muted",
        text: n.status === "delivered"
          ? `at ${formatDate(n.delivered_at)}`
          : n.status === "pending"
          ? `${n.last_error || "not sent yet"}; next try ${
            formatDate(n.next_attempt_at)
          }`
          : n.last_error || "",
      }),
    )
  );
  $("alerts").querySelector("tbody").replaceChildren(...rows);
}

async function sendTestAlert() {
  if (!state.client) return;
  const button = $("test-alert");
  button.disabled = true;
  try {
    const result = await state.client.sendTestAlert();
    renderAlerts(result.notifications);
    const { delivered, retrying, dead } = result.sent;
    showMessage(
      retrying || dead ? "warn" : "info",
      `Test alert: ${delivered} delivered` +
        (retrying ? `, ${retrying} failed and will be retried` : "") +
        (dead ? `, ${dead} given up` : "") + ".",
    );
  } catch (error) {
    showError(error, "Sending a test alert");
  } finally {
    button.disabled = false;
  }
}

// --- start ------------------------------------------------------------------------------

async function main() {
  $("settings").addEventListener("submit", onSettingsSubmit);
  $("change-settings").addEventListener("click", () => showSettings(false));
  $("backup-now").addEventListener("click", backupNow);
  $("refresh").addEventListener("click", () => refreshHistory());
  $("older").addEventListener("click", loadOlder);
  $("test-alert").addEventListener("click", sendTestAlert);
  setInterval(() => {
    if (state.live && !isTerminal(state.live.run.status)) {
      $("live-elapsed").textContent = liveElapsed();
    }
  }, 1000);
  const settings = await loadSettings();
  if (settings) connect(settings);
  else showSettings();
  document.body.dataset.ready = "true";
}

main();
