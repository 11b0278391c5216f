//! State snapshots end to end on the real Postgres and NATS, with a running writer and
//! reader: `acectl snapshot` records a real git repository, a config file and the
//! environment; `acectl state resolve` returns the right state at each time and proves
//! every input; a missing mandatory signal, a tampered component and a mutation gap are
//! each named in a failing report.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ace_core::checkpoint::NoteSigner;
use ace_testkit::{unique, TestDb, TestNats};
use ed25519_dalek::SigningKey;
use rand::Rng;

fn acectl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_acectl"));
    c.args(args).env_remove("ACE_DATABASE_URL");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running acectl")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git");
    assert!(o.status.success(), "git {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

struct World {
    dir: PathBuf,
    nats_env: Vec<(String, String)>,
    key: PathBuf,
    reader: String,
    vkey: String,
    db: TestDb,
    _nats: TestNats,
    _stop: (
        tokio::sync::watch::Sender<bool>,
        tokio::sync::watch::Sender<bool>,
    ),
}

impl World {
    fn run(&self, args: &[&str]) -> Output {
        let env: Vec<(&str, &str)> = self
            .nats_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        acectl(args, &env)
    }

    fn resolve(
        &self,
        service: &str,
        at: i64,
        contract: Option<&Path>,
    ) -> (i32, String, serde_json::Value) {
        let json = self.dir.join(format!("report-{}.json", unique("r")));
        let at = at.to_string();
        let mut args = vec![
            "state",
            "resolve",
            "--service",
            service,
            "--at",
            &at,
            "--reader",
            &self.reader,
            "--ledger-key",
            &self.vkey,
            "--json",
            json.to_str().expect("path"),
        ];
        let c;
        if let Some(p) = contract {
            c = p.to_str().expect("path").to_string();
            args.extend(["--contract", c.as_str()]);
        }
        let o = self.run(&args);
        let report = std::fs::read_to_string(&json)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null);
        (o.status.code().unwrap_or(-1), text(&o), report)
    }

    fn publish_statement(&self, statement: &str) {
        let f = self.dir.join(format!("{}.json", unique("st")));
        std::fs::write(&f, statement).expect("statement file");
        let key = self.key.to_str().expect("path").to_string();
        let o = self.run(&[
            "publish",
            "--producer",
            "ops",
            "--key",
            &key,
            "--statement",
            f.to_str().expect("path"),
        ]);
        assert!(o.status.success(), "publish: {}", text(&o));
        assert!(text(&o).contains("\"accepted\""), "{}", text(&o));
    }

    fn mutation(&self, service: &str, seq: u64) {
        let payload = self.dir.join(format!("mutation-{service}-{seq}.bin"));
        std::fs::write(&payload, format!("UPDATE accounts SET n = {seq}")).expect("payload");
        let seq_s = seq.to_string();
        let id = format!("m-{seq}");
        let o = self.run(&[
            "collect",
            "mutation",
            "--service",
            service,
            "--id",
            &id,
            "--sequence",
            &seq_s,
            "--origin",
            "postgres",
            "--payload",
            payload.to_str().expect("path"),
            "--external-ref",
            "lsn:0/16B3748",
        ]);
        assert!(o.status.success(), "collect mutation: {}", text(&o));
        self.publish_statement(&String::from_utf8_lossy(&o.stdout));
    }
}

