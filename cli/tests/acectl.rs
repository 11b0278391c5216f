//! acectl end to end on the real Postgres and NATS: set up a ledger from nothing with the
//! CLI alone, then sign, publish and revoke against a running writer.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use ace_core::checkpoint::{NoteSigner, NoteVerifier};
use ace_core::envelope::Envelope;
use rand::Rng;

const ADMIN: &str = "postgres://postgres@127.0.0.1:5432";

fn acectl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_acectl"));
    c.args(args)
        .env_remove("ACE_DATABASE_URL")
        .env_remove("ACE_PREFIX");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running acectl")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "acectl failed ({:?}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

struct Db(String);
impl Drop for Db {
    fn drop(&mut self) {
        ace_testkit::drop_database("127.0.0.1", 5432, &self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_set_up_and_fed_with_acectl_alone() {
    let tag = format!("{:010x}", rand::thread_rng().gen::<u64>() & 0xff_ffff_ffff);
    let db = Db(format!("ace_cli_{tag}"));
    let prefix = format!("c{tag}");
    let root = ace_core::db::connect(&format!("{ADMIN}/postgres"))
        .await
        .unwrap();
    root.batch_execute(&format!("CREATE DATABASE {}", db.0))
        .await
        .unwrap();
    let url = format!("{ADMIN}/{}", db.0);
    let dir = std::env::temp_dir().join(format!("acectl-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let dbenv = [("ACE_DATABASE_URL", url.as_str())];

    // Concurrent migrations serialise on the advisory lock; a re-run changes nothing.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| acectl(&["db", "migrate"], &dbenv));
        let b = s.spawn(|| acectl(&["db", "migrate"], &dbenv));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (a, b) = (ok(&a), ok(&b));
    assert!(
        a.contains("applied V1__log") || b.contains("applied V1__log"),
        "{a}\n{b}"
    );
    assert_eq!(ok(&acectl(&["db", "migrate"], &dbenv)), "schema up to date");
    // A grant revoked by hand comes back with a rerun, and only the grants of the list.
    let c = ace_core::db::connect(&url).await.unwrap();
    c.batch_execute(
        "REVOKE SELECT ON ledger_tiles FROM ace_reader; \
         REVOKE USAGE ON SEQUENCE dlq_items_id_seq FROM ace_writer",
    )
    .await
    .unwrap();
    assert_eq!(
        ok(&acectl(&["db", "migrate"], &dbenv)),
        "schema up to date\n\
         restored grant: USAGE on sequence dlq_items_id_seq to ace_writer\n\
         restored grant: SELECT on ledger_tiles to ace_reader"
    );
    let back: bool = c
        .query_one(
            "SELECT has_table_privilege('ace_reader', 'ledger_tiles', 'SELECT') \
               AND has_sequence_privilege('ace_writer', 'dlq_items_id_seq', 'USAGE')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(back);
    assert_eq!(ok(&acectl(&["db", "migrate"], &dbenv)), "schema up to date");

    let natsenv = [("ACE_PREFIX", prefix.as_str())];
    // Idempotent; the second run through a seed list, a cluster's form of ACE_NATS_URL.
    for url in [
        "nats://127.0.0.1:4222",
        "nats://127.0.0.1:4222, nats://localhost:4222",
    ] {
        let env = [("ACE_PREFIX", prefix.as_str()), ("ACE_NATS_URL", url)];
        let out = ok(&acectl(&["nats", "init"], &env));
        assert!(
            out.contains(&format!("{}_INTAKE", prefix.to_uppercase())),
            "{out}"
        );
    }
    let bad = acectl(
        &["nats", "init"],
        &[
            ("ACE_PREFIX", prefix.as_str()),
            ("ACE_NATS_URL", "nats://127.0.0.1:4222,nats://[::1"),
        ],
    );
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && said.contains("NATS URL nats://[::1: "),
        "{said}"
    );

    let key_path = dir.join("ledger.key");
    let vkey = ok(&acectl(
        &[
            "ledger-key",
            "generate",
            "--origin",
            "cli.test/ledger",
            "--out",
            key_path.to_str().unwrap(),
        ],
        &[],
    ));
    let verifier = NoteVerifier::parse(&vkey).expect("prints a verifier key");
    let signer =
        NoteSigner::parse_key_file(std::fs::read_to_string(&key_path).unwrap().trim()).unwrap();
    assert_eq!(signer.verifier_key(), vkey);
    assert_eq!(verifier.name(), "cli.test/ledger");
    assert_eq!(mode(&key_path), 0o600);
    // Never overwrite a key.
    assert!(!acectl(
        &[
            "ledger-key",
            "generate",
            "--origin",
            "x",
            "--out",
            key_path.to_str().unwrap()
        ],
        &[]
    )
    .status
    .success());

    assert_eq!(
        ok(&acectl(&["producer", "add", "acme"], &dbenv)),
        "producer acme added"
    );
    assert_eq!(
        ok(&acectl(&["producer", "add", "acme"], &dbenv)),
        "producer acme already registered"
    );
    let bad = acectl(&["producer", "add", "Not_Valid"], &dbenv);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Not_Valid"));

    let pk_path = dir.join("acme.key");
    let keyid = ok(&acectl(
        &[
            "key",
            "add",
            "acme",
            "--generate",
            "--out",
            pk_path.to_str().unwrap(),
        ],
        &dbenv,
    ));
    assert_eq!(keyid.len(), 64);
    assert_eq!(mode(&pk_path), 0o600);

    // sign: a DSSE envelope that parses, with that keyid.
    let statement = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/statement.json");
    let env_json = ok(&acectl(
        &[
            "sign",
            "--key",
            pk_path.to_str().unwrap(),
            "--statement",
            statement.to_str().unwrap(),
        ],
        &[],
    ));
    let env = Envelope::parse(env_json.as_bytes()).unwrap();
    assert_eq!(env.signatures[0].keyid, keyid);

    // A writer for this ledger, then publish through acectl.
    let writer = ace_writer::Config {
        prefix: prefix.clone(),
        log_origin: Some("cli.test/ledger".into()),
        listen: "127.0.0.1:0".parse().unwrap(),
        batch_max_entries: 100,
        batch_max_delay: Duration::from_millis(20),
        standby_poll: Duration::from_millis(200),
        retry_max: Duration::from_secs(1),
        nak_delay: Duration::from_millis(200),
        ..ace_writer::Config::with_defaults(
            ace_core::config::Secret::new(format!("postgres://ace_writer@127.0.0.1:5432/{}", db.0)),
            key_path.clone(),
        )
    };
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(ace_writer::run(writer, rx));

    let publish = |extra: &[&str]| {
        let mut args = vec!["publish", "--producer", "acme", "--timeout-secs", "30"];
        args.extend_from_slice(extra);
        acectl(&args, &natsenv)
    };
    let pk = pk_path.to_str().unwrap().to_string();
    let st = statement.to_str().unwrap().to_string();
    let first: serde_json::Value =
        serde_json::from_str(&ok(&publish(&["--key", &pk, "--statement", &st]))).unwrap();
    assert_eq!(first["status"], "accepted", "{first}");
    // Entries 0 and 1 are the key events of acme's registration and key.
    assert_eq!(first["index"], 2);
    assert_eq!(first["digest"], env.digest().as_str());
    // Same statement again, inside the JetStream window.
    let again: serde_json::Value =
        serde_json::from_str(&ok(&publish(&["--key", &pk, "--statement", &st]))).unwrap();
    assert_eq!(again["status"], "duplicate", "{again}");
    assert_eq!(again["stream_seq"], first["stream_seq"]);

    // A reader on the writer's ledger: it tells a JetStream-level duplicate its index, and
    // the entry the writer made verifies from what the reader serves.
    let reader = ace_reader::Config {
        pool_size: 2,
        tile_cache_bytes: 1 << 20,
        head_max_age: Duration::ZERO,
        ..ace_reader::Config::with_defaults(
            ace_core::config::Secret::new(format!("postgres://ace_reader@127.0.0.1:5432/{}", db.0)),
            vec![verifier.clone()],
        )
    };
    let reader = ace_reader::prepare(&reader).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reader_url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_reader, reader_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(ace_reader::serve(reader, listener, reader_rx));
    let known: serde_json::Value = serde_json::from_str(&ok(&publish(&[
        "--key",
        &pk,
        "--statement",
        &st,
        "--reader",
        &reader_url,
    ])))
    .unwrap();
    assert_eq!(known["status"], "duplicate", "{known}");
    assert_eq!(known["index"], 2, "{known}");
    assert_eq!(known["original"]["status"], "accepted", "{known}");
    let verified = ok(&acectl(
        &[
            "verify",
            "entry",
            "--reader",
            &reader_url,
            "--ledger-key",
            &vkey,
            "--index",
            "2",
        ],
        &[],
    ));
    assert!(verified.starts_with("entry 2 verified"), "{verified}");
    // The writer ran the built-in policy; the reader serves its text, which hashes to it.
    let builtin = ace_core::policy::Policy::builtin();
    assert!(
        verified.ends_with(&format!(
            "admitted under policy {} (its text rehashed)",
            builtin.version()
        )),
        "{verified}"
    );

    // A malformed envelope: exit 3 and the reason.
    let junk = dir.join("junk.json");
    std::fs::write(&junk, b"{\"payloadType\": 7}").unwrap();
    let out = publish(&["--envelope", junk.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["reason"]["code"], "malformed_envelope");

    // Revoke: the next statement signed by that key is key_revoked.
    let revoked = ok(&acectl(
        &["key", "revoke", &keyid, "--reason", "laptop stolen"],
        &dbenv,
    ));
    assert!(
        revoked.starts_with(&format!("revoked {keyid} at ")),
        "{revoked}"
    );
    // Idempotent: a second revocation changes nothing and says when the first was.
    let again = ok(&acectl(
        &["key", "revoke", &keyid, "--reason", "again"],
        &dbenv,
    ));
    assert!(
        again.starts_with(&format!("key {keyid} was already revoked at ")),
        "{again}"
    );
    let st2 = dir.join("st2.json");
    std::fs::write(
        &st2,
        std::fs::read_to_string(&statement)
            .unwrap()
            .replace("app-1.2.3", "app-1.2.4"),
    )
    .unwrap();
    let out = publish(&["--key", &pk, "--statement", st2.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["reason"]["code"], "key_revoked", "{r}");

    let _ = stop.send(true);
    let _ = stop_reader.send(true);
    task.await.unwrap().unwrap();

    // audit agrees with the writer on the ledger it made, and on the synthetic loader's
    // continuation of it.
    let audit = |dsn: &str| {
        acectl(
            &["audit", "--ledger-key", &vkey, "--database-url", dsn],
            &[],
        )
    };
    let reader_url = format!("postgres://ace_reader@127.0.0.1:5432/{}", db.0);
    let out = ok(&audit(&reader_url));
    assert!(out.starts_with("audit passed"), "{out}");
    // The entry, and the key events: acme added, its key added, its key revoked.
    assert!(out.contains("entries:    4 "), "{out}");
    assert!(out.contains("key events: 3 in the log"), "{out}");
    assert!(out.contains("origin:     cli.test/ledger"), "{out}");
    let mut admin = ace_core::db::connect(&url).await.unwrap();
    let loaded = ace_testkit::synth::load(
        &mut admin,
        &signer,
        &ace_testkit::synth::SynthOptions {
            entries: 700,
            block_size: 90,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // After the key events of the 8 synthetic producers and their keys.
    assert_eq!(
        (loaded.first_index, loaded.tree_size),
        (4 + 16, 4 + 16 + 700)
    );
    let out = ok(&audit(&reader_url));
    assert!(out.contains("entries:    720 "), "{out}");
    let js = async_nats::jetstream::new(async_nats::connect("127.0.0.1:4222").await.unwrap());
    for s in ["INTAKE", "ACKS", "DLQ", "CHECKPOINTS"] {
        let _ = js
            .delete_stream(format!("{}_{s}", prefix.to_uppercase()))
            .await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn policy_check_explains_and_policy_test_dry_runs() {
    let dir = std::env::temp_dir().join(format!("acectl-policy-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();

    // Two problems, each reported with its line; the file is refused.
    std::fs::write(
        path("bad.toml"),
        "[[rule]]\nid = \"a\"\nkind = \"max_subjects\"\nmode = \"deny\"\n\n[[rule]]\nid = \"b\"\nkind = \"no_such_kind\"\nmode = \"deny\"\n",
    )
    .unwrap();
    let o = acectl(&["policy", "check", &path("bad.toml")], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.toml"), "{err}");
    assert!(err.contains("line 1") && err.contains("max"), "{err}");
    assert!(
        err.contains("line 6") && err.contains("no_such_kind"),
        "{err}"
    );

    let policy = "[[rule]]\nid = \"slsa\"\nkind = \"predicate_types\"\nmode = \"deny\"\nallow = [\"https://slsa.dev/*\"]\n\n[producers.lab]\ndisable = [\"slsa\"]\n";
    std::fs::write(path("p.toml"), policy).unwrap();
    let out = ok(&acectl(&["policy", "check", &path("p.toml")], &[]));
    let version = ace_core::policy::version_of(policy.as_bytes());
    assert!(
        out.contains(&format!("version {version}, 1 rules")),
        "{out}"
    );
    assert!(out.contains("slsa (predicate_types, deny)"), "{out}");

    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    std::fs::write(path("k.hex"), hex::encode(key.to_bytes())).unwrap();
    std::fs::write(
        path("st.json"),
        r#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"x","digest":{"sha256":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}],"predicateType":"https://example.com/other","predicate":{}}"#,
    )
    .unwrap();
    ok(&acectl(
        &[
            "sign",
            "--key",
            &path("k.hex"),
            "--statement",
            &path("st.json"),
            "--out",
            &path("env.json"),
        ],
        &[],
    ));
    let pk = hex::encode(key.verifying_key().to_bytes());
    let o = acectl(
        &[
            "policy",
            "test",
            &path("p.toml"),
            &path("env.json"),
            "--producer",
            "ops",
            "--public-key",
            &pk,
        ],
        &[],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains("decision: deny: policy_denied rule slsa (predicate_types)"),
        "{out}"
    );
    assert!(
        out.contains("signatures counted: 1 (distinct keys that verify)"),
        "{out}"
    );
    // The producer whose section disables the rule is allowed.
    let out = ok(&acectl(
        &[
            "policy",
            "test",
            &path("p.toml"),
            &path("env.json"),
            "--producer",
            "lab",
        ],
        &[],
    ));
    assert!(out.contains("decision: allow"), "{out}");
    assert!(out.contains("not applied to producer lab"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_closed_stdout_ends_acectl_quietly() {
    // `acectl … | head`: the reader is gone before acectl writes. It must end as a Unix
    // tool killed by SIGPIPE does (141), not panic.
    let dir = std::env::temp_dir().join(format!("acectl-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("ledger.key");
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            r#"(sleep 0.5; exec "$0" ledger-key generate --origin pipe.test/log --out "$1") | true; echo "status ${PIPESTATUS[0]}""#,
        )
        .arg(env!("CARGO_BIN_EXE_acectl"))
        .arg(&key)
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout.trim(), "status 141", "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
