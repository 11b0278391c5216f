//! The code each fuzz target runs. The two modules are also compiled into the corpus
//! replay tests (core/tests/fuzz_corpus.rs, reader/tests/fuzz_corpus.rs) by `#[path]`, so a
//! replayed input runs exactly what was fuzzed.

pub mod core_targets;
pub mod reader_targets;
