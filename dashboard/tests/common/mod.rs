//! A running stack for the dashboard's tests, on the machine's real Postgres and NATS: a
//! fresh database and stream prefix, a writer in-process, producers, and the dashboard
//! itself on a free port, with an HTTP client that keeps its own cookies.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ace_core::checkpoint::NoteSigner;
use ace_core::envelope::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use ace_core::ids::KeyId;
use ace_testkit::{free_port, unique, TestDb, TestNats};
use ed25519_dalek::SigningKey;
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub const OPERATOR: (&str, &str) = ("alice", "correct horse battery");
pub const VIEWER: (&str, &str) = ("victor", "staple paperclip");

pub struct Stack {
    pub db: TestDb,
    pub nats: TestNats,
    pub dir: PathBuf,
    pub writer_port: u16,
    pub dashboard: String,
    pub keys: HashMap<String, SigningKey>,
    writer_stop: watch::Sender<bool>,
    dash_stop: watch::Sender<bool>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.writer_stop.send(true);
        let _ = self.dash_stop.send(true);
    }
}

pub fn statement(n: u64, tag: &str) -> Vec<u8> {
    let digest = hex::encode(Sha256::digest(format!("{tag}-{n}").as_bytes()));
    serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": format!("artifact-{tag}-{n}.tar.gz"), "digest": {"sha256": digest}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"buildDefinition": {"buildType": "https://example.com/build@v1"}},
    }))
    .expect("statement JSON")
}

pub fn sign(statement: &[u8], key: &SigningKey) -> (Vec<u8>, String) {
    let env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, statement, key);
    (env.to_json(), env.digest().as_str().to_string())
}

/// Options for [`Stack::start`].
pub struct Opts {
    pub tweak: Box<dyn FnOnce(&mut ace_dashboard::Config) + Send>,
    /// The port of a test's private Postgres on 127.0.0.1, instead of the shared one.
    pub pg_port: Option<u16>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            tweak: Box::new(|_| {}),
            pg_port: None,
        }
    }
}

