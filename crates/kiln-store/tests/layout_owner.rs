//! The store's layout has one owner (`kiln_store::Layout`): no other source
//! file of the workspace spells a path under the store. A second spelling
//! is how GC came to miss a directory before; this keeps it from coming
//! back.

use std::fs;
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_the_layout_module_names_store_paths() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for krate in fs::read_dir(crates).unwrap().flatten() {
        let src = krate.path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    assert!(files.len() > 20, "found only {} sources", files.len());
    let mut offenders = Vec::new();
    for file in &files {
        if file.ends_with("kiln-store/src/layout.rs") {
            continue;
        }
        for (n, line) in fs::read_to_string(file).unwrap().lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            // A User-Agent `kiln/<version>` is a product token, not a path.
            let names_path = (code.contains("\"kiln/") && !code.contains("user_agent"))
                || code.contains("join(\"kiln\")");
            if names_path {
                offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "store paths spelt outside layout.rs:\n{}",
        offenders.join("\n")
    );
}
