//! Every `ACE_*` setting the documentation names exists in the code.
//!
//! A doc names a setting as a token matching `ACE_[A-Z0-9_]*[A-Z0-9]` (not preceded by a
//! letter, digit or `_`, so `NAMESPACE_X` is no setting). The names the code knows are
//! every such token in the Rust sources of the crates, benches and test kit, and in the
//! scripts and the compose file that read settings of their own. A doc's name is known
//! if it is one of those, or is `X_FILE` for a known `X`: every setting read through
//! `ace_core::config::Env::get` has a `_FILE` form (core/src/config.rs). The JetStream
//! streams' default names (`ACE_INTAKE`, …), which nats/README.md lists, are known too:
//! core/src/nats.rs builds them from the prefix, so they are read from its calls.
//!
//! A misspelt or retired setting in a runbook sends an operator after a variable nothing
//! reads; this test names each one with its file and line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ace_testkit::{read_text as read, workspace_root as root};

/// Directories whose `*.rs` files (recursively) hold the names the code reads.
const CODE_DIRS: [&str; 10] = [
    "core/src",
    "writer/src",
    "reader/src",
    "anchor/src",
    "dashboard/src",
    "cli/src",
    "sdf/src",
    "testkit/src",
    "writer/benches",
    "reader/benches",
];

/// Directories whose `*.sh` files read settings of their own.
const SCRIPT_DIRS: [&str; 2] = ["scripts", "docker"];

/// One doc line naming a setting the code does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unknown {
    file: String,
    line: usize,
    name: String,
}

impl std::fmt::Display for Unknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.name)
    }
}

/// The files directly in `dir` whose name ends with `suffix`, sorted; none if `dir` is
/// absent.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    out.sort();
    out
}

/// Every `*.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'
}

/// Every token of `line` matching `ACE_[A-Z0-9_]*[A-Z0-9]` and not preceded by a letter,
/// digit or `_`, in order.
fn names_in(line: &str) -> Vec<&str> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = line[i..].find("ACE_") {
        let start = i + pos;
        let mut end = start + 4;
        while end < bytes.len() && is_name_byte(bytes[end]) {
            end += 1;
        }
        let token = line[start..end].trim_end_matches('_');
        let word_before =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if token.len() > 4 && !word_before {
            out.push(token);
        }
        i = end;
    }
    out
}

/// The names the code knows: every `ACE_*` token of its sources, scripts and compose file.
fn known_names(root: &Path) -> BTreeSet<String> {
    let mut files = Vec::new();
    for dir in CODE_DIRS {
        let dir = root.join(dir);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        } else {
            // A crate's sources must be there; benches are optional.
            assert!(
                dir.ends_with("benches"),
                "{} is missing: the test's list of code directories is stale",
                dir.display()
            );
        }
    }
    for dir in SCRIPT_DIRS {
        files.extend(files_ending(&root.join(dir), ".sh"));
    }
    let compose = root.join("docker-compose.yml");
    if compose.exists() {
        files.push(compose);
    }
    assert!(
        files.len() > 20,
        "only {} source files found under {}",
        files.len(),
        root.display()
    );
    let mut known = BTreeSet::new();
    for f in files {
        for line in read(&f).lines() {
            known.extend(names_in(line).into_iter().map(String::from));
        }
    }
    known.extend(stream_names(&read(&root.join("core/src/nats.rs"))));
    known
}

/// The JetStream streams' names under the default prefix `ace` (`ACE_INTAKE`, …): not
/// settings, but names the docs give in the same form. `Names::stream(suffix)` in
/// core/src/nats.rs makes each from the upper-cased prefix, so they are read from its
/// calls `self.stream("SUFFIX")`.
fn stream_names(nats_rs: &str) -> Vec<String> {
    let call = "self.stream(\"";
    let names: Vec<String> = nats_rs
        .match_indices(call)
        .filter_map(|(at, _)| {
            let rest = &nats_rs[at + call.len()..];
            let suffix = &rest[..rest.find('"')?];
            let plain = !suffix.is_empty() && suffix.bytes().all(is_name_byte);
            plain.then(|| format!("ACE_{suffix}"))
        })
        .collect();
    assert!(
        names.len() >= 4 && names.iter().any(|n| n == "ACE_INTAKE"),
        "core/src/nats.rs no longer names its streams with self.stream(\"…\"): {names:?}"
    );
    names
}

