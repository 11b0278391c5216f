//! `acectl db provision` on a private Postgres (it sets passwords and connection limits on
//! cluster-wide roles, which the shared server's parallel tests must never see).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use ace_testkit::PgServer;

fn provision(dsn: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_acectl"))
        .args(["db", "provision"])
        .args(args)
        .env("ACE_DATABASE_URL", dsn)
        .env_remove("ACE_DATABASE_URL_FILE")
        .output()
        .expect("running acectl")
}

fn stdout_ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "acectl db provision failed ({:?}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn line<'a>(out: &'a str, role: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{role}:")))
        .unwrap_or_else(|| panic!("no line for {role} in:\n{out}"))
}

fn write_password(dir: &Path, role: &str, pw: &str) {
    let f = dir.join(format!("{role}.password"));
    std::fs::write(&f, format!("{pw}\n")).expect("password file");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

const ROLES: [&str; 5] = ace_core::db::ROLES;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_sets_passwords_limits_and_grants_and_a_second_run_changes_nothing() {
    let pg = PgServer::start();
    let root = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
    let admin = ace_core::db::connect(&root).await.expect("private server");
    // Every statement into the server log: the plaintext passwords must not be there.
    for sql in [
        "CREATE DATABASE ace",
        "ALTER SYSTEM SET log_statement = 'all'",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(sql).await.expect(sql);
    }
    let dsn = format!("postgres://postgres@127.0.0.1:{}/ace", pg.port);
    let dir = pg.dir.join("secrets");
    std::fs::create_dir_all(&dir).expect("dir");
    let passwords: Vec<String> = ROLES
        .iter()
        .map(|r| format!("pw-{r}-{}", ace_testkit::unique("")))
        .collect();
    for (role, pw) in ROLES.iter().zip(&passwords) {
        write_password(&dir, role, pw);
    }
    let dir_s = dir.to_str().expect("utf-8 path");

    // A world-readable file is refused, naming it, before anything changes.
    std::fs::set_permissions(
        dir.join("ace_reader.password"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let o = provision(&dsn, &["--password-dir", dir_s]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("ace_reader.password") && err.contains("every user"),
        "{err}"
    );
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'ace\\_%'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "a refused run created roles");
    std::fs::set_permissions(
        dir.join("ace_reader.password"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");

    let first = stdout_ok(&provision(&dsn, &["--password-dir", dir_s]));
    println!("first run:\n{first}");
    for role in ROLES {
        let l = line(&first, role);
        assert!(l.contains("created") && l.contains("password set"), "{l}");
    }
    assert!(line(&first, "ace_writer").contains("connection limit 10 (was -1)"));
    assert!(
        first.contains("schema and grants: applied V1__log"),
        "{first}"
    );

    // Stored: SCRAM verifiers and the limits; in the output and the server log, no password.
    for (role, pw) in ROLES.iter().zip(&passwords) {
        let r = admin
            .query_one(
                "SELECT rolpassword, rolconnlimit FROM pg_authid WHERE rolname = $1",
                &[role],
            )
            .await
            .expect("role");
        let verifier: String = r.get(0);
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{role}");
        assert!(!first.contains(pw) && !first.contains(&verifier));
    }
    let limits: Vec<(String, i32)> = admin
        .query(
            "SELECT rolname::text, rolconnlimit FROM pg_roles WHERE rolname LIKE 'ace\\_%' ORDER BY 1",
            &[],
        )
        .await
        .expect("limits")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        limits,
        [
            ("ace_anchor", 10),
            ("ace_dashboard", 20),
            ("ace_owner", 5),
            ("ace_reader", 40),
            ("ace_writer", 10)
        ]
        .map(|(r, n)| (r.to_string(), n))
    );

    // Passwords now matter: password auth for the ace_* roles over TCP.
    let hba = pg.dir.join("data/pg_hba.conf");
    std::fs::write(
        &hba,
        "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )
    .expect("pg_hba.conf");
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .expect("reload");
    for (role, pw) in ROLES.iter().zip(&passwords).skip(1) {
        let url = format!("postgres://{role}:{pw}@127.0.0.1:{}/ace", pg.port);
        let c = ace_core::db::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{role} with its password: {e}"));
        let me: String = c
            .query_one("SELECT current_user::text", &[])
            .await
            .expect("q")
            .get(0);
        assert_eq!(&me, role);
        let bad = format!("postgres://{role}:wrong@127.0.0.1:{}/ace", pg.port);
        let e = ace_core::db::connect(&bad)
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("password authentication failed")),
            "{role} with a wrong password: {e:?}"
        );
    }

    // Idempotent: a second run changes nothing, and says so.
    let second = stdout_ok(&provision(&dsn, &["--password-dir", dir_s]));
    println!("second run:\n{second}");
    for role in ROLES {
        let l = line(&second, role);
        assert!(
            l.starts_with(&format!("{role}: unchanged (")) && l.contains("password"),
            "{l}"
        );
    }
    assert!(second.contains("schema and grants: up to date"), "{second}");

    // One password and one limit changed: only those are touched.
    write_password(&dir, "ace_reader", "a new one");
    let third = stdout_ok(&provision(
        &dsn,
        &["--password-dir", dir_s, "--writer-connections", "3"],
    ));
    println!("third run:\n{third}");
    assert!(
        line(&third, "ace_reader").starts_with("ace_reader: password set"),
        "{third}"
    );
    assert!(
        line(&third, "ace_writer").contains("connection limit 3 (was 10)"),
        "{third}"
    );
    assert!(line(&third, "ace_anchor").contains("unchanged"), "{third}");

    // Certificate auth: passwords removed, then nothing to remove.
    let cert = stdout_ok(&provision(
        &dsn,
        &["--cert-auth", "--writer-connections", "3"],
    ));
    println!("cert run:\n{cert}");
    for role in ROLES {
        assert!(
            line(&cert, role).contains("password removed (certificate auth)"),
            "{cert}"
        );
    }
    let again = stdout_ok(&provision(
        &dsn,
        &["--cert-auth", "--writer-connections", "3"],
    ));
    for role in ROLES {
        assert!(line(&again, role).contains("unchanged"), "{again}");
    }
    let with_pw: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_authid WHERE rolname LIKE 'ace\\_%' AND rolpassword IS NOT NULL",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(with_pw, 0);

    let log = std::fs::read_to_string(pg.dir.join("postgres.log")).expect("server log");
    assert!(
        log.contains("ALTER ROLE"),
        "statements are not being logged"
    );
    for pw in passwords.iter().map(String::as_str).chain(["a new one"]) {
        assert!(
            !log.contains(pw),
            "a plaintext password reached the server log"
        );
    }
}
