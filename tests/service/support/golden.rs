//! Golden files: output pinned in `tests/golden/`, rewritten with `UPDATE_GOLDEN=1`.

use std::path::PathBuf;

/// Compares `actual` with `tests/golden/<directory>/<name>`, or writes it there with
/// `UPDATE_GOLDEN` set.
pub fn matches_golden(directory: &str, name: &str, actual: &str) {
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(directory);
    let path = directory.join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let golden = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: UPDATE_GOLDEN=1 writes it", path.display()));
    assert!(
        actual == golden,
        "the output differs from {} (a deliberate change: UPDATE_GOLDEN=1 cargo test golden):\n{actual}",
        path.display()
    );
}