/// The docs that name settings, as (path relative to the root, text).
fn docs(root: &Path) -> Vec<(String, String)> {
    let mut paths = vec![root.join("README.md")];
    paths.extend(files_ending(&root.join("docs"), ".md"));
    paths.push(root.join("sdf/README.md"));
    paths.extend(files_ending(&root.join("pgbouncer"), ".md"));
    paths.push(root.join("nats/README.md"));
    paths
        .into_iter()
        .filter(|p| p.exists())
        .map(|p| {
            let rel = p
                .strip_prefix(root)
                .expect("a path under the root")
                .display()
                .to_string();
            let text = read(&p);
            (rel, text)
        })
        .collect()
}

fn is_known(name: &str, known: &BTreeSet<String>) -> bool {
    known.contains(name)
        || name
            .strip_suffix("_FILE")
            .is_some_and(|stem| known.contains(stem))
}

/// Every occurrence, in `docs`, of a setting `known` does not hold.
fn unknown_names(docs: &[(String, String)], known: &BTreeSet<String>) -> Vec<Unknown> {
    let mut out = Vec::new();
    for (file, text) in docs {
        for (n, line) in text.lines().enumerate() {
            for name in names_in(line) {
                if !is_known(name, known) {
                    out.push(Unknown {
                        file: file.clone(),
                        line: n + 1,
                        name: name.to_string(),
                    });
                }
            }
        }
    }
    out
}

#[test]
fn every_setting_the_docs_name_exists_in_the_code() {
    let root = root();
    let known = known_names(&root);
    let docs = docs(&root);
    let names: usize = docs
        .iter()
        .map(|(_, t)| t.lines().map(|l| names_in(l).len()).sum::<usize>())
        .sum();
    assert!(
        docs.iter().any(|(f, _)| f == "docs/operator.md") && names > 100,
        "the docs were not found, or name almost no setting ({names} names in {} files)",
        docs.len()
    );
    let unknown = unknown_names(&docs, &known);
    assert!(
        unknown.is_empty(),
        "{} setting name(s) in the docs that no code, script or compose file reads:\n{}",
        unknown.len(),
        unknown
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_check_names_an_unknown_setting_with_its_file_and_line() {
    let known = known_names(&root());
    assert!(known.contains("ACE_DATABASE_URL"), "{known:?}");
    assert!(!known.contains("ACE_NO_SUCH_SETTING"));
    let doc = "# A runbook\n\
               Set `ACE_DATABASE_URL` (or `ACE_DATABASE_URL_FILE`).\n\
               Then set `ACE_NO_SUCH_SETTING=1` and ACE_NO_SUCH_SETTING_FILE; NAMESPACE_X is no setting.\n\
               ACE_ alone and ACE_<NAME> are no names either.\n";
    let found = unknown_names(&[("docs/example.md".into(), doc.into())], &known);
    assert_eq!(
        found,
        vec![
            Unknown {
                file: "docs/example.md".into(),
                line: 3,
                name: "ACE_NO_SUCH_SETTING".into(),
            },
            Unknown {
                file: "docs/example.md".into(),
                line: 3,
                name: "ACE_NO_SUCH_SETTING_FILE".into(),
            },
        ]
    );
    assert_eq!(
        found[0].to_string(),
        "docs/example.md:3: ACE_NO_SUCH_SETTING"
    );
}

#[test]
fn tokens_are_read_as_the_pattern_says() {
    assert_eq!(
        names_in("`ACE_A_B_`, ${ACE_X1}, ACE_Y2=3 XACE_Z ACE__ ACE_lower ACE_B-ACE_C"),
        vec!["ACE_A_B", "ACE_X1", "ACE_Y2", "ACE_B", "ACE_C"]
    );
}
