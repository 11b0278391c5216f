//! The live stack the scenarios run against, started in a clean namespace: a fresh database
//! on the Postgres, a private nats-server whose authorization `acectl nats render` wrote
//! (every producer and service its own NKey user), the writer, reader, anchor and
//! dashboard as separate processes of the built binaries on free loopback ports, a test
//! RFC 3161 TSA and a test C2SP witness. Everything is set up through `acectl`, as an
//! operator would.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ace_core::ack::Ack;
use ace_core::checkpoint::NoteVerifier;
use ace_core::nats::Names;
use ace_testkit::tsa::{KeyKind, TestTsa};
use ace_testkit::witness::TestWitness;
use ace_testkit::{unique, PrivateNats, TestDb};
use ed25519_dalek::SigningKey;
use futures::StreamExt;

use crate::spec::StackSpec;

/// Why the stack could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{what}: {why}")]
    Setup { what: String, why: String },
    #[error("binary {path} is missing: build it first (cargo build --workspace --bins)")]
    MissingBinary { path: String },
    #[error("`{command}` failed (exit {code:?}): {output}")]
    Command {
        command: String,
        code: Option<i32>,
        output: String,
    },
    #[error(
        "{service} did not become ready on {url} within {secs} s; last lines of {log}:\n{tail}"
    )]
    NotReady {
        service: String,
        url: String,
        secs: u64,
        log: String,
        tail: String,
    },
}

fn setup(what: impl Into<String>, why: impl std::fmt::Display) -> StackError {
    StackError::Setup {
        what: what.into(),
        why: why.to_string(),
    }
}

pub struct StackOptions {
    /// Where `acectl`, `ace-writer`, `ace-reader`, `ace-anchor` and `ace-dashboard` are.
    pub bin_dir: PathBuf,
    pub pg_host: String,
    pub pg_port: u16,
}

/// One running service process.
pub struct Service {
    pub name: &'static str,
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Service {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Every ledger ack the writer published, by intake stream sequence, collected by the
/// admin NATS user from `<prefix>.ack.>` since the stack started.
#[derive(Default)]
pub struct Acks {
    by_seq: Mutex<HashMap<u64, Ack>>,
    notify: tokio::sync::Notify,
}

impl Acks {
    pub fn get(&self, seq: u64) -> Option<Ack> {
        self.by_seq
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&seq)
            .cloned()
    }

    fn insert(&self, a: Ack) {
        self.by_seq
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(a.stream_seq, a);
        self.notify.notify_waiters();
    }

    /// Waits until `f` finds something or `timeout` passes.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        f: impl Fn(&Acks) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            if let Some(v) = f(self) {
                return Some(v);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return f(self);
            }
        }
    }
}

pub struct Stack {
    pub dir: PathBuf,
    pub bin_dir: PathBuf,
    pub db: TestDb,
    pub nats: PrivateNats,
    pub names: Names,
    pub prefix: String,
    pub ledger_vkey: String,
    /// NATS user name → its NKey seed file.
    pub seeds: HashMap<String, PathBuf>,
    /// Signing keys by name (each producer's first key is named after it).
    pub keys: HashMap<String, SigningKey>,
    pub services: Vec<Service>,
    pub admin: async_nats::Client,
    pub acks: Arc<Acks>,
    pub tsa_ca: PathBuf,
    pub witness_vkey: String,
    pub operator: (String, String),
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Runs a blocking helper that may panic (the testkit's process starters) and turns a
/// panic into an error naming it.
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StackError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        let msg = e
            .try_into_panic()
            .ok()
            .and_then(|p| {
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            })
            .unwrap_or_else(|| "cancelled".into());
        setup(what, msg)
    })
}

