//! The repository's own files, for tests that check them against the code (the compose
//! file, the docs' setting names).

use std::path::{Path, PathBuf};

/// The workspace root (testkit's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A text file of the repository.
///
/// # Panics
/// When it cannot be read: the test that needs it must fail, naming it.
pub fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