impl Stack {
    pub async fn start(opts: Opts) -> Stack {
        let db = match opts.pg_port {
            Some(port) => TestDb::on("127.0.0.1", port).await,
            None => TestDb::new().await,
        };
        let nats = TestNats::new().await;
        let dir = std::env::temp_dir().join(unique("ace-dash-"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let signer = NoteSigner::generate(&format!("test.example/{}", nats.names.prefix()))
            .expect("ledger key");
        let key_file = dir.join("ledger.key");
        std::fs::write(&key_file, signer.to_key_file()).expect("key file");

        let writer_port = free_port();
        let wcfg = ace_writer::Config {
            nats_url: nats.url.clone(),
            prefix: nats.names.prefix().to_string(),
            listen: format!("127.0.0.1:{writer_port}").parse().expect("addr"),
            policy_poll: Duration::from_millis(100),
            standby_poll: Duration::from_millis(200),
            retry_max: Duration::from_millis(1000),
            nak_delay: Duration::from_millis(200),
            ..ace_writer::Config::with_defaults(
                ace_core::config::Secret::new(db.url("ace_writer")),
                key_file,
            )
        };
        let (writer_stop, wrx) = watch::channel(false);
        tokio::spawn(async move {
            if let Err(e) = ace_writer::run(wcfg, wrx).await {
                panic!("writer failed: {e}");
            }
        });

        let users = dir.join("users.toml");
        let mut text = String::new();
        for ((name, pw), role) in [(OPERATOR, "operator"), (VIEWER, "viewer")] {
            let h = ace_dashboard::auth::hash_password(pw).expect("hash");
            text.push_str(&format!(
                "[[user]]\nname = \"{name}\"\nrole = \"{role}\"\npassword_hash = \"{h}\"\n"
            ));
        }
        std::fs::write(&users, text).expect("users file");
        let mut cfg = ace_dashboard::Config::with_defaults(
            ace_core::config::Secret::new(db.url("ace_dashboard")),
            users,
        );
        cfg.nats_url = nats.url.clone();
        cfg.prefix = nats.names.prefix().to_string();
        cfg.writer_urls = vec![format!("http://127.0.0.1:{writer_port}")];
        cfg.anchor_urls = vec![];
        (opts.tweak)(&mut cfg);
        let state = ace_dashboard::prepare(cfg).await.expect("dashboard starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (dash_stop, drx) = watch::channel(false);
        tokio::spawn(ace_dashboard::serve(state, listener, drx));
        Stack {
            db,
            nats,
            dir,
            writer_port,
            dashboard: format!("http://{addr}"),
            keys: HashMap::new(),
            writer_stop,
            dash_stop,
        }
    }

    pub async fn add_producer(&mut self, id: &str, register_key: bool) -> SigningKey {
        let sk = SigningKey::from_bytes(&rand::thread_rng().gen());
        let c = self.db.admin().await;
        c.execute("INSERT INTO producers (producer) VALUES ($1)", &[&id])
            .await
            .expect("producer");
        if register_key {
            self.register(id, &sk).await;
        }
        self.keys.insert(id.into(), sk.clone());
        sk
    }

    pub async fn register(&self, producer: &str, sk: &SigningKey) {
        let vk = sk.verifying_key();
        let keyid = KeyId::from_public_key(&vk);
        self.db
            .admin()
            .await
            .execute(
                "INSERT INTO producer_keys (keyid, producer, public_key, valid_from) VALUES ($1, $2, $3, now() - interval '1 hour')",
                &[&keyid.as_str(), &producer, &vk.as_bytes().as_slice()],
            )
            .await
            .expect("key");
    }

    pub async fn publish(&self, producer: &str, raw: Vec<u8>) {
        self.nats
            .js
            .publish(self.nats.names.intake_subject(producer), raw.into())
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }

    /// Waits until `sql` (one bigint) reaches `n`.
    pub async fn wait_count(&self, sql: &str, n: i64) {
        let c = self.db.admin().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let have: i64 = c.query_one(sql, &[]).await.map(|r| r.get(0)).unwrap_or(-1);
            if have >= n {
                return;
            }
            assert!(Instant::now() < deadline, "{sql}: {have} of {n} after 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        self.db
            .admin()
            .await
            .query_one(sql, &[])
            .await
            .expect(sql)
            .get(0)
    }
}

/// An HTTP client for the dashboard that keeps its cookies and does not follow redirects.
pub struct Browser {
    pub base: String,
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        Browser {
            base: base.into(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, r: reqwest::Response) -> Page {
        for v in r.headers().get_all(reqwest::header::SET_COOKIE) {
            let v = v.to_str().expect("cookie");
            let first = v.split(';').next().unwrap_or("");
            if let Some((k, val)) = first.split_once('=') {
                if val.is_empty() || v.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.into(), val.into());
                }
            }
        }
        Page {
            status: r.status().as_u16(),
            location: r
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|v| v.to_str().unwrap_or("").to_string()),
            body: r.text().await.expect("body"),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .send()
            .await
            .expect("GET");
        self.finish(r).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .expect("POST");
        self.finish(r).await
    }

    /// The value of the first `name="csrf"` hidden field on a page.
    pub fn csrf(body: &str) -> String {
        let i = body
            .find("name=\"csrf\" value=\"")
            .expect("a CSRF field on the page");
        let rest = &body[i + 19..];
        rest[..rest.find('"').expect("end of value")].to_string()
    }

    pub async fn login(&mut self, (user, pw): (&str, &str)) -> Page {
        let form = self.get("/login").await;
        let token = Browser::csrf(&form.body);
        self.post(
            "/login",
            &[("csrf", &token), ("username", user), ("password", pw)],
        )
        .await
    }
}
