// The host contract is generated from the Rust side (src/ports/wasm.rs, a
// typescript_custom_section typing `JsHost` as `Host`), and
// supabase/functions/_shared/core.ts implements it. These tests prove that
// `deno check` catches a drift: a copy of the host with one method changed
// no longer type-checks, while the unchanged copy does.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const CORE = "supabase/functions/_shared/core.ts";

/** Copies core.ts (after `edit`), db.ts and pkg/ into a temp tree and runs `deno check`. */
async function checkCopy(
  edit: (source: string) => string,
): Promise<{ code: number; output: string }> {
  const dir = await Deno.makeTempDir({ prefix: "host-contract-" });
  try {
    await Deno.mkdir(`${dir}/supabase/functions/_shared`, { recursive: true });
    for (const fn of Deno.readDirSync(`${ROOT}pkg`)) {
      await Deno.mkdir(`${dir}/pkg/${fn.name}`, { recursive: true });
      for (const entry of Deno.readDirSync(`${ROOT}pkg/${fn.name}`)) {
        await Deno.copyFile(
          `${ROOT}pkg/${fn.name}/${entry.name}`,
          `${dir}/pkg/${fn.name}/${entry.name}`,
        );
      }
    }
    await Deno.copyFile(
      `${ROOT}supabase/functions/_shared/db.ts`,
      `${dir}/supabase/functions/_shared/db.ts`,
    );
    const source = await Deno.readTextFile(`${ROOT}${CORE}`);
    await Deno.writeTextFile(`${dir}/${CORE}`, edit(source));
    // The project's config, so npm: packages resolve the way they do here.
    await Deno.copyFile(`${ROOT}deno.json`, `${dir}/deno.json`);
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["check", "--quiet", CORE],
      cwd: dir,
      env: { DENO_NO_UPDATE_CHECK: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const output = new TextDecoder().decode(r.stdout) +
      new TextDecoder().decode(r.stderr);
    return { code: r.code, output };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

Deno.test("deno check accepts core.ts as it is against the generated host contract", async () => {
  const r = await checkCopy((s) => s);
  assert.equal(r.code, 0, r.output);
});

Deno.test("deno check fails when core.ts's host stops matching the Rust host contract", async () => {
  const broken = "nowMs(): string {\n    return String(Date.now());";
  const r = await checkCopy((s) => {
    const edited = s.replace(
      "nowMs(): number {\n    return Date.now();",
      broken,
    );
    assert.notEqual(edited, s, "the edit applies to core.ts");
    return edited;
  });
  assert.notEqual(
    r.code,
    0,
    "deno check passed a host that breaks the contract",
  );
  assert.match(r.output, /nowMs/);
  assert.match(r.output, /Host/);
});
