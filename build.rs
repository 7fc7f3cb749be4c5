//! Copies `src/sql/*.sql` into `OUT_DIR` without their `--` comment lines,
//! and derives `run_columns.sql`: the select list of `select_run.sql`
//! without its `from`, so that the statements that write a run can return
//! it in the same shape (`... returning *) select <run_columns> from h`).
//!
//! The comments are for people reading the SQL; inside the WebAssembly
//! module they would only be bytes to download (about 1 KB gzipped).

use std::{env, fs, path::Path};

fn main() {
    let out = env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    println!("cargo:rerun-if-changed=src/sql");
    for entry in fs::read_dir("src/sql").expect("src/sql exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().is_some_and(|e| e == "sql") {
            let sql = fs::read_to_string(&path).expect("readable SQL file");
            let stripped: Vec<&str> = sql
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect();
            let name = path.file_name().expect("a file name");
            fs::write(Path::new(&out).join(name), stripped.join("\n") + "\n")
                .expect("writable OUT_DIR");
            if name == "select_run.sql" {
                let columns: Vec<&str> = stripped
                    .iter()
                    .copied()
                    .filter(|l| !l.trim_start().starts_with("from "))
                    .collect();
                fs::write(
                    Path::new(&out).join("run_columns.sql"),
                    columns.join("\n") + "\n",
                )
                .expect("writable OUT_DIR");
            }
        }
    }
}
