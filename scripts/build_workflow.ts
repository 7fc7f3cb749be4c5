// Writes .github/workflows/backup.yml from workflow/: the template
// workflow/backup.template.yml with every `# @include workflow/<name>.sh`
// line replaced by that file, indented like the directive.
//
//   deno task build:workflow          regenerate .github/workflows/backup.yml
//   deno task build:workflow:check    fail if the committed file differs
//   ... scripts/build_workflow.ts [--check] [--root DIR]
//
// The workflow stays one self-contained file that users copy (no checkout,
// no `uses:`), while its bash lives in real files that shellcheck reads and
// the tests source. --check (run by scripts/test.sh) keeps the two in step,
// as scripts/build_wasm.sh --check does for pkg/. Exit status: 0 fine,
// 1 the output is out of date, 2 the inputs are invalid.
//
// Template-only lines start with `# @@` (dropped from the output); any other
// `# @word` line in the template is an error, so a misspelt directive cannot
// end up in the workflow as a comment.

import { fileURLToPath } from "node:url";

export const TEMPLATE = "workflow/backup.template.yml";
export const OUTPUT = ".github/workflows/backup.yml";
const SCRIPT_DIR = "workflow";
const INCLUDE = /^( *)# @include (\S+)$/;
const DIRECTIVE = /^\s*# @/;
const TEMPLATE_NOTE = /^\s*# @@/;
const SCRIPT_PATH = /^workflow\/[a-z0-9_]+\.sh$/;

/** A problem with the inputs, reported with its file and line. */
export class WorkflowSourceError extends Error {}

export interface Expanded {
  /** The workflow without its header. */
  body: string;
  /** The template, then each included script in order: what the hash covers. */
  inputs: { path: string; text: string }[];
}

/**
 * Expands the template. `read` returns a script's text or null when there
 * is no such file; `scripts` lists the workflow/*.sh files, each of which
 * must be included exactly once (a script that is tested and shellchecked
 * but never shipped would be a lie).
 *
 * # Errors
 * Throws WorkflowSourceError for an unknown directive, an include outside
 * workflow/*.sh, a missing, repeated or unused script, or a script whose
 * text cannot round-trip through a YAML block scalar (indented first line,
 * missing final newline, trailing blank lines, a carriage return).
 */
export function expandTemplate(
  template: string,
  read: (path: string) => string | null,
  scripts: string[],
): Expanded {
  const inputs = [{ path: TEMPLATE, text: template }];
  const out: string[] = [];
  const lines = template.split("\n");
  if (lines.at(-1) === "") lines.pop();
  for (const [i, line] of lines.entries()) {
    const where = `${TEMPLATE}:${i + 1}`;
    if (TEMPLATE_NOTE.test(line)) continue;
    const m = INCLUDE.exec(line);
    if (!m) {
      if (DIRECTIVE.test(line)) {
        throw new WorkflowSourceError(
          `${where}: unknown directive ${
            JSON.stringify(line.trim())
          } (only "# @include workflow/<name>.sh" and "# @@ note")`,
        );
      }
      out.push(line);
      continue;
    }
    const [, indent, path] = m;
    if (!SCRIPT_PATH.test(path)) {
      throw new WorkflowSourceError(
        `${where}: can only include workflow/<name>.sh, not ${path}`,
      );
    }
    if (inputs.some((input) => input.path === path)) {
      throw new WorkflowSourceError(`${where}: ${path} is included twice`);
    }
    const text = read(path);
    if (text === null) {
      throw new WorkflowSourceError(`${where}: ${path} does not exist`);
    }
    checkScript(path, text);
    inputs.push({ path, text });
    for (const l of text.slice(0, -1).split("\n")) {
      out.push(l === "" ? "" : indent + l);
    }
  }
  const unused = scripts.filter((s) => !inputs.some((i) => i.path === s));
  if (unused.length) {
    throw new WorkflowSourceError(
      `${unused.join(", ")} ${
        unused.length > 1 ? "are" : "is"
      } not included by ${TEMPLATE}`,
    );
  }
  return { body: out.join("\n") + "\n", inputs };
}

