//! Replays the committed corpus of the `reader_query` fuzz target (fuzz/corpus/) through
//! the parameter parsing the reader's handlers call; no database is needed.

use std::path::Path;

#[path = "../../fuzz/src/reader_targets.rs"]
mod reader_targets;

#[test]
fn reader_query_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/reader_query");
    let mut n = 0;
    for entry in
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
    {
        let path = entry.expect("a directory entry").path();
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| reader_targets::reader_query(&bytes));
        assert!(outcome.is_ok(), "{} panics", path.display());
        n += 1;
    }
    // A missing or emptied corpus must fail, not pass having replayed nothing.
    assert!(n > 0, "{} holds no inputs", dir.display());
}
