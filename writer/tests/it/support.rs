//! Test fixtures on the machine's real Postgres and NATS: a fresh database and a unique
//! stream prefix per test, producers with keys, a writer in-process or as a process, and
//! a checker that verifies the whole log from its stored rows.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command};

use std::time::{Duration, Instant};

use ace_core::ack::Ack;
use ace_core::checkpoint::NoteSigner;
use ace_core::envelope::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use ace_core::ids::KeyId;
use ace_writer::Config;
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub use ace_testkit::{check_log, free_port, unique, TestDb, TestNats, NATS_URL};

/// A ledger under test: database, streams, ledger key, registered producers.
pub struct Ledger {
    pub db: TestDb,
    pub nats: TestNats,
    pub signer: NoteSigner,
    pub key_file: PathBuf,
    pub dir: PathBuf,
    pub producers: HashMap<String, SigningKey>,
}

impl Ledger {
    pub async fn new() -> Ledger {
        Self::from_parts(TestDb::new().await, TestNats::new().await)
    }

    pub fn from_parts(db: TestDb, nats: TestNats) -> Ledger {
        let dir = std::env::temp_dir().join(unique("ace-it-"));
        std::fs::create_dir_all(&dir).unwrap();
        let signer =
            NoteSigner::generate(&format!("test.example/{}", nats.names.prefix())).unwrap();
        let key_file = dir.join("ledger.key");
        std::fs::write(&key_file, signer.to_key_file()).unwrap();
        Ledger {
            db,
            nats,
            signer,
            key_file,
            dir,
            producers: HashMap::new(),
        }
    }

    pub fn writer_config(&self) -> Config {
        Config {
            nats_url: self.nats.url.clone(),
            prefix: self.nats.names.prefix().to_string(),
            listen: "127.0.0.1:0".parse().unwrap(),
            policy_poll: Duration::from_millis(100),
            standby_poll: Duration::from_millis(200),
            retry_max: Duration::from_millis(1000),
            nak_delay: Duration::from_millis(200),
            ..Config::with_defaults(
                ace_core::config::Secret::new(self.db.url("ace_writer")),
                self.key_file.clone(),
            )
        }
    }

