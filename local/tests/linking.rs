//! Each Lambda links only what it uses: the dependency tree of every function, resolved on its
//! own (as `cargo lambda build -p NAME` does), holds exactly the heavy crates it should.

mod common;

use std::process::Command;

/// The heavy crates a function may link; anything else of DuckDB, Polars or Tantivy is a defect.
fn allowed(function: &str) -> &'static [&'static str] {
    match function {
        "analytics" | "snapshot" => &["duckdb"],
        "process" | "pg-benchmark" => &["polars"],
        "search" | "indexer" => &["tantivy"],
        _ => &[],
    }
}

#[test]
fn no_function_links_a_heavy_crate_it_does_not_use() {
    let root = common::repo_root();
    let mut functions: Vec<String> = std::fs::read_dir(root.join("functions"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    functions.sort();
    assert!(functions.len() >= 2, "{functions:?}");
    for f in &functions {
        let out = Command::new(env!("CARGO"))
            .args(["tree", "-p", f, "-e", "normal", "--prefix", "none", "-f", "{p}"])
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo tree -p {f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree = String::from_utf8_lossy(&out.stdout);
        let linked: Vec<&str> = ["duckdb", "polars", "tantivy"]
            .into_iter()
            .filter(|heavy| tree.lines().any(|l| l.split_whitespace().next() == Some(heavy)))
            .collect();
        let want = allowed(f);
        assert_eq!(linked, want, "{f} links {linked:?}, but should link exactly {want:?}");
        assert!(
            !(linked.contains(&"duckdb") && linked.contains(&"polars")),
            "{f} links both DuckDB and Polars"
        );
    }
}