async fn world() -> World {
    let db = TestDb::new().await;
    let nats = TestNats::new().await;
    let dir = std::env::temp_dir().join(unique("acectl-state-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let signer = NoteSigner::generate("state.test/ledger").expect("ledger key");
    let key_file = dir.join("ledger.key");
    std::fs::write(&key_file, signer.to_key_file()).expect("key file");
    // The producer "ops" and its key, registered as acectl would.
    let sk = SigningKey::from_bytes(&rand::thread_rng().gen());
    let key = dir.join("ops.key");
    std::fs::write(&key, hex::encode(sk.to_bytes())).expect("producer key");
    let vk = sk.verifying_key();
    let keyid = ace_core::ids::KeyId::from_public_key(&vk);
    let admin = db.admin().await;
    admin
        .execute("INSERT INTO producers (producer) VALUES ('ops')", &[])
        .await
        .expect("producer");
    admin
        .execute(
            "INSERT INTO producer_keys (keyid, producer, public_key, valid_from) VALUES ($1, 'ops', $2, now() - interval '1 hour')",
            &[&keyid.as_str(), &vk.as_bytes().as_slice()],
        )
        .await
        .expect("key");

    let writer = ace_writer::Config {
        nats_url: nats.url.clone(),
        prefix: nats.names.prefix().to_string(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        batch_max_entries: 100,
        batch_max_delay: Duration::from_millis(20),
        standby_poll: Duration::from_millis(200),
        retry_max: Duration::from_secs(1),
        nak_delay: Duration::from_millis(200),
        ..ace_writer::Config::with_defaults(
            ace_core::config::Secret::new(db.url("ace_writer")),
            key_file,
        )
    };
    let (wstop, wrx) = tokio::sync::watch::channel(false);
    tokio::spawn(ace_writer::run(writer, wrx));
    // The reader needs the genesis block: wait for the writer to seal it.
    for _ in 0..100 {
        let n: i64 = admin
            .query_one("SELECT count(*) FROM ledger_blocks", &[])
            .await
            .expect("blocks")
            .get(0);
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rcfg = ace_reader::Config {
        pool_size: 2,
        tile_cache_bytes: 1 << 20,
        head_max_age: Duration::ZERO,
        ..ace_reader::Config::with_defaults(
            ace_core::config::Secret::new(db.url("ace_reader")),
            vec![signer.verifier()],
        )
    };
    let state = ace_reader::prepare(&rcfg).await.expect("reader");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let reader = format!("http://{}", listener.local_addr().expect("addr"));
    let (rstop, rrx) = tokio::sync::watch::channel(false);
    tokio::spawn(ace_reader::serve(state, listener, rrx));
    World {
        dir,
        nats_env: vec![
            ("ACE_NATS_URL".into(), nats.url.clone()),
            ("ACE_PREFIX".into(), nats.names.prefix().to_string()),
        ],
        key,
        reader,
        vkey: signer.verifier_key(),
        db,
        _nats: nats,
        _stop: (wstop, rstop),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_resolve_to_the_state_in_force_and_every_gap_is_named() {
    let w = world().await;
    let repo = w.dir.join("repo");
    std::fs::create_dir_all(&repo).expect("repo");
    git(&repo, &["init", "-q"]);
    git(&repo, &["config", "user.email", "t@example.com"]);
    git(&repo, &["config", "user.name", "t"]);
    std::fs::write(repo.join("main.rs"), "fn main() {}\n").expect("file");
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "one"]);
    let commit1 = git(&repo, &["rev-parse", "HEAD"]);
    let config = w.dir.join("billing.toml");
    std::fs::write(&config, "rate = 1\n").expect("config");
    let contract = w.dir.join("contract.toml");
    std::fs::write(
        &contract,
        "service = \"billing\"\nmandatory = [\"code\", \"config\"]\noptional = [\"environment\"]\n",
    )
    .expect("contract");
    let key = w.key.to_str().expect("path").to_string();
    let snapshot = |extra: &[&str]| {
        let mut args = vec![
            "snapshot",
            "--service",
            "billing",
            "--contract",
            contract.to_str().expect("path"),
            "--producer",
            "ops",
            "--key",
            &key,
        ];
        args.extend_from_slice(extra);
        w.run(&args)
    };
    let (repo_s, config_s) = (repo.to_str().expect("path"), config.to_str().expect("path"));

    // A mandatory signal missing: refused, nothing recorded.
    let o = snapshot(&["--repo", repo_s, "--env"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("config") && text(&o).contains("mandatory"),
        "{}",
        text(&o)
    );
    let before: i64 =
        w.db.admin()
            .await
            .query_one(
                "SELECT count(*) FROM ledger_entries WHERE producer <> '_ledger'",
                &[],
            )
            .await
            .expect("n")
            .get(0);
    assert_eq!(before, 0, "nothing recorded");

    // Snapshot 1, then two mutations.
    let o = snapshot(&["--repo", repo_s, "--config", config_s, "--env"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("recorded snapshot of billing"),
        "{}",
        text(&o)
    );
    let t1 = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    w.mutation("billing", 1);
    w.mutation("billing", 2);
    let t_mid = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;

    // The config changes, a new commit, snapshot 2.
    std::fs::write(&config, "rate = 2\n").expect("config");
    std::fs::write(repo.join("main.rs"), "fn main() { println!(); }\n").expect("file");
    git(&repo, &["commit", "-qam", "two"]);
    let commit2 = git(&repo, &["rev-parse", "HEAD"]);
    let o = snapshot(&[
        "--repo",
        repo_s,
        "--config",
        config_s,
        "--env",
        "--mutation-sequence",
        "2",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t2 = now_ms();

    // Before any snapshot: nothing to resolve.
    let (code, out, _) = w.resolve("billing", t1 - 60_000, None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no snapshot"), "{out}");

    let input = |r: &serde_json::Value, role: &str| -> serde_json::Value {
        r["inputs"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["role"] == role).cloned())
            .unwrap_or(serde_json::Value::Null)
    };
    let (code, out, r1) = w.resolve("billing", t1, Some(&contract));
    assert_eq!(code, 0, "{out}");
    assert_eq!(r1["status"], "verified", "{out}");
    assert!(
        input(&r1, "code")["summary"]
            .as_str()
            .is_some_and(|s| s.contains(&commit1)),
        "{out}"
    );
    assert!(
        r1["inputs"]
            .as_array()
            .is_some_and(|a| a.iter().all(|i| i["proof"] == "verified")),
        "{out}"
    );
    assert!(out.contains("**Status: VERIFIED**"), "{out}");

    let (code, out, rmid) = w.resolve("billing", t_mid, Some(&contract));
    assert_eq!(code, 0, "{out}");
    let muts: Vec<String> = rmid["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .filter(|i| i["role"] == "mutation")
        .map(|i| i["summary"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(muts.len(), 2, "{out}");
    assert!(muts[0].contains("#1") && muts[1].contains("#2"), "{muts:?}");

    let (code, out, r2) = w.resolve("billing", t2, Some(&contract));
    assert_eq!(code, 0, "{out}");
    assert!(
        input(&r2, "code")["summary"]
            .as_str()
            .is_some_and(|s| s.contains(&commit2)),
        "{out}"
    );
    assert_ne!(
        input(&r1, "config")["summary"],
        input(&r2, "config")["summary"],
        "the two states differ in their configuration"
    );
    assert_ne!(
        input(&r1, "snapshot")["digest"],
        input(&r2, "snapshot")["digest"]
    );

    // A mutation sequence gap after snapshot 2 (which applied up to 2): 3 is missing.
    w.mutation("billing", 4);
    let (code, out, _) = w.resolve("billing", now_ms(), Some(&contract));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("mutation sequence 3 is missing"), "{out}");
    assert!(out.contains("**Status: FAILED**"), "{out}");

    // A partial snapshot is recorded only when asked, and resolves as partial, not success.
    let contract_b = w.dir.join("batch.toml");
    std::fs::write(
        &contract_b,
        "service = \"batch\"\nmandatory = [\"code\", \"config\"]\n",
    )
    .expect("contract");
    let o = w.run(&[
        "snapshot",
        "--service",
        "batch",
        "--contract",
        contract_b.to_str().expect("path"),
        "--repo",
        repo_s,
        "--partial",
        "--producer",
        "ops",
        "--key",
        &key,
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("PARTIAL") && text(&o).contains("config"),
        "{}",
        text(&o)
    );
    let (code, out, rb) = w.resolve("batch", now_ms(), None);
    assert_eq!(code, 3, "{out}");
    assert_eq!(rb["status"], "partial");
    // Checked against its contract, the missing mandatory signal is a violation.
    let (code, out, _) = w.resolve("batch", now_ms(), Some(&contract_b));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("contract violation: mandatory signal config"),
        "{out}"
    );

    // A snapshot naming a component that was never logged: named as missing.
    let (ghost_name, ghost_hex) = ace_core::state::service_subject("ghost");
    let missing = format!("sha256:{}", "0".repeat(64));
    w.publish_statement(
        &serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": ghost_name, "digest": {"sha256": ghost_hex}}],
            "predicateType": ace_core::state::SNAPSHOT_V1,
            "predicate": {
                "service": "ghost", "taken_at": "2026-12-01T00:00:00Z",
                "components": [{"kind": "code", "envelope": missing}],
                "mutation_sequence": 0, "partial": false, "missing": [],
            },
        })
        .to_string(),
    );
    let (code, out, _) = w.resolve("ghost", now_ms(), None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "code component {missing}: not in the log (status unknown)"
        )),
        "{out}"
    );

    // A component entry tampered with in the database: named in a failing report.
    let code_index = input(&r1, "code")["index"].as_i64().expect("code index");
    let admin = w.db.admin().await;
    admin
        .batch_execute(&format!(
            "SET session_replication_role = replica; \
             UPDATE ledger_entries SET envelope = replace(envelope::text, 'a', 'b')::bytea WHERE idx = {code_index}; \
             SET session_replication_role = origin;"
        ))
        .await
        .expect("tamper");
    let (code, out, _) = w.resolve("billing", t1, Some(&contract));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("code component entry {code_index}")),
        "the tampered component is named: {out}"
    );
}