impl Stack {
    pub async fn start(spec: &StackSpec, opts: &StackOptions) -> Result<Stack, StackError> {
        for b in [
            "acectl",
            "ace-writer",
            "ace-reader",
            "ace-anchor",
            "ace-dashboard",
        ] {
            let p = opts.bin_dir.join(b);
            if !p.is_file() {
                return Err(StackError::MissingBinary {
                    path: p.display().to_string(),
                });
            }
        }
        let dir = std::env::temp_dir().join(unique("ace-sdf-"));
        for sub in ["keys", "nats", "tsa"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| setup(format!("creating {}", dir.join(sub).display()), e))?;
        }
        let db = TestDb::create(&opts.pg_host, opts.pg_port)
            .await
            .map_err(|e| setup("the stack's database", e))?;
        let prefix = unique("sdf");
        let names = Names::new(&prefix).map_err(|e| setup("the stack's prefix", e))?;
        let st = PartialStack {
            dir: dir.clone(),
            bin_dir: opts.bin_dir.clone(),
            admin_url: db.url("postgres"),
        };

        // The ledger key, then producers with their first keys and NATS users, then the
        // services' NATS users, all through acectl.
        let origin = format!("sdf.test/{prefix}");
        let ledger_key = dir.join("keys/ledger.key");
        let out = st.acectl(&[
            "ledger-key",
            "generate",
            "--origin",
            &origin,
            "--out",
            path(&ledger_key),
        ])?;
        let ledger_vkey = out
            .lines()
            .rev()
            .find(|l| l.starts_with(&origin))
            .ok_or_else(|| {
                setup(
                    "acectl ledger-key generate",
                    format!("no verifier key in {out:?}"),
                )
            })?
            .trim()
            .to_string();
        let verifier = NoteVerifier::parse(&ledger_vkey)
            .map_err(|e| setup("the ledger verifier key acectl printed", e))?;

        let mut seeds = HashMap::new();
        let mut keys = HashMap::new();
        for p in &spec.producers {
            let key_file = dir.join(format!("keys/{p}.key"));
            let seed = dir.join(format!("nats/{p}.nk"));
            st.acectl(&[
                "producer",
                "add",
                p,
                "--key-out",
                path(&key_file),
                "--nats-seed-out",
                path(&seed),
            ])?;
            keys.insert(p.clone(), read_key(&key_file)?);
            seeds.insert(p.clone(), seed);
        }
        for (name, kind) in [
            ("writer", "writer"),
            ("anchor", "anchor"),
            ("dashboard", "dashboard"),
            ("admin", "admin"),
        ] {
            let seed = dir.join(format!("nats/{name}.nk"));
            st.acectl(&[
                "nats",
                "add-user",
                name,
                "--kind",
                kind,
                "--seed-out",
                path(&seed),
            ])?;
            seeds.insert(name.to_string(), seed);
        }
        let auth = dir.join("nats/auth.conf");
        st.acectl(&["nats", "render", "--out", path(&auth), "--prefix", &prefix])?;

        let nats_dir = dir.join("nats");
        let js_dir = dir.join("nats/js");
        let nats = blocking("starting the private nats-server", move || {
            PrivateNats::start(
                &nats_dir,
                &format!(
                    "jetstream {{ store_dir: {:?} }}\ninclude \"auth.conf\"\n",
                    js_dir.display().to_string()
                ),
            )
        })
        .await?;
        let nats_url = nats.url();
        let admin_seed = &seeds["admin"];
        st.acectl_env(
            &["nats", "init", "--prefix", &prefix],
            &[
                ("ACE_NATS_URL", nats_url.as_str()),
                ("ACE_NATS_NKEY_FILE", path(admin_seed)),
            ],
        )?;
        let admin = connect_nkey(&nats_url, admin_seed)
            .await
            .map_err(|e| setup(format!("the admin NATS user on {nats_url}"), e))?;