    /// Write (or overwrite) the policy file of this ledger; returns its path.
    pub fn write_policy(&self, text: &str) -> PathBuf {
        let path = self.dir.join("policy.toml");
        // Write then rename, as an operator's tooling would, so that a poll never reads
        // half a file.
        let tmp = self.dir.join("policy.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// Register a producer with one fresh key.
    pub async fn add_producer(&mut self, id: &str) -> KeyId {
        let sk = SigningKey::from_bytes(&rand::thread_rng().gen());
        let c = self.db.admin().await;
        c.execute("INSERT INTO producers (producer) VALUES ($1)", &[&id])
            .await
            .unwrap();
        let keyid = register_key(&c, id, &sk, "now() - interval '1 hour'", "NULL").await;
        self.producers.insert(id.to_string(), sk);
        keyid
    }

    pub fn key(&self, producer: &str) -> &SigningKey {
        &self.producers[producer]
    }

    /// Run the writer in this process until the returned handle is stopped.
    pub fn spawn_writer(&self, cfg: Config) -> WriterHandle {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(ace_writer::run(cfg, rx));
        WriterHandle { tx, task }
    }

    /// Run the writer binary as a child process (for SIGKILL and SIGTERM tests).
    pub fn spawn_writer_process(&self, listen_port: u16) -> WriterProcess {
        self.spawn_writer_process_with(listen_port, &[], None)
    }

    /// The writer binary with `extra` settings, its stdout and stderr (the log, and an
    /// abort's last words) appended to `log` if given.
    pub fn spawn_writer_process_with(
        &self,
        listen_port: u16,
        extra: &[(&str, String)],
        log: Option<&std::path::Path>,
    ) -> WriterProcess {
        let cfg = self.writer_config();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ace-writer"));
        if let Some(path) = log {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("opening the writer log");
            cmd.stderr(f.try_clone().expect("the writer log"));
            cmd.stdout(f);
        }
        cmd.env_clear()
            .env("ACE_NATS_URL", &cfg.nats_url)
            .env("ACE_DATABASE_URL", cfg.database_url.expose())
            .env("ACE_PREFIX", &cfg.prefix)
            .env("ACE_LEDGER_KEY_FILE", &cfg.ledger_key_file)
            .env("ACE_WRITER_LISTEN", format!("127.0.0.1:{listen_port}"))
            .env("ACE_STANDBY_POLL_MS", "200")
            .env("ACE_RETRY_MAX_MS", "1000")
            .env("ACE_NAK_DELAY_MS", "200")
            .env(
                "ACE_LOG",
                std::env::var("ACE_TEST_WRITER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(extra.iter().map(|(k, v)| (k, v)))
            .spawn()
            .map(|c| WriterProcess(Some(c)))
            .expect("spawning ace-writer")
    }

    /// Subscribe to every ack of this ledger (before publishing).
    pub async fn ack_stream(&self) -> async_nats::Subscriber {
        self.nats
            .client
            .subscribe(format!("{}.ack.>", self.nats.names.prefix()))
            .await
            .unwrap()
    }

    pub async fn publish_raw(&self, producer: &str, raw: Vec<u8>, msg_id: Option<&str>) -> u64 {
        let mut h = async_nats::HeaderMap::new();
        if let Some(id) = msg_id {
            h.insert("Nats-Msg-Id", id);
        }
        h.insert(
            "Ace-Published-At",
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .as_str(),
        );
        let ack = self
            .nats
            .js
            .publish_with_headers(self.nats.names.intake_subject(producer), h, raw.into())
            .await
            .unwrap()
            .await
            .unwrap();
        ack.sequence
    }

    /// Publish many envelopes with pipelined JetStream confirmations.
    pub async fn publish_many(&self, items: Vec<(String, Vec<u8>)>) -> Vec<u64> {
        let mut seqs = Vec::with_capacity(items.len());
        for chunk in items.chunks(500) {
            let mut futs = Vec::with_capacity(chunk.len());
            for (producer, raw) in chunk {
                let digest = Envelope::parse(raw)
                    .map(|e| e.digest().as_str().to_string())
                    .ok();
                let mut h = async_nats::HeaderMap::new();
                if let Some(d) = &digest {
                    h.insert("Nats-Msg-Id", d.as_str());
                }
                h.insert(
                    "Ace-Published-At",
                    chrono::Utc::now()
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                        .as_str(),
                );
                futs.push(
                    self.nats
                        .js
                        .publish_with_headers(
                            self.nats.names.intake_subject(producer),
                            h,
                            raw.clone().into(),
                        )
                        .await
                        .unwrap(),
                );
            }
            for f in futs {
                seqs.push(f.await.unwrap().sequence);
            }
        }
        seqs
    }
}

/// Publish `items` in the background, `chunk` at a time with pipelined confirmations,
/// pausing `pause` between chunks.
pub fn spawn_publisher(
    l: &Ledger,
    items: Vec<(String, Vec<u8>)>,
    chunk: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    let js = l.nats.js.clone();
    let names = l.nats.names.clone();
    tokio::spawn(async move {
        for chunk in items.chunks(chunk) {
            let mut futs = Vec::new();
            for (p, raw) in chunk {
                futs.push(
                    js.publish(names.intake_subject(p), raw.clone().into())
                        .await
                        .unwrap(),
                );
            }
            for f in futs {
                f.await.unwrap();
            }
            tokio::time::sleep(pause).await;
        }
    })
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn register_key(
    c: &tokio_postgres::Client,
    producer: &str,
    sk: &SigningKey,
    valid_from_sql: &str,
    valid_until_sql: &str,
) -> KeyId {
    let vk = sk.verifying_key();
    let keyid = KeyId::from_public_key(&vk);
    c.execute(
        &format!(
            "INSERT INTO producer_keys (keyid, producer, public_key, valid_from, valid_until) VALUES ($1, $2, $3, {valid_from_sql}, {valid_until_sql})"
        ),
        &[&keyid.as_str(), &producer, &vk.as_bytes().as_slice()],
    )
    .await
    .unwrap();
    keyid
}

/// A writer process, SIGKILLed if the test ends (or fails) while it runs.
pub struct WriterProcess(Option<Child>);

impl WriterProcess {
    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Send a signal by name (`HUP`, `TERM`) with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill")
            .success();
        assert!(ok, "kill -{name} {} failed", self.pid());
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.0.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Wait for the process to exit by itself.
    pub fn wait(mut self) -> std::process::ExitStatus {
        let mut c = self.0.take().expect("process already reaped");
        c.wait().expect("waiting for ace-writer")
    }
}

impl Drop for WriterProcess {
    fn drop(&mut self) {
        self.sigkill();
    }
}

pub struct WriterHandle {
    tx: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<Result<(), ace_writer::WriterError>>,
}

impl WriterHandle {
    pub async fn stop(self) {
        let _ = self.tx.send(true);
        let r = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("writer did not stop within 30 s of shutdown");
        r.expect("writer task panicked")
            .expect("writer returned an error");
    }
}

/// An in-toto statement with one subject, unique per `n`.
pub fn statement(n: u64, tag: &str) -> Vec<u8> {
    let digest = hex::encode(Sha256::digest(format!("{tag}-{n}").as_bytes()));
    serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": format!("artifact-{tag}-{n}.tar.gz"), "digest": {"sha256": digest}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"buildDefinition": {"buildType": "https://example.com/build@v1"}},
    }))
    .unwrap()
}

pub fn sign(statement: &[u8], key: &SigningKey) -> Vec<u8> {
    Envelope::sign(IN_TOTO_PAYLOAD_TYPE, statement, key).to_json()
}

/// Collect acks until `pred` says enough, or fail after `timeout`.
pub async fn collect_acks(
    sub: &mut async_nats::Subscriber,
    want: usize,
    timeout: Duration,
) -> Vec<Ack> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(m)) => out.push(serde_json::from_slice(&m.payload).expect("ack is JSON")),
            _ => panic!(
                "only {} of {want} acks arrived within {timeout:?}",
                out.len()
            ),
        }
    }
    out
}

