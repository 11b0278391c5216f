//! Replays the committed fuzz corpus (fuzz/corpus/<target>/) through the code each core
//! fuzz target runs, so that every input that once found a bug, and the coverage the
//! fuzzer reached, is checked on every test run without cargo-fuzz or a nightly compiler.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/core_targets.rs"]
mod core_targets;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (path, bytes)
        })
        .collect();
    // A missing or emptied corpus must fail, not pass having replayed nothing.
    assert!(!inputs.is_empty(), "{} holds no inputs", dir.display());
    inputs.sort();
    inputs
}

fn replay(target: &str, run: fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{target}: {} panics", path.display());
    }
}

#[test]
fn envelope_corpus() {
    replay("envelope", core_targets::envelope);
}

#[test]
fn statement_corpus() {
    replay("statement", core_targets::statement);
}

#[test]
fn checkpoint_corpus() {
    replay("checkpoint", core_targets::checkpoint);
}

#[test]
fn cosigned_note_corpus() {
    replay("cosigned_note", core_targets::cosigned_note);
}

#[test]
fn policy_corpus() {
    replay("policy", core_targets::policy);
}