        // Every ack, collected from the start (the admin may read them all).
        let acks = Arc::new(Acks::default());
        let mut sub = admin
            .subscribe(format!("{prefix}.ack.>"))
            .await
            .map_err(|e| setup(format!("subscribing to {prefix}.ack.>"), e))?;
        admin
            .flush()
            .await
            .map_err(|e| setup("flushing the admin connection", e))?;
        let mut tasks = Vec::new();
        let collector = Arc::clone(&acks);
        tasks.push(tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Ok(a) = serde_json::from_slice::<Ack>(&m.payload) {
                    collector.insert(a);
                }
            }
        }));

        // The trust anchors the anchor pushes to.
        let tsa_dir = dir.join("tsa");
        let tsa = blocking("creating the test TSA (openssl)", move || {
            TestTsa::create(&tsa_dir, KeyKind::EcP256)
        })
        .await?
        .map_err(|e| setup("creating the test TSA (openssl)", e))?;
        let tsa = Arc::new(tsa);
        let tsa_ca = tsa.ca_path();
        let tsa_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| setup("binding the test TSA", e))?;
        let tsa_addr = tsa_listener
            .local_addr()
            .map_err(|e| setup("the test TSA's address", e))?;
        tasks.push(tokio::spawn(Arc::clone(&tsa).serve(tsa_listener)));
        let witness = Arc::new(TestWitness::new("sdf.test/witness", verifier));
        let witness_vkey = witness.vkey();
        let witness_addr = Arc::clone(&witness)
            .spawn()
            .await
            .map_err(|e| setup("binding the test witness", e))?;

        let sinks = dir.join("anchor-sinks.toml");
        write(
            &sinks,
            &format!(
                "[[sink]]\nname = \"jetstream\"\nkind = \"nats\"\n\n\
                 [[sink]]\nname = \"witness\"\nkind = \"witness\"\nurl = \"http://{witness_addr}\"\nvkey = \"{witness_vkey}\"\n\n\
                 [[sink]]\nname = \"tsa\"\nkind = \"rfc3161\"\nurl = \"http://{tsa_addr}/tsr\"\ntrust_file = \"{}\"\n",
                tsa_ca.display()
            ),
        )?;

        // The dashboard's operator account.
        let password = hex::encode(rand::random::<[u8; 16]>());
        let hash = st.run_stdin(
            &opts.bin_dir.join("ace-dashboard"),
            &["hash-password"],
            &password,
        )?;
        let users = dir.join("dashboard-users.toml");
        write(
            &users,
            &format!(
                "[[user]]\nname = \"sdf\"\nrole = \"operator\"\npassword_hash = \"{}\"\n",
                hash.trim()
            ),
        )?;

        // The writer's own settings through a settings file (ACE_CONFIG_FILE), as an
        // operator may keep them; the shared ones (database, NATS, prefix) come from the
        // environment like the other services'.
        let mut writer_toml = format!(
            "ACE_LEDGER_KEY_FILE = {:?}\nACE_BATCH_MAX_DELAY_MS = 20\n",
            path(&ledger_key)
        );
        if !spec.allowed_payload_types.is_empty() {
            writer_toml.push_str(&format!(
                "ACE_ALLOWED_PAYLOAD_TYPES = {:?}\n",
                spec.allowed_payload_types
            ));
        }
        if let Some(n) = spec.max_envelope_bytes {
            writer_toml.push_str(&format!("ACE_MAX_ENVELOPE_BYTES = {n}\n"));
        }
        if let Some(policy) = &spec.policy {
            let f = dir.join("policy.toml");
            write(&f, policy)?;
            writer_toml.push_str(&format!("ACE_POLICY_FILE = {:?}\n", path(&f)));
        }
        let writer_config = dir.join("writer.toml");
        write(&writer_config, &writer_toml)?;
        let writer_env: Vec<(String, String)> =
            vec![("ACE_CONFIG_FILE".into(), path(&writer_config).into())];

        let mut stack = Stack {
            dir,
            bin_dir: opts.bin_dir.clone(),
            db,
            nats,
            names,
            prefix,
            ledger_vkey,
            seeds,
            keys,
            services: Vec::new(),
            admin,
            acks,
            tsa_ca,
            witness_vkey,
            operator: ("sdf".into(), password),
            tasks,
        };
        stack.spawn(
            "writer",
            "ace_writer",
            "ACE_WRITER_LISTEN",
            Some("writer"),
            writer_env,
        )?;
        stack.spawn(
            "reader",
            "ace_reader",
            "ACE_READER_LISTEN",
            None,
            vec![("ACE_LEDGER_VKEYS".into(), stack.ledger_vkey.clone())],
        )?;
        stack.spawn(
            "anchor",
            "ace_anchor",
            "ACE_ANCHOR_LISTEN",
            Some("anchor"),
            vec![
                ("ACE_LEDGER_VKEYS".into(), stack.ledger_vkey.clone()),
                ("ACE_ANCHOR_SINKS_FILE".into(), path(&sinks).into()),
                ("ACE_ANCHOR_POLL_MS".into(), "100".into()),
            ],
        )?;
        let writer_url = stack.url("writer");
        let anchor_url = stack.url("anchor");
        stack.spawn(
            "dashboard",
            "ace_dashboard",
            "ACE_DASHBOARD_LISTEN",
            Some("dashboard"),
            vec![
                ("ACE_DASHBOARD_USERS_FILE".into(), path(&users).into()),
                ("ACE_DASHBOARD_WRITER_URLS".into(), writer_url),
                ("ACE_DASHBOARD_ANCHOR_URLS".into(), anchor_url),
            ],
        )?;
        for i in 0..stack.services.len() {
            stack.wait_ready(i).await?;
        }
        Ok(stack)
    }

    /// Starts `ace-<name>` connected as `role`, with its NATS user's seed if it has one.
    fn spawn(
        &mut self,
        name: &'static str,
        role: &str,
        listen_var: &str,
        nats_user: Option<&str>,
        extra: Vec<(String, String)>,
    ) -> Result<(), StackError> {
        let port = ace_testkit::pgserver::free_port();
        let log = self.dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)
            .map_err(|e| setup(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| setup(format!("opening {}", log.display()), e))?;
        let mut cmd = Command::new(self.bin_dir.join(format!("ace-{name}")));
        cmd.env("ACE_DATABASE_URL", self.db.url(role))
            .env("ACE_NATS_URL", self.nats.url())
            .env("ACE_PREFIX", &self.prefix)
            .env(listen_var, format!("127.0.0.1:{port}"))
            .env("ACE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Some(u) = nats_user {
            cmd.env("ACE_NATS_NKEY_FILE", &self.seeds[u]);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| setup(format!("starting ace-{name}"), e))?;
        self.services.push(Service {
            name,
            child,
            port,
            log,
        });
        Ok(())
    }

    async fn wait_ready(&mut self, i: usize) -> Result<(), StackError> {
        let secs = 30;
        let deadline = Instant::now() + Duration::from_secs(secs);
        let url = format!("{}/readyz", self.services[i].url());
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            let s = &mut self.services[i];
            let exited = matches!(s.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                return Err(StackError::NotReady {
                    service: s.name.into(),
                    url,
                    secs,
                    log: s.log.display().to_string(),
                    tail: tail(&s.log, 15),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn url(&self, name: &str) -> String {
        self.service(name).map(Service::url).unwrap_or_default()
    }

    /// Runs acectl as the database's superuser (the operator's admin DSN).
    pub fn acectl(&self, args: &[&str]) -> Result<String, StackError> {
        self.partial().acectl(args)
    }

    pub fn acectl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<String, StackError> {
        self.partial().acectl_env(args, env)
    }

    fn partial(&self) -> PartialStack {
        PartialStack {
            dir: self.dir.clone(),
            bin_dir: self.bin_dir.clone(),
            admin_url: self.db.url("postgres"),
        }
    }

    /// `--nats-auth-out … --reload-pid … --nats-prefix …`: re-render the authorization and
    /// make the private server reload it.
    pub fn nats_sync_args(&self) -> Vec<String> {
        vec![
            "--nats-auth-out".into(),
            self.dir.join("nats/auth.conf").display().to_string(),
            "--reload-pid".into(),
            self.nats.child.id().to_string(),
            "--nats-prefix".into(),
            self.prefix.clone(),
        ]
    }

    /// A superuser connection to the stack's database.
    pub async fn admin_db(&self) -> Result<tokio_postgres::Client, String> {
        self.db.try_admin().await.map_err(|e| e.to_string())
    }

    /// SIGTERM every service (as an orchestrator would), wait up to 10 s each, then kill.
    pub async fn stop(mut self) {
        for s in &self.services {
            let _ = Command::new("kill")
                .args(["-TERM", &s.child.id().to_string()])
                .status();
        }
        for s in &mut self.services {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(s.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
        for t in &self.tasks {
            t.abort();
        }
        // The database, the nats-server and the streams go with their owners' drops.
    }
}

/// A stack dropped without [`Stack::stop`] (a failed start, a panic) still leaves no
/// process behind.
impl Drop for Stack {
    fn drop(&mut self) {
        for s in &mut self.services {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What the setup needs before the stack exists.
struct PartialStack {
    dir: PathBuf,
    bin_dir: PathBuf,
    admin_url: String,
}

impl PartialStack {
    fn acectl(&self, args: &[&str]) -> Result<String, StackError> {
        self.acectl_env(args, &[])
    }

    fn acectl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<String, StackError> {
        let mut cmd = Command::new(self.bin_dir.join("acectl"));
        cmd.args(args)
            .env("ACE_DATABASE_URL", &self.admin_url)
            .env("ACE_ACTOR", "sdf")
            .current_dir(&self.dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().map_err(|e| {
            setup(
                format!("running {}", self.bin_dir.join("acectl").display()),
                e,
            )
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            return Err(StackError::Command {
                command: format!("acectl {}", args.join(" ")),
                code: out.status.code(),
                output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
            });
        }
        Ok(stdout)
    }

    fn run_stdin(&self, bin: &Path, args: &[&str], input: &str) -> Result<String, StackError> {
        use std::io::Write;
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| setup(format!("running {}", bin.display()), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(format!("{input}\n").as_bytes())
                .map_err(|e| setup(format!("writing to {}", bin.display()), e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| setup(format!("running {}", bin.display()), e))?;
        if !out.status.success() {
            return Err(StackError::Command {
                command: format!("{} {}", bin.display(), args.join(" ")),
                code: out.status.code(),
                output: String::from_utf8_lossy(&out.stderr).to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }
}

pub fn path(p: &Path) -> &str {
    // Our own temp paths: valid UTF-8 whenever the temp dir's name is.
    p.to_str().unwrap_or("")
}

fn write(p: &Path, text: &str) -> Result<(), StackError> {
    std::fs::write(p, text).map_err(|e| setup(format!("writing {}", p.display()), e))
}

/// A signing key file (hex seed) as acectl writes it.
pub fn read_key(p: &Path) -> Result<SigningKey, StackError> {
    let text =
        std::fs::read_to_string(p).map_err(|e| setup(format!("reading {}", p.display()), e))?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| setup(format!("key file {}", p.display()), "not 64 hex digits"))?;
    Ok(SigningKey::from_bytes(&bytes))
}

pub async fn connect_nkey(url: &str, seed_file: &Path) -> Result<async_nats::Client, String> {
    let seed = std::fs::read_to_string(seed_file)
        .map_err(|e| format!("reading {}: {e}", seed_file.display()))?;
    async_nats::ConnectOptions::new()
        .nkey(seed.trim().to_string())
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| e.to_string())
}

/// The last `n` lines of a log.
pub fn tail(p: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