/// Wait until the log holds `n` entries of producers (the ledger's own key events are not
/// counted).
pub async fn wait_for_entries(c: &tokio_postgres::Client, n: i64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let have: i64 = c
            .query_one(
                "SELECT count(*) FROM ledger_entries WHERE producer <> '_ledger'",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(-1);
        if have >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "log has {have} of {n} entries after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of one series on the writer's `/metrics` at `port` (0 when absent or the
/// writer does not answer), e.g. `ace_writer_transient_errors_total{component="postgres"}`.
pub async fn writer_metric(port: u16, series: &str) -> f64 {
    let Ok((_, metrics)) = super::intake::try_http_get(port, "/metrics").await else {
        return 0.0;
    };
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0.0)
}

pub const POSTGRES_FAULTS: &str = "ace_writer_transient_errors_total{component=\"postgres\"}";

/// `acectl audit` over the whole ledger, as an auditor would run it (as ace_reader):
/// every leaf, digest, subject row, tile, block, the chain, every checkpoint, the policy
/// versions and the operator trail. acectl is found beside the writer binary (a
/// workspace test build makes both).
pub fn full_audit(l: &Ledger) -> String {
    let (ok, text) = audit(l);
    assert!(ok, "acectl audit failed:\n{text}");
    text
}

/// `acectl audit` as ace_reader: (passed, stdout and stderr).
pub fn audit(l: &Ledger) -> (bool, String) {
    acectl(&[
        "audit",
        "--database-url",
        &l.db.url("ace_reader"),
        "--ledger-key",
        &l.signer.verifier_key(),
        "--progress-secs",
        "0",
        "--verify-signatures",
    ])
}

/// Runs acectl (found beside the writer binary): (succeeded, stdout and stderr).
pub fn acectl(args: &[&str]) -> (bool, String) {
    let acectl = std::path::Path::new(env!("CARGO_BIN_EXE_ace-writer")).with_file_name("acectl");
    assert!(
        acectl.exists(),
        "{} is missing: build it with `cargo build -p acectl` (scripts/test.sh builds the workspace)",
        acectl.display()
    );
    let out = Command::new(&acectl)
        .args(args)
        .env("ACE_ACTOR", "test-operator")
        .output()
        .expect("running acectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
