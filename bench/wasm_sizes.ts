// Where the WebAssembly bytes go: code size per crate (and per module of
// this crate), read from a wasm file's code section and its `name` section,
// in the manner of `cargo bloat` or `twiggy top`.
//
//   deno run --allow-read bench/wasm_sizes.ts [FILE.wasm] [--top N]
//
// FILE defaults to the release build before wasm-bindgen and wasm-opt
// (target/wasm32-unknown-unknown/release/backup_core.wasm), which still has
// its function names; the shares carry over to the optimised module.

const DEFAULT_FILE = "target/wasm32-unknown-unknown/release/backup_core.wasm";

class Reader {
  pos = 0;
  constructor(readonly bytes: Uint8Array) {}
  u8(): number {
    return this.bytes[this.pos++];
  }
  leb(): number {
    let result = 0;
    let shift = 0;
    while (true) {
      const b = this.u8();
      result += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (b < 0x80) return result;
    }
  }
  name(): string {
    const len = this.leb();
    const s = new TextDecoder().decode(
      this.bytes.subarray(this.pos, this.pos + len),
    );
    this.pos += len;
    return s;
  }
}

/**
 * The path of a Rust symbol, crate first. Handles legacy mangling
 * (`_ZN4core3fmt5write17h…E`, with `_<T as Trait>` impl segments) and v0
 * (`_RNv…Cs…_4core…`): good enough to group by crate, not a full demangler.
 */
export function demangle(name: string): string[] {
  if (/^_?_R/.test(name)) {
    // v0: crate roots are `C<disambiguator>_<len><ident>`; take the first.
    const m = /C[0-9A-Za-z]*_(\d+)/.exec(name);
    if (m) {
      const at = m.index + m[0].length;
      return [name.slice(at, at + Number(m[1])), ""];
    }
    return [name];
  }
  const m = /^_?_ZN(.*)E$/.exec(name);
  if (!m) return [name];
  const parts: string[] = [];
  let rest = m[1];
  while (rest.length) {
    const len = /^(\d+)/.exec(rest);
    if (!len) break;
    const n = Number(len[1]);
    parts.push(rest.slice(len[1].length, len[1].length + n));
    rest = rest.slice(len[1].length + n);
  }
  const decoded = parts.map((p) =>
    p.replaceAll("$LT$", "<").replaceAll("$GT$", ">").replaceAll("$RF$", "&")
      .replaceAll("$u20$", " ").replaceAll("$C$", ",").replaceAll("..", "::")
  );
  // `<&mut serde_json::de::Deserializer<R> as serde::de::Deserializer>`:
  // the implementing type's crate.
  if (decoded[0]?.startsWith("_<") || decoded[0]?.startsWith("<")) {
    const inner = /([a-z_][a-z0-9_]*)::/.exec(
      decoded[0].replace(/\b(?:mut|impl|dyn) /g, ""),
    );
    if (inner) decoded[0] = inner[1];
  }
  return decoded;
}

/** The crate a function belongs to, and for ours, the module. */
export function group(path: string[]): string {
  const first = path[0] ?? "?";
  if (first === "backup_core" && path[1]) return `backup_core::${path[1]}`;
  return first;
}

export interface Breakdown {
  total: number;
  groups: [string, number][];
}

/** Code bytes per group, largest first. */
export function breakdown(bytes: Uint8Array): Breakdown {
  const r = new Reader(bytes);
  r.pos = 8;
  let imported = 0;
  const bodies: number[] = [];
  const names = new Map<number, string>();
  while (r.pos < bytes.length) {
    const id = r.u8();
    const size = r.leb();
    const end = r.pos + size;
    if (id === 2) {
      const count = r.leb();
      for (let i = 0; i < count; i++) {
        r.name();
        r.name();
        const kind = r.u8();
        if (kind === 0) {
          r.leb();
          imported++;
        } else if (kind === 1) {
          r.u8();
          const flags = r.u8();
          r.leb();
          if (flags & 1) r.leb();
        } else if (kind === 2) {
          const flags = r.u8();
          r.leb();
          if (flags & 1) r.leb();
        } else {
          r.u8();
          r.u8();
        }
      }
    } else if (id === 10) {
      const count = r.leb();
      for (let i = 0; i < count; i++) {
        const len = r.leb();
        bodies.push(len);
        r.pos += len;
      }
    } else if (id === 0) {
      const name = r.name();
      if (name === "name") {
        while (r.pos < end) {
          const sub = r.u8();
          const subSize = r.leb();
          const subEnd = r.pos + subSize;
          if (sub === 1) {
            const count = r.leb();
            for (let i = 0; i < count; i++) {
              const index = r.leb();
              names.set(index, r.name());
            }
          }
          r.pos = subEnd;
        }
      }
    }
    r.pos = end;
  }
  const sums = new Map<string, number>();
  let total = 0;
  bodies.forEach((len, i) => {
    const name = names.get(imported + i) ?? "(unnamed)";
    const g = group(demangle(name));
    sums.set(g, (sums.get(g) ?? 0) + len);
    total += len;
  });
  return {
    total,
    groups: [...sums.entries()].sort((a, b) => b[1] - a[1]),
  };
}

if (import.meta.main) {
  const args = [...Deno.args];
  const topAt = args.indexOf("--top");
  const top = topAt >= 0 ? Number(args.splice(topAt, 2)[1]) : 20;
  const file = args[0] ?? DEFAULT_FILE;
  const b = breakdown(Deno.readFileSync(file));
  console.log(
    `code section of ${file}: ${b.total.toLocaleString("en-US")} bytes`,
  );
  for (const [g, n] of b.groups.slice(0, top)) {
    console.log(
      `${(100 * n / b.total).toFixed(1).padStart(5)}%  ${
        n.toLocaleString("en-US").padStart(9)
      }  ${g}`,
    );
  }
}
