//! The SDF harness end to end: `ace-sdf` starts its own stack (fresh database, private
//! nats-server with the rendered ACLs, the four services as processes) and runs
//! sdf/sdf.yml; every scenario must pass. And it must be able to fail: a file of wrong
//! expectations fails each of them, naming the step and why.

use std::process::Command;

fn ace_sdf(file: &str) -> (i32, String) {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_ace-sdf"));
    let out = Command::new(&exe)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--file", file])
        .output()
        .expect("running ace-sdf");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn every_scenario_of_sdf_yml_passes_against_a_live_stack() {
    let file = ace_sdf::SdfFile::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sdf.yml"
    )))
    .expect("sdf.yml");
    let (code, out) = ace_sdf("sdf.yml");
    println!("{out}");
    let want = format!("{} passed, 0 failed", file.scenarios.len());
    assert!(
        code == 0 && out.trim_end().ends_with(&want),
        "exit {code}, expected `{want}`:\n{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        file.scenarios.len()
    );
}

#[test]
fn wrong_expectations_fail_naming_the_step() {
    let (code, out) = ace_sdf("tests/failing.yml");
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    assert!(out.trim_end().ends_with("1 passed, 4 failed"), "{out}");
    // A failed run keeps the stack's directory for the operator; the test removes it.
    if let Some(dir) = out
        .lines()
        .find_map(|l| l.strip_prefix("the stack's logs, keys and configs are kept in "))
    {
        let _ = std::fs::remove_dir_all(dir.trim());
    }
    for why in [
        "step 1 (publish): envelope 1 of 1 (stream seq",
        "expected ack accepted, got rejected (malformed_envelope:",
        "step 1 (refuse_publish): acme published to",
        "step 1 (refuse_sql): ace_writer was allowed: SELECT 1 FROM dlq_items LIMIT 0",
        "step 2 (reader): GET /v1/entries/",
        ".producer: expected \"beta\", found \"acme\"",
    ] {
        assert!(out.contains(why), "missing {why:?} in:\n{out}");
    }
}