// A `run: |` block scalar gives the step exactly the script only if these hold.
function checkScript(path: string, text: string) {
  const problem = text.includes("\r")
    ? "contains a carriage return"
    : !text.endsWith("\n")
    ? "must end with a newline"
    : text.endsWith("\n\n")
    ? "must not end with blank lines"
    : /^\s/.test(text)
    ? "must not start with whitespace or a blank line"
    : null;
  if (problem) throw new WorkflowSourceError(`${path} ${problem}`);
}

/** The first 16 hex digits of the SHA-256 of every input, names included. */
export async function sourceHash(
  inputs: { path: string; text: string }[],
): Promise<string> {
  const all = inputs.map((i) => `${i.path}\0${i.text}\0`).join("");
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(all),
  );
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0"))
    .join("").slice(0, 16);
}

/**
 * The workflow as it should be committed, built from the files under `root`.
 *
 * # Errors
 * Throws WorkflowSourceError as expandTemplate does, or when the template
 * cannot be read.
 */
export async function renderWorkflow(
  root: string,
): Promise<{ text: string; hash: string }> {
  const readOrNull = (path: string) => {
    try {
      return Deno.readTextFileSync(`${root}/${path}`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
  };
  const template = readOrNull(TEMPLATE);
  if (template === null) {
    throw new WorkflowSourceError(`${TEMPLATE} does not exist`);
  }
  const scripts = [...Deno.readDirSync(`${root}/${SCRIPT_DIR}`)]
    .filter((e) => e.isFile && e.name.endsWith(".sh"))
    .map((e) => `${SCRIPT_DIR}/${e.name}`)
    .sort();
  const { body, inputs } = expandTemplate(template, readOrNull, scripts);
  const hash = await sourceHash(inputs);
  const header =
    `# generated from workflow/ by scripts/build_workflow.ts — do not edit; source-hash: ${hash}\n` +
    `# (in the repository, edit ${TEMPLATE} or workflow/*.sh and run \`deno task build:workflow\`)\n\n`;
  return { text: header + body, hash };
}

/** The 1-based number of the first line where a and b differ. */
function firstDifference(a: string, b: string): number {
  const al = a.split("\n");
  const bl = b.split("\n");
  let i = 0;
  while (i < al.length && i < bl.length && al[i] === bl[i]) i++;
  return i + 1;
}

async function main(args: string[]): Promise<number> {
  let check = false;
  let root = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--check") check = true;
    else if (args[i] === "--root" && i + 1 < args.length) root = args[++i];
    else {
      console.error(
        `build_workflow: unknown argument ${args[i]}\n` +
          "usage: build_workflow.ts [--check] [--root DIR]",
      );
      return 2;
    }
  }
  let rendered;
  try {
    rendered = await renderWorkflow(root);
  } catch (e) {
    if (!(e instanceof WorkflowSourceError)) throw e;
    console.error(`build_workflow: ${e.message}`);
    return 2;
  }
  const { text, hash } = rendered;
  let committed: string | null = null;
  try {
    committed = await Deno.readTextFile(`${root}/${OUTPUT}`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (check) {
    if (committed === text) {
      console.log(
        `build_workflow: ${OUTPUT} matches workflow/ (source-hash ${hash})`,
      );
      return 0;
    }
    const where = committed === null
      ? "it does not exist"
      : `first difference at line ${firstDifference(committed, text)}`;
    console.error(
      `build_workflow: ${OUTPUT} is out of date with workflow/ (${where}); ` +
        "run `deno task build:workflow` and commit it",
    );
    return 1;
  }
  if (committed === text) {
    console.log(`build_workflow: ${OUTPUT} unchanged (source-hash ${hash})`);
  } else {
    await Deno.mkdir(`${root}/${OUTPUT.replace(/\/[^/]*$/, "")}`, {
      recursive: true,
    });
    await Deno.writeTextFile(`${root}/${OUTPUT}`, text);
    console.log(`build_workflow: ${OUTPUT} written (source-hash ${hash})`);
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
