// Browser tests' support: a tiny static server for web/ (the paths `deno task
// dev` serves: `/` → web/demo/index.html, `/demo/*` → web/demo/*, `/*.js` →
// web/*.js, plus `GET /dev/session`), and headless Chromium driven by
// playwright-core (Debian's /usr/bin/chromium: this machine cannot download
// a browser build).

// deno-lint-ignore no-import-prefix
import { type Browser, chromium } from "npm:playwright-core@1.65.1";
import type { Json } from "./stack.ts";

export type { Browser };

/** Debian's Chromium, the only browser the tests use. */
export const CHROMIUM = "/usr/bin/chromium";

const WEB = new URL("../../web/", import.meta.url);

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  svg: "image/svg+xml",
  png: "image/png",
  json: "application/json",
};

/** Why the browser tests cannot run here, or null when they can. */
export function chromiumMissing(): string | null {
  try {
    const info = Deno.statSync(CHROMIUM);
    return info.isFile ? null : `${CHROMIUM} is not a file`;
  } catch {
    return `${CHROMIUM} is missing (apt-get install chromium)`;
  }
}

/** Starts headless Chromium with the flags this sandbox needs. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--headless",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

export interface WebServer {
  /** Base URL (the page's origin), e.g. http://127.0.0.1:PORT */
  url: string;
  /** What GET /dev/session answers; null → 404 (no dev session). */
  session: Json | null;
  /** Paths requested so far. */
  requests: string[];
  close(): Promise<void>;
}

/** The file under web/ for a request path, or null. */
export function webFile(pathname: string): URL | null {
  if (pathname === "/" || pathname === "/index.html") {
    return new URL("demo/index.html", WEB);
  }
  if (pathname.includes("..") || pathname.includes("\\")) return null;
  const demo = /^\/demo\/([A-Za-z0-9_.-]+)$/.exec(pathname);
  if (demo) return new URL(`demo/${demo[1]}`, WEB);
  if (pathname === "/demo" || pathname === "/demo/") {
    return new URL("demo/index.html", WEB);
  }
  const js = /^\/([A-Za-z0-9_-]+\.js)$/.exec(pathname);
  if (js) return new URL(js[1], WEB);
  return null;
}

/** Serves web/ and /dev/session on 127.0.0.1 (a free port). */
export function serveWeb(session: Json | null = null): WebServer {
  const requests: string[] = [];
  const server: WebServer = {
    url: "",
    session,
    requests,
    close: () => httpServer.shutdown(),
  };
  const httpServer = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      const { pathname } = new URL(req.url);
      requests.push(pathname);
      if (req.method !== "GET" && req.method !== "HEAD") {
        return new Response("method not allowed", { status: 405 });
      }
      if (pathname === "/dev/session") {
        return server.session === null
          ? new Response("not found", { status: 404 })
          : Response.json(server.session, {
            headers: { "cache-control": "no-store" },
          });
      }
      const file = webFile(pathname);
      if (!file) return new Response("not found", { status: 404 });
      try {
        const body = await Deno.readFile(file);
        const ext = file.pathname.split(".").pop() ?? "";
        return new Response(body, {
          headers: {
            "content-type": TYPES[ext] ?? "application/octet-stream",
            "cache-control": "no-store",
          },
        });
      } catch {
        return new Response("not found", { status: 404 });
      }
    },
  );
  server.url = `http://127.0.0.1:${httpServer.addr.port}`;
  return server;
}
