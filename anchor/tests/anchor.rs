//! The anchor on the real Postgres and NATS: blocks from the synthetic loader, sinks that
//! are real (JetStream, an HTTP receiver checking the HMAC), outages and the roles.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ace_anchor::sink::{webhook, Schedule, SinkSpec, Target};
use ace_anchor::Config;
use ace_core::checkpoint::{open_checkpoint, NoteSigner};
use ace_core::config::Secret;
use ace_testkit::synth::{self, SynthOptions};
use ace_testkit::{TestDb, TestNats};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;
use tokio::sync::watch;

const SECRET: &str = "test-webhook-secret";

#[derive(Default)]
struct Receiver {
    calls: Mutex<Vec<serde_json::Value>>,
    refused: Mutex<u32>,
    down: AtomicBool,
}

/// A webhook receiver as a user would write one: check the HMAC, then record.
async fn receive(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    if r.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance");
    }
    let ts = headers
        .get("ace-timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let sig = headers.get("ace-signature").and_then(|v| v.to_str().ok());
    let (Some(ts), Some(sig)) = (ts, sig) else {
        return (StatusCode::BAD_REQUEST, "missing headers");
    };
    if webhook::verify_signature(SECRET.as_bytes(), ts, &body, sig).is_err() {
        *r.refused.lock().unwrap() += 1;
        return (StatusCode::UNAUTHORIZED, "bad signature");
    }
    r.calls
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap());
    (StatusCode::OK, "recorded")
}

async fn receiver() -> (Arc<Receiver>, String) {
    let r = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(Arc::clone(&r));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, url)
}

fn signer() -> NoteSigner {
    NoteSigner::from_seed("anchor.test/log", [5; 32]).unwrap()
}

