//! Every service reads its settings from `ACE_CONFIG_FILE` too, and refuses to start on a
//! name it does not read (a typo) or a name set both there and in the environment, naming
//! the file and the setting. (The SDF stack runs its writer from such a file.)

use std::process::Command;

fn bin(name: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_BIN_EXE_ace-sdf")).with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace's binaries (cargo build --workspace --bins)",
        p.display()
    );
    p
}

#[test]
fn services_refuse_a_settings_file_with_a_stranger_or_a_conflict() {
    let dir = std::env::temp_dir().join(ace_testkit::unique("ace-config-file-"));
    std::fs::create_dir_all(&dir).expect("dir");
    // What each service requires, so that reading its config gets as far as the file's
    // names (nothing is connected to: the config is refused first).
    let key = dir.join("ledger.key");
    let out = Command::new(bin("acectl"))
        .args([
            "ledger-key",
            "generate",
            "--origin",
            "config.test/log",
            "--out",
        ])
        .arg(&key)
        .output()
        .expect("acectl");
    let vkey = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let sinks = dir.join("sinks.toml");
    std::fs::write(&sinks, "[[sink]]\nname = \"j\"\nkind = \"nats\"\n").expect("sinks");
    let users = dir.join("users.toml");
    std::fs::write(&users, "").expect("users");
    let required = [
        (
            "ACE_DATABASE_URL",
            "postgres://nobody@127.0.0.1:1/none".to_string(),
        ),
        ("ACE_LEDGER_KEY_FILE", key.display().to_string()),
        ("ACE_LEDGER_VKEYS", vkey),
        ("ACE_DASHBOARD_USERS_FILE", users.display().to_string()),
        ("ACE_ANCHOR_SINKS_FILE", sinks.display().to_string()),
    ];
    let needs = |service: &str, var: &str| match var {
        "ACE_LEDGER_KEY_FILE" => service == "ace-writer",
        "ACE_LEDGER_VKEYS" => service == "ace-reader" || service == "ace-anchor",
        "ACE_DASHBOARD_USERS_FILE" => service == "ace-dashboard",
        "ACE_ANCHOR_SINKS_FILE" => service == "ace-anchor",
        _ => true,
    };
    for (service, listen) in [
        ("ace-writer", "ACE_WRITER_LISTEN"),
        ("ace-reader", "ACE_READER_LISTEN"),
        ("ace-anchor", "ACE_ANCHOR_LISTEN"),
        ("ace-dashboard", "ACE_DASHBOARD_LISTEN"),
    ] {
        // A misspelt setting (ACE_…_LISTN) beside a real one.
        let typo = dir.join(format!("{service}-typo.toml"));
        std::fs::write(
            &typo,
            format!("{listen} = \"127.0.0.1:1\"\n{listen}N = \"127.0.0.1:2\"\n"),
        )
        .expect("file");
        let run = |file: &std::path::Path, env: &[(&str, &str)]| {
            let mut cmd = Command::new(bin(service));
            cmd.env_clear().env("ACE_CONFIG_FILE", file);
            for (k, v) in required.iter().filter(|(k, _)| needs(service, k)) {
                cmd.env(k, v);
            }
            for (k, v) in env {
                cmd.env(k, v);
            }
            cmd.output().expect("run")
        };
        let out = run(&typo, &[]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && said.contains(&format!(
                    "ACE_CONFIG_FILE {}: {listen}N is not a setting of this service",
                    typo.display()
                )),
            "{service}: {said}"
        );
        // The same setting in the file and in the environment.
        let both = dir.join(format!("{service}-both.toml"));
        std::fs::write(&both, format!("{listen} = \"127.0.0.1:1\"\n")).expect("file");
        let out = run(&both, &[(listen, "127.0.0.1:2")]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && said.contains(&format!(
                    "{listen} is set both in the environment and in ACE_CONFIG_FILE"
                )),
            "{service}: {said}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
