//! The Prometheus alert rules shipped for the dashboard's gauges
//! (`prometheus/ace-alerts.yml`): `promtool check rules` accepts them and their unit tests
//! (`prometheus/ace-alerts.test.yml`) pass: each alert fires on a series that crosses its
//! threshold for long enough and not on one that does not. Needs only promtool, never the
//! dashboard itself.

use std::path::PathBuf;
use std::process::Command;

fn prometheus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("prometheus")
}

/// Runs `promtool args…` in the workspace's prometheus/ folder; panics with promtool's
/// output unless it succeeds.
fn promtool(args: &[&str]) {
    let dir = prometheus_dir();
    let out = match Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed (not on PATH): install Debian package prometheus \
             (`apt-get install --no-install-recommends prometheus`, as scripts/services.sh does)"
        ),
        Err(e) => panic!("running promtool {}: {e}", args.join(" ")),
    };
    assert!(
        out.status.success(),
        "promtool {} (in {}) failed with {}:\n{}{}",
        args.join(" "),
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_check() {
    promtool(&["check", "rules", "ace-alerts.yml"]);
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    promtool(&["test", "rules", "ace-alerts.test.yml"]);
}
