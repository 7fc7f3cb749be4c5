//! Copies `src/sql/*.sql` into `OUT_DIR` without their `--` comment lines,
//! and derives `run_columns.sql`: the select list of `select_run.sql`
//! without its `from`, so that the statements that write a run can return
//! it in the same shape (`... returning *) select <run_columns> from h`).
//!
//! A line `\i name.sql` (psql's include) is replaced by that file, so that
//! a part two statements share is written once (`run_columns.sql` can be
//! included too).
//!
//! The comments are for people reading the SQL; inside the WebAssembly
//! module they would only be bytes to download (about 1 KB gzipped).

use std::{env, fs, path::Path};

/// The lines of `src/sql/<name>` without comments, includes expanded.
fn lines(name: &str) -> Vec<String> {
    if name == "run_columns.sql" {
        return lines("select_run.sql")
            .into_iter()
            .filter(|l| !l.trim_start().starts_with("from "))
            .collect();
    }
    let path = Path::new("src/sql").join(name);
    let sql = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("readable SQL file {}: {e}", path.display()));
    let mut out = Vec::new();
    for line in sql.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("--") {
            continue;
        }
        match trimmed.strip_prefix("\\i ") {
            Some(included) => out.extend(lines(included.trim())),
            None => out.push(line.to_string()),
        }
    }
    out
}

fn main() {
    let out = env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    println!("cargo:rerun-if-changed=src/sql");
    let mut names = vec!["run_columns.sql".to_string()];
    for entry in fs::read_dir("src/sql").expect("src/sql exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().is_some_and(|e| e == "sql") {
            let name = path.file_name().expect("a file name");
            names.push(name.to_string_lossy().into_owned());
        }
    }
    for name in names {
        fs::write(Path::new(&out).join(&name), lines(&name).join("\n") + "\n")
            .expect("writable OUT_DIR");
    }
}