/// Seal `blocks` more blocks of 10 entries.
async fn grow(db: &TestDb, blocks: u64, seed: u64) {
    let mut c = db.admin().await;
    synth::load(
        &mut c,
        &signer(),
        &SynthOptions {
            entries: blocks * 10,
            block_size: 10,
            producers: 2,
            seed,
            entries_per_transaction: 10,
            // Blocks counted by height: the registrations' key events stay pending.
            key_events: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

fn config(db: &TestDb, nats: &TestNats, sinks: Vec<SinkSpec>) -> Config {
    Config {
        nats_url: nats.url.clone(),
        prefix: nats.names.prefix().to_string(),
        listen: "127.0.0.1:0".parse().unwrap(),
        // Long: blocks must be learnt from NOTIFY, not from polling.
        poll: Duration::from_secs(60),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        request_timeout: Duration::from_secs(5),
        ..Config::with_defaults(
            Secret::new(db.url("ace_anchor")),
            vec![signer().verifier()],
            sinks,
        )
    }
}

fn hook(name: &str, url: &str, secret: &str) -> SinkSpec {
    SinkSpec {
        name: name.into(),
        schedule: Schedule::EveryBlock,
        target: Target::Webhook {
            url: url.parse().unwrap(),
            secret: Secret::new(secret),
        },
    }
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ace_anchor::StartError>>,
    metrics_url: String,
}

async fn start(cfg: Config) -> Running {
    let prepared = ace_anchor::prepare(&cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(ace_anchor::serve(cfg, prepared, listener, rx));
    Running {
        stop,
        task,
        metrics_url,
    }
}

/// (height, tree_size, receipt) of a sink's receipts, in height order.
async fn receipts(db: &TestDb, sink: &str) -> Vec<(i64, i64, serde_json::Value)> {
    db.admin()
        .await
        .query(
            "SELECT height, tree_size, receipt FROM anchor_receipts WHERE sink = $1 ORDER BY height, id",
            &[&sink],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn wait_for<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metric(url: &str, line_prefix: &str) -> Option<f64> {
    let body = reqwest::get(url).await.ok()?.text().await.ok()?;
    body.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_block_reaches_jetstream_and_the_webhook_and_a_wrong_secret_is_refused() {
    let db = TestDb::new().await;
    let nats = TestNats::new().await;
    grow(&db, 3, 1).await;
    let (r, url) = receiver().await;
    let running = start(config(
        &db,
        &nats,
        vec![
            SinkSpec {
                name: "mirror".into(),
                schedule: Schedule::EveryBlock,
                target: Target::Nats,
            },
            hook("hook", &url, SECRET),
            hook("forged", &url, "not-the-secret"),
        ],
    ))
    .await;

    // A first run starts at the latest block: the log's history is covered by consistency.
    wait_for("the first receipts", Duration::from_secs(20), || async {
        receipts(&db, "mirror").await.len() == 1 && receipts(&db, "hook").await.len() == 1
    })
    .await;
    assert_eq!(receipts(&db, "mirror").await[0].0, 3);

    // New blocks are learnt from the writer's commits (NOTIFY), each anchored in turn.
    let t = Instant::now();
    grow(&db, 4, 2).await;
    wait_for("blocks 4..=7 anchored", Duration::from_secs(20), || async {
        receipts(&db, "mirror").await.len() == 5 && receipts(&db, "hook").await.len() == 5
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(20));
    for sink in ["mirror", "hook"] {
        let heights: Vec<i64> = receipts(&db, sink).await.iter().map(|r| r.0).collect();
        assert_eq!(heights, vec![3, 4, 5, 6, 7], "{sink}");
    }

    // JetStream holds each checkpoint, signed by the ledger, with its receipt's sequence.
    let stream = nats
        .js
        .get_stream(nats.names.checkpoints_stream())
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut msgs = consumer.fetch().max_messages(10).messages().await.unwrap();
    let mut seen = Vec::new();
    while let Some(Ok(m)) = msgs.next().await {
        let cp = open_checkpoint(
            std::str::from_utf8(&m.payload).unwrap(),
            &[signer().verifier()],
        )
        .unwrap();
        seen.push(cp.tree_size);
    }
    assert_eq!(seen, vec![30, 40, 50, 60, 70]);
    let nats_receipts = receipts(&db, "mirror").await;
    assert_eq!(nats_receipts[4].2["seq"], 5, "{:?}", nats_receipts[4].2);
    assert_eq!(nats_receipts[4].1, 70);

    // The receiver saw every body, HMAC checked; the forged secret never got in.
    let calls = r.calls.lock().unwrap().clone();
    let sizes: Vec<u64> = calls
        .iter()
        .map(|c| c["tree_size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, vec![30, 40, 50, 60, 70]);
    assert_eq!(calls[0]["origin"], "anchor.test/log");
    assert!(*r.refused.lock().unwrap() >= 1);
    assert!(receipts(&db, "forged").await.is_empty());
    assert!(
        metric(
            &running.metrics_url,
            "ace_anchor_failures_total{kind=\"webhook\",sink=\"forged\"}"
        )
        .await
        .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        metric(
            &running.metrics_url,
            "ace_anchor_receipts_total{kind=\"nats\",sink=\"mirror\"}"
        )
        .await,
        Some(5.0)
    );
    // Lag is refreshed by each sink's worker as it goes round.
    wait_for(
        "lag 0 for hook, 7 for forged",
        Duration::from_secs(10),
        || async {
            metric(&running.metrics_url, "ace_anchor_lag_blocks{sink=\"hook\"}").await == Some(0.0)
                && metric(
                    &running.metrics_url,
                    "ace_anchor_lag_blocks{sink=\"forged\"}",
                )
                .await
                    == Some(7.0)
        },
    )
    .await;

    let _ = running.stop.send(true);
    running.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_down_for_many_blocks_catches_up_with_one_anchor() {
    let db = TestDb::new().await;
    let nats = TestNats::new().await;
    grow(&db, 1, 1).await;
    let (r, url) = receiver().await;
    let running = start(config(&db, &nats, vec![hook("hook", &url, SECRET)])).await;
    wait_for("the first receipt", Duration::from_secs(20), || async {
        receipts(&db, "hook").await.len() == 1
    })
    .await;

    r.down.store(true, Ordering::SeqCst);
    grow(&db, 25, 2).await;
    // Failing, retried with backoff; the lag shows it.
    wait_for("failures counted", Duration::from_secs(20), || async {
        metric(
            &running.metrics_url,
            "ace_anchor_failures_total{kind=\"webhook\",sink=\"hook\"}",
        )
        .await
        .unwrap_or(0.0)
            >= 2.0
    })
    .await;
    wait_for(
        "the lag to show all 25 blocks",
        Duration::from_secs(20),
        || async {
            metric(&running.metrics_url, "ace_anchor_lag_blocks{sink=\"hook\"}").await == Some(25.0)
        },
    )
    .await;
    assert!(metric(
        &running.metrics_url,
        "ace_anchor_lag_seconds{sink=\"hook\"}"
    )
    .await
    .is_some());
    r.down.store(false, Ordering::SeqCst);
    wait_for("the catch-up receipt", Duration::from_secs(20), || async {
        receipts(&db, "hook").await.len() == 2
    })
    .await;
    // One anchor of the latest checkpoint, not 25.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heights: Vec<i64> = receipts(&db, "hook").await.iter().map(|r| r.0).collect();
    assert_eq!(heights, vec![1, 26]);
    assert_eq!(r.calls.lock().unwrap().len(), 2);

    let _ = running.stop.send(true);
    running.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anchor_role_appends_receipts_only_and_a_wider_role_is_refused() {
    let db = TestDb::new().await;
    let nats = TestNats::new().await;
    let anchor = db.url("ace_anchor");
    let c = ace_core::db::connect(&anchor).await.unwrap();
    for stmt in [
        "INSERT INTO ledger_blocks DEFAULT VALUES",
        "UPDATE anchor_receipts SET sink = sink",
        "DELETE FROM anchor_receipts",
        "SELECT * FROM ledger_entries",
        "SELECT * FROM dlq_items",
    ] {
        let e = c.batch_execute(stmt).await.unwrap_err();
        let msg = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        assert!(msg.contains("permission denied"), "{stmt}: {msg}");
    }
    let cfg = || {
        config(
            &db,
            &nats,
            vec![hook("hook", "http://127.0.0.1:9/", SECRET)],
        )
    };
    ace_anchor::prepare(&cfg()).await.map(|_| ()).unwrap();
    let admin = db.admin().await;
    admin
        .batch_execute("GRANT UPDATE ON anchor_receipts TO ace_anchor")
        .await
        .unwrap();
    let e = ace_anchor::prepare(&cfg()).await.err().unwrap().to_string();
    assert!(
        e.contains("ace_anchor") && e.contains("UPDATE on anchor_receipts"),
        "{e}"
    );
    admin
        .batch_execute("REVOKE UPDATE ON anchor_receipts FROM ace_anchor")
        .await
        .unwrap();
    let mut su = cfg();
    su.database_url = Secret::new(db.url("postgres"));
    let e = ace_anchor::prepare(&su).await.err().unwrap().to_string();
    assert!(e.contains("superuser"), "{e}");
}

/// A tlog-witness as the spec describes one: it trusts the ledger's key for the origin,
/// keeps the latest size and root it cosigned, and checks old size and consistency
/// proof atomically before cosigning.
struct Witness {
    signer: ace_core::witness::CosignatureSigner,
    ledger: ace_core::checkpoint::NoteVerifier,
    latest: Mutex<Option<(u64, ace_core::merkle::Hash)>>,
    requests: Mutex<Vec<(u64, usize)>>,
}

async fn add_checkpoint(State(w): State<Arc<Witness>>, body: String) -> axum::response::Response {
    use ace_core::witness::{note_body, parse_add_checkpoint_body};
    use axum::response::IntoResponse;
    let Ok((old, proof, note)) = parse_add_checkpoint_body(&body) else {
        return (StatusCode::BAD_REQUEST, "malformed").into_response();
    };
    w.requests.lock().unwrap().push((old, proof.len()));
    let Ok(cp) = open_checkpoint(note, std::slice::from_ref(&w.ledger)) else {
        return (StatusCode::FORBIDDEN, "not signed by a key I trust").into_response();
    };
    if old > cp.tree_size {
        return (StatusCode::BAD_REQUEST, "old size beyond the checkpoint").into_response();
    }
    let mut latest = w.latest.lock().unwrap();
    let (size, root) = latest.unwrap_or((0, [0; 32]));
    if old != size {
        return (
            StatusCode::CONFLICT,
            [("content-type", "text/x.tlog.size")],
            format!("{size}\n"),
        )
            .into_response();
    }
    // Same size, another root: the spec's 409 (the witness's size in the body).
    if old == cp.tree_size && old != 0 && root != cp.root_hash {
        return (
            StatusCode::CONFLICT,
            [("content-type", "text/x.tlog.size")],
            format!("{size}\n"),
        )
            .into_response();
    }
    let consistent = if old == 0 || old == cp.tree_size {
        proof.is_empty()
    } else {
        ace_core::merkle::verify_consistency_proof(old, cp.tree_size, &proof, &root, &cp.root_hash)
            .is_ok()
    };
    if !consistent {
        return (StatusCode::UNPROCESSABLE_ENTITY, "inconsistent").into_response();
    }
    *latest = Some((cp.tree_size, cp.root_hash));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let line = w.signer.cosign(note_body(note).unwrap(), now);
    (StatusCode::OK, format!("{line}\n")).into_response()
}

async fn witness() -> (Arc<Witness>, String) {
    let w = Arc::new(Witness {
        signer: ace_core::witness::CosignatureSigner::from_seed("witness.test/w1", [42; 32])
            .unwrap(),
        ledger: signer().verifier(),
        latest: Mutex::new(None),
        requests: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .route("/w/add-checkpoint", axum::routing::post(add_checkpoint))
        .with_state(Arc::clone(&w));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/w/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (w, url)
}

fn witness_sink(name: &str, url: &str, w: &Witness) -> SinkSpec {
    SinkSpec {
        name: name.into(),
        schedule: Schedule::EveryBlock,
        target: Target::Witness {
            url: url.parse().unwrap(),
            key: w.signer.verifier(),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witnesses_cosign_with_consistency_proofs_and_a_conflict_is_resolved() {
    let db = TestDb::new().await;
    let nats = TestNats::new().await;
    grow(&db, 3, 1).await;
    let (w, url) = witness().await;
    let running = start(config(&db, &nats, vec![witness_sink("w1", &url, &w)])).await;
    wait_for("the first cosignature", Duration::from_secs(20), || async {
        receipts(&db, "w1").await.len() == 1
    })
    .await;
    grow(&db, 3, 2).await;
    wait_for("blocks 4..=6 cosigned", Duration::from_secs(20), || async {
        receipts(&db, "w1").await.len() == 4
    })
    .await;
    let _ = running.stop.send(true);
    running.task.await.unwrap().unwrap();

    // First contact from size 0 with no proof, then each block from the previous one with
    // a real consistency proof.
    let asked = w.requests.lock().unwrap().clone();
    assert_eq!(asked[0], (0, 0));
    assert!(
        asked[1..].iter().all(|(old, proof)| *old > 0 && *proof > 0),
        "{asked:?}"
    );
    // Every stored cosignature verifies over its block's checkpoint with the witness key.
    let admin = db.admin().await;
    for (height, size, receipt) in receipts(&db, "w1").await {
        let note: String = admin
            .query_one(
                "SELECT checkpoint FROM ledger_blocks WHERE height = $1",
                &[&height],
            )
            .await
            .unwrap()
            .get(0);
        let body = ace_core::witness::note_body(&note).unwrap();
        let lines = receipt["cosignatures"].as_array().unwrap();
        assert_eq!(lines.len(), 1);
        let c = w
            .signer
            .verifier()
            .verify_line(lines[0].as_str().unwrap(), body)
            .unwrap()
            .expect("the witness's own line");
        assert!(c.timestamp > 0);
        assert_eq!(receipt["vkey"], w.signer.verifier().to_vkey());
        assert_eq!(size, height * 10);
    }

    // A second sink on the same witness starts from size 0: the witness answers 409 with
    // its size, and the anchor retries from there with a proof.
    grow(&db, 1, 3).await;
    let running = start(config(&db, &nats, vec![witness_sink("w1-again", &url, &w)])).await;
    wait_for(
        "the cosignature after a conflict",
        Duration::from_secs(20),
        || async { receipts(&db, "w1-again").await.len() == 1 },
    )
    .await;
    let _ = running.stop.send(true);
    running.task.await.unwrap().unwrap();
    let asked = w.requests.lock().unwrap().clone();
    let n = asked.len();
    assert_eq!(asked[n - 2], (0, 0), "{asked:?}");
    assert!(asked[n - 1].0 == 60 && asked[n - 1].1 > 0, "{asked:?}");
    assert_eq!(receipts(&db, "w1-again").await[0].2["old_size"], 60);
}

/// What a TSA front does to its answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tamper {
    Honest,
    /// Answers a request over other data (another imprint and nonce).
    OtherRequest,
    /// Flips a byte of the token's signature.
    FlipSignature,
}

/// `openssl ts -reply` behind a loopback HTTP front, as a TSA serves it.
async fn tsa_front(t: Arc<ace_testkit::tsa::TestTsa>) -> String {
    tsa_front_with(t, Tamper::Honest).await
}

async fn tsa_front_with(t: Arc<ace_testkit::tsa::TestTsa>, tamper: Tamper) -> String {
    async fn stamp(
        State((t, tamper)): State<(Arc<ace_testkit::tsa::TestTsa>, Tamper)>,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        if headers.get("content-type").and_then(|v| v.to_str().ok())
            != Some("application/timestamp-query")
        {
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "want a timestamp query").into_response();
        }
        let query = match tamper {
            Tamper::OtherRequest => ace_core::tsa::request(b"something else", 1).unwrap().der,
            _ => body.to_vec(),
        };
        match tokio::task::spawn_blocking(move || t.reply(&query))
            .await
            .unwrap()
        {
            Ok(mut der) => {
                if tamper == Tamper::FlipSignature {
                    // The signature is the last field of the reply.
                    let n = der.len();
                    der[n - 5] ^= 0x01;
                }
                ([("content-type", "application/timestamp-reply")], der).into_response()
            }
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        }
    }
    let app = axum::Router::new()
        .route("/tsr", axum::routing::post(stamp))
        .with_state((t, tamper));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/tsr", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_tsa_stamps_each_checkpoint_and_an_untrusted_one_is_refused() {
    use ace_testkit::tsa::{KeyKind, TestTsa};
    let db = TestDb::new().await;
    let nats = TestNats::new().await;
    let dir = std::env::temp_dir().join(ace_testkit::unique("ace-anchor-tsa-"));
    let t = Arc::new(TestTsa::create(&dir.join("tsa"), KeyKind::Rsa2048).unwrap());
    let stranger = TestTsa::create(&dir.join("other"), KeyKind::EcP256).unwrap();
    let url = tsa_front(Arc::clone(&t)).await;
    let trust = |pem: String| Arc::new(ace_core::tsa::TsaTrust::from_pem(&pem).unwrap());
    let sink = |name: &str, pem: String| SinkSpec {
        name: name.into(),
        schedule: Schedule::EveryBlock,
        target: Target::Rfc3161 {
            url: url.parse().unwrap(),
            trust: trust(pem),
        },
    };
    grow(&db, 2, 1).await;
    let running = start(Config {
        // Each stamp is an `openssl ts -reply` process signing with RSA. Once, under the
        // whole suite on two slow cores, blocks 3 and 4 were never both stamped: what one
        // attempt past the 5 s timeout would do, since a failed attempt makes an
        // every-block sink jump to the latest block (by design). The test is about
        // stamping, not timeouts.
        request_timeout: Duration::from_secs(30),
        ..config(
            &db,
            &nats,
            vec![
                sink("tsa", t.ca_pem()),
                sink("tsa-wrong-ca", stranger.ca_pem()),
            ],
        )
    })
    .await;
    wait_for("the first token", Duration::from_secs(30), || async {
        receipts(&db, "tsa").await.len() == 1
    })
    .await;
    grow(&db, 2, 2).await;
    wait_for(
        "blocks 3 and 4 stamped",
        Duration::from_secs(60),
        || async { receipts(&db, "tsa").await.len() == 3 },
    )
    .await;
    wait_for(
        "the untrusted TSA refused",
        Duration::from_secs(30),
        || async {
            metric(
                &running.metrics_url,
                "ace_anchor_failures_total{kind=\"rfc3161\",sink=\"tsa-wrong-ca\"}",
            )
            .await
            .unwrap_or(0.0)
                >= 1.0
        },
    )
    .await;
    let _ = running.stop.send(true);
    running.task.await.unwrap().unwrap();
    assert!(receipts(&db, "tsa-wrong-ca").await.is_empty());

    // Each token stamps its block's checkpoint note: here, and with openssl ts -verify.
    let admin = db.admin().await;
    let ca = ace_core::tsa::TsaTrust::from_pem(&t.ca_pem()).unwrap();
    for (height, _, receipt) in receipts(&db, "tsa").await {
        let note: String = admin
            .query_one(
                "SELECT checkpoint FROM ledger_blocks WHERE height = $1",
                &[&height],
            )
            .await
            .unwrap()
            .get(0);
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD
            .decode(receipt["token"].as_str().unwrap())
            .unwrap();
        let v = ace_core::tsa::verify_token(&token, note.as_bytes(), None, &ca).unwrap();
        assert_eq!(receipt["nonce"], v.nonce.unwrap().to_string());
        t.verify_with_openssl(note.as_bytes(), &token).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_is_refused_by_the_witness_and_reported_loudly() {
    let nats = TestNats::new().await;
    let (w, url) = witness().await;
    // Two ledgers, same origin and key, different histories: the same tree size with two
    // roots, as a split view would show them.
    let (honest, forked) = (TestDb::new().await, TestDb::new().await);
    grow(&honest, 3, 1).await;
    grow(&forked, 3, 99).await;
    let running = start(config(&honest, &nats, vec![witness_sink("w1", &url, &w)])).await;
    wait_for(
        "the honest cosignature",
        Duration::from_secs(20),
        || async { receipts(&honest, "w1").await.len() == 1 },
    )
    .await;
    let _ = running.stop.send(true);
    running.task.await.unwrap().unwrap();

    let running = start(config(&forked, &nats, vec![witness_sink("w1", &url, &w)])).await;
    let readyz = running.metrics_url.replace("/metrics", "/readyz");
    wait_for("the fork reported", Duration::from_secs(20), || async {
        let failures = metric(
            &running.metrics_url,
            "ace_anchor_failures_total{kind=\"witness\",sink=\"w1\"}",
        )
        .await
        .unwrap_or(0.0);
        let said = match reqwest::get(&readyz).await {
            Ok(r) => r.text().await.unwrap_or_default().contains("FORK"),
            Err(_) => false,
        };
        failures >= 1.0 && said
    })
    .await;
    let status = reqwest::get(&readyz).await.unwrap().text().await.unwrap();
    assert!(status.contains("FORK"), "{status}");
    assert!(status.contains("size 30"), "{status}");
    let _ = running.stop.send(true);
    running.task.await.unwrap().unwrap();
    assert!(
        receipts(&forked, "w1").await.is_empty(),
        "nothing cosigned, nothing kept"
    );
    // The witness still holds the honest tree.
    let honest_root: Vec<u8> = honest
        .admin()
        .await
        .query_one(
            "SELECT root_hash FROM ledger_blocks WHERE tree_size = 30",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let held = *w.latest.lock().unwrap();
    assert_eq!(
        held,
        Some((30, <[u8; 32]>::try_from(honest_root.as_slice()).unwrap()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_tsa_responses_are_refused_and_never_stored() {
    use ace_testkit::tsa::{KeyKind, TestTsa};
    let db = TestDb::new().await;
    let nats = TestNats::new().await;
    let dir = std::env::temp_dir().join(ace_testkit::unique("ace-anchor-tamper-"));
    let t = Arc::new(TestTsa::create(&dir, KeyKind::EcP256).unwrap());
    let trust = Arc::new(ace_core::tsa::TsaTrust::from_pem(&t.ca_pem()).unwrap());
    let mut sinks = Vec::new();
    for (name, tamper) in [
        ("other-request", Tamper::OtherRequest),
        ("flipped", Tamper::FlipSignature),
    ] {
        let url = tsa_front_with(Arc::clone(&t), tamper).await;
        sinks.push(SinkSpec {
            name: name.into(),
            schedule: Schedule::EveryBlock,
            target: Target::Rfc3161 {
                url: url.parse().unwrap(),
                trust: Arc::clone(&trust),
            },
        });
    }
    grow(&db, 1, 1).await;
    let running = start(config(&db, &nats, sinks)).await;
    let readyz = running.metrics_url.replace("/metrics", "/readyz");
    wait_for("both refusals", Duration::from_secs(30), || async {
        let text = match reqwest::get(&readyz).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        // A reply to another request fails the imprint; a flipped signature byte fails
        // the signature (or, if it lands in a length, the DER).
        text.contains("message imprint is")
            && (text.contains("signature over the signed attributes")
                || text.contains("not valid DER"))
    })
    .await;
    let _ = running.stop.send(true);
    running.task.await.unwrap().unwrap();
    for sink in ["other-request", "flipped"] {
        assert!(
            receipts(&db, sink).await.is_empty(),
            "{sink}: nothing stored"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
