/**
 * scripts/build_workflow.ts: .github/workflows/backup.yml is generated from
 * workflow/, and --check catches a committed file that no longer is.
 */

import assert from "node:assert/strict";
import {
  expandTemplate,
  OUTPUT,
  sourceHash,
  TEMPLATE,
  WorkflowSourceError,
} from "../scripts/build_workflow.ts";
import { ROOT, run } from "./support/workflow_harness.ts";

const BUILD = `${ROOT}/scripts/build_workflow.ts`;

async function buildWorkflow(...args: string[]) {
  return await run(Deno.execPath(), [
    "run",
    "--allow-read",
    "--allow-write",
    BUILD,
    ...args,
  ]);
}

/** A copy of the generator's inputs and output, to break on purpose. */
async function copyOfSources(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "build-workflow-" });
  await Deno.mkdir(`${dir}/workflow`);
  await Deno.mkdir(`${dir}/.github/workflows`, { recursive: true });
  for (const e of Deno.readDirSync(`${ROOT}/workflow`)) {
    await Deno.copyFile(
      `${ROOT}/workflow/${e.name}`,
      `${dir}/workflow/${e.name}`,
    );
  }
  await Deno.copyFile(`${ROOT}/${OUTPUT}`, `${dir}/${OUTPUT}`);
  return dir;
}

const STALE =
  "build_workflow: .github/workflows/backup.yml is out of date with workflow/ " +
  "(first difference at line 1); run `deno task build:workflow` and commit it\n";

Deno.test("build_workflow --check accepts the committed backup.yml", async () => {
  const r = await buildWorkflow("--check");
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stdout,
    /^build_workflow: \.github\/workflows\/backup\.yml matches workflow\/ \(source-hash [0-9a-f]{16}\)\n$/,
  );
  const header = Deno.readTextFileSync(`${ROOT}/${OUTPUT}`).split("\n")[0];
  assert.equal(
    header,
    "# generated from workflow/ by scripts/build_workflow.ts — do not edit; " +
      `source-hash: ${r.stdout.match(/source-hash ([0-9a-f]{16})/)![1]}`,
  );
});

Deno.test("build_workflow --check fails once a script changes, and a rebuild carries the change into backup.yml", async () => {
  const dir = await copyOfSources();
  try {
    const script = `${dir}/workflow/upload_to_s3.sh`;
    const text = await Deno.readTextFile(script);
    await Deno.writeTextFile(
      script,
      text.replace('echo "Uploaded ', 'echo "Stored '),
    );
    const before = await Deno.readTextFile(`${dir}/${OUTPUT}`);

    const check = await buildWorkflow("--check", "--root", dir);
    assert.equal(check.code, 1, check.stdout);
    assert.equal(check.stderr, STALE);
    assert.equal(check.stdout, "");
    assert.equal(await Deno.readTextFile(`${dir}/${OUTPUT}`), before);

    const build = await buildWorkflow("--root", dir);
    assert.equal(build.code, 0, build.stderr);
    assert.match(build.stdout, /written \(source-hash [0-9a-f]{16}\)\n$/);
    const after = await Deno.readTextFile(`${dir}/${OUTPUT}`);
    assert.ok(after.includes('\n          echo "Stored s3://'));
    assert.ok(!after.includes('echo "Uploaded s3://'));
    assert.notEqual(after.split("\n")[0], before.split("\n")[0], "new hash");
    assert.equal(
      after.split("\n").slice(1).join("\n"),
      before.split("\n").slice(1).join("\n").replace(
        'echo "Uploaded ',
        'echo "Stored ',
      ),
      "nothing else changed",
    );
    assert.equal((await buildWorkflow("--check", "--root", dir)).code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("build_workflow exits 2 and names the script a template line includes but is missing", async () => {
  const dir = await copyOfSources();
  try {
    await Deno.remove(`${dir}/workflow/report_start.sh`);
    const r = await buildWorkflow("--check", "--root", dir);
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      /^build_workflow: workflow\/backup\.template\.yml:\d+: workflow\/report_start\.sh does not exist\n$/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// --- expandTemplate on its own --------------------------------------------------

function expand(template: string, files: Record<string, string>) {
  return expandTemplate(
    template,
    (path) => files[path] ?? null,
    Object.keys(files).sort(),
  );
}

function sourceError(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof WorkflowSourceError, String(e));
    return e.message;
  }
  assert.fail("no WorkflowSourceError");
}

Deno.test("expandTemplate indents an included script like its directive, keeps blank lines empty, drops # @@ notes", () => {
  const { body, inputs } = expand(
    "# @@ for maintainers only\n" +
      "steps:\n  - run: |\n      # @include workflow/a.sh\n  - run: |\n" +
      "      echo before\n      # @include workflow/b.sh\n",
    { "workflow/a.sh": "if x; then\n  y\n\nfi\n", "workflow/b.sh": "z\n" },
  );
  assert.equal(
    body,
    "steps:\n  - run: |\n      if x; then\n        y\n\n      fi\n" +
      "  - run: |\n      echo before\n      z\n",
  );
  assert.deepEqual(inputs.map((i) => i.path), [
    TEMPLATE,
    "workflow/a.sh",
    "workflow/b.sh",
  ]);
});

Deno.test("expandTemplate rejects a misspelt directive, an include outside workflow/, a repeated or unused script", () => {
  assert.equal(
    sourceError(() => expand("a\n  # @inclde workflow/a.sh\n", {})),
    `${TEMPLATE}:2: unknown directive "# @inclde workflow/a.sh" ` +
      '(only "# @include workflow/<name>.sh" and "# @@ note")',
  );
  assert.equal(
    sourceError(() => expand("# @include scripts/env.sh\n", {})),
    `${TEMPLATE}:1: can only include workflow/<name>.sh, not scripts/env.sh`,
  );
  assert.equal(
    sourceError(() =>
      expand("# @include workflow/a.sh\n# @include workflow/a.sh\n", {
        "workflow/a.sh": "x\n",
      })
    ),
    `${TEMPLATE}:2: workflow/a.sh is included twice`,
  );
  assert.equal(
    sourceError(() =>
      expand("# @include workflow/a.sh\n", {
        "workflow/a.sh": "x\n",
        "workflow/b.sh": "y\n",
      })
    ),
    `workflow/b.sh is not included by ${TEMPLATE}`,
  );
});

Deno.test("expandTemplate rejects a script a YAML block scalar would not give back unchanged", () => {
  const cases: [string, string][] = [
    ["x", "workflow/a.sh must end with a newline"],
    ["x\n\n", "workflow/a.sh must not end with blank lines"],
    ["  x\n", "workflow/a.sh must not start with whitespace or a blank line"],
    ["x\r\n", "workflow/a.sh contains a carriage return"],
  ];
  for (const [text, message] of cases) {
    assert.equal(
      sourceError(() =>
        expand("run: |\n  # @include workflow/a.sh\n", {
          "workflow/a.sh": text,
        })
      ),
      message,
    );
  }
});

Deno.test("sourceHash covers the file names as well as their text", async () => {
  const a = await sourceHash([{ path: "workflow/a.sh", text: "x\n" }]);
  assert.match(a, /^[0-9a-f]{16}$/);
  assert.notEqual(
    a,
    await sourceHash([{ path: "workflow/b.sh", text: "x\n" }]),
  );
  assert.notEqual(
    a,
    await sourceHash([{ path: "workflow/a.sh", text: "y\n" }]),
  );
});
