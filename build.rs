//! Copies `src/sql/*.sql` into `OUT_DIR` without their `--` comment lines.
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
        }
    }
}
