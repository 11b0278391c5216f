//! `acectl audit` on the real Postgres: a synthetic ledger of a few thousand entries over
//! many blocks (built in several calls) passes; then, as superuser with the append-only
//! triggers disabled, one thing is changed per test, and the audit must exit 1 naming
//! exactly that entry, tile or block first. The operators' trail (`operator_audit`, the
//! `dlq_actions` recorded in it) is written as the dashboard's role, then tampered with
//! the same way.

use std::process::Output;

use ace_core::checkpoint::NoteSigner;
use ace_core::operator_audit::{row_hash, AuditRecord, GENESIS};
use ace_testkit::synth::{self, SynthOptions};
use ace_testkit::TestDb;

const ENTRIES: u64 = 3000;
/// The key events of 4 producers with 3 keys each (one per load), backfilled at the end.
const KEY_EVENTS: u64 = 16;

fn signer() -> NoteSigner {
    NoteSigner::from_seed("audit.test/log", [11; 32]).unwrap()
}

/// 3000 entries: blocks of 100 (tiles filled across blocks), of 128 (tile-aligned every
/// other block) and of 77, in three calls with different seeds.
async fn ledger() -> TestDb {
    let db = TestDb::new().await;
    let mut c = db.admin().await;
    let s = signer();
    for (entries, block_size, seed) in [(1200, 100, 1), (1000, 128, 2), (800, 77, 3)] {
        let opts = SynthOptions {
            entries,
            block_size,
            producers: 4,
            seed,
            entries_per_transaction: 500,
            key_events: false,
            ..Default::default()
        };
        synth::load(&mut c, &s, &opts).await.unwrap();
    }
    // A ledger from before key events existed (migration V9), as an upgraded one looks:
    // its registrations' events are marked backfilled and appended after its entries.
    c.batch_execute(
        "SET session_replication_role = replica; \
         UPDATE key_events SET detail = detail || '{\"backfilled\": true}'; \
         RESET session_replication_role",
    )
    .await
    .unwrap();
    let opts = SynthOptions {
        entries: 0,
        producers: 4,
        seed: 3,
        ..Default::default()
    };
    synth::load(&mut c, &s, &opts).await.unwrap();
    db
}

async fn audit_as(db: &TestDb, user: &str, extra: &[&str]) -> Output {
    let url = db.url(user);
    let vkey = signer().verifier_key();
    let mut args = vec![
        "audit",
        "--database-url",
        url.as_str(),
        "--ledger-key",
        vkey.as_str(),
        "--progress-secs",
        "0",
    ];
    args.extend_from_slice(extra);
    acectl(&args).await
}

async fn acectl(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_acectl"))
        .args(args)
        .env_remove("ACE_DATABASE_URL")
        .output()
        .await
        .expect("running acectl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `sql` as superuser with the append-only triggers (and foreign keys) disabled.
async fn tamper(db: &TestDb, sql: &str) {
    let c = db.admin().await;
    c.batch_execute(&format!(
        "SET session_replication_role = replica; {sql}; RESET session_replication_role"
    ))
    .await
    .unwrap_or_else(|e| panic!("tampering with {sql}: {e}"));
}

/// The audit fails (exit 1) and its first line names `first`, then says `what`.
async fn assert_fails_at(db: &TestDb, first: &str, what: &str) {
    let o = audit_as(db, "postgres", &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = stdout(&o);
    let line = out.lines().next().unwrap_or_default();
    assert!(
        line.starts_with(&format!("audit FAILED at {first}: ")),
        "expected the first mismatch at {first}:\n{}",
        show(&o)
    );
    assert!(line.contains(what), "expected {what:?}:\n{}", show(&o));
    assert!(
        out.contains("expected: ") && out.contains("found: "),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_ledger_passes_as_the_reader_role_and_in_any_chunking() {
    let db = ledger().await;
    let root: Vec<u8> = db
        .admin()
        .await
        .query_one(
            "SELECT root_hash FROM ledger_blocks ORDER BY height DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let blocks: i64 = db
        .admin()
        .await
        .query_one("SELECT count(*) FROM ledger_blocks", &[])
        .await
        .unwrap()
        .get(0);
    for (chunk, verify) in [("20000", true), ("333", false), ("1", false)] {
        let mut args = vec!["--chunk-entries", chunk];
        if verify {
            args.push("--verify-signatures");
        }
        let o = audit_as(&db, "ace_reader", &args).await;
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
        let out = stdout(&o);
        assert!(out.starts_with("audit passed"), "{out}");
        assert!(out.contains("origin:     audit.test/log"), "{out}");
        assert!(
            out.contains(&format!("entries:    {} ", ENTRIES + KEY_EVENTS)),
            "{out}"
        );
        assert!(
            out.contains(&format!("key events: {KEY_EVENTS} in the log")),
            "{out}"
        );
        let said = if verify {
            "admitting key and signatures verified against them"
        } else {
            "signatures not re-verified"
        };
        assert!(out.contains(said), "{out}");
        assert!(out.contains(&format!("blocks:     {blocks} ")), "{out}");
        assert!(
            out.contains(&format!("tree size:  {}\n", ENTRIES + KEY_EVENTS)),
            "{out}"
        );
        assert!(
            out.contains(&format!("root:       {}", hex::encode(&root))),
            "{out}"
        );
    }
    // Another trusted key beside the right one changes nothing.
    let other = NoteSigner::from_seed("other.test/log", [12; 32]).unwrap();
    let o = audit_as(&db, "ace_reader", &["--ledger-key", &other.verifier_key()]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_wrong_key_fails_at_genesis() {
    let db = ledger().await;
    let other = NoteSigner::from_seed("audit.test/log", [12; 32]).unwrap();
    let o = acectl(&[
        "audit",
        "--database-url",
        &db.url("ace_reader"),
        "--ledger-key",
        &other.verifier_key(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stdout(&o).starts_with("audit FAILED at block 0: checkpoint does not open"),
        "{}",
        show(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_of_an_envelope_signature_is_named() {
    let db = ledger().await;
    // Signatures are outside the PAE: the digest holds, the envelope's own hash does not.
    tamper(
        &db,
        "UPDATE ledger_entries SET envelope = set_byte(envelope, p, CASE WHEN get_byte(envelope, p) = 65 THEN 66 ELSE 65 END) \
         FROM (SELECT position('\"sig\":\"'::bytea IN envelope) + 6 AS p FROM ledger_entries WHERE idx = 1234) AS s \
         WHERE idx = 1234",
    )
    .await;
    assert_fails_at(&db, "entry 1234", "leaf field envelope_sha256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_of_an_envelope_payload_is_named() {
    let db = ledger().await;
    tamper(
        &db,
        "UPDATE ledger_entries SET envelope = set_byte(envelope, p, CASE WHEN get_byte(envelope, p) = 65 THEN 66 ELSE 65 END) \
         FROM (SELECT position('\"payload\":\"'::bytea IN envelope) + 40 AS p FROM ledger_entries WHERE idx = 2999) AS s \
         WHERE idx = 2999",
    )
    .await;
    assert_fails_at(
        &db,
        "entry 2999",
        "digest column is not the envelope digest",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integrated_time_is_named() {
    let db = ledger().await;
    tamper(
        &db,
        "UPDATE ledger_entries SET integrated_time = integrated_time + 1 WHERE idx = 777",
    )
    .await;
    assert_fails_at(&db, "entry 777", "leaf field integrated_time").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tile_hash_is_named_with_its_position() {
    let db = ledger().await;
    tamper(
        &db,
        "UPDATE ledger_tiles SET hashes = set_byte(hashes, 17 * 32 + 3, get_byte(hashes, 17 * 32 + 3) # 1) \
         WHERE level = 0 AND idx = 5 AND width = 256",
    )
    .await;
    assert_fails_at(
        &db,
        "tile tile/0/005, hash 17",
        "hash 17 (level 0 node over entries from 1297) differs",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_root_is_named() {
    let db = ledger().await;
    tamper(
        &db,
        "UPDATE ledger_blocks SET root_hash = set_byte(root_hash, 0, get_byte(root_hash, 0) # 1) WHERE height = 12",
    )
    .await;
    assert_fails_at(
        &db,
        "block 12",
        "root_hash is not the root of the tree at size 1200",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_signature_is_named() {
    let db = ledger().await;
    // A character in the middle of the signature's base64 (the key hash stays intact).
    tamper(
        &db,
        "UPDATE ledger_blocks SET checkpoint = overlay(checkpoint PLACING \
           CASE WHEN substr(checkpoint, length(checkpoint) - 10, 1) = 'A' THEN 'B' ELSE 'A' END \
           FROM length(checkpoint) - 10 FOR 1) \
         WHERE height = 20",
    )
    .await;
    assert_fails_at(
        &db,
        "block 20",
        "checkpoint does not open with the trusted ledger key(s)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_row_a_block_height_a_missing_entry_and_a_forged_tile_are_named() {
    let db = ledger().await;
    tamper(
        &db,
        "UPDATE ledger_subjects SET value = repeat('0', 64) WHERE idx = 42",
    )
    .await;
    assert_fails_at(
        &db,
        "entry 42",
        "ledger_subjects rows are not the statement's subjects",
    )
    .await;

    let db = ledger().await;
    tamper(
        &db,
        "UPDATE ledger_entries SET block_height = block_height + 1 WHERE idx = 555",
    )
    .await;
    assert_fails_at(
        &db,
        "entry 555",
        "block_height is not the block whose range holds the index",
    )
    .await;

    let db = ledger().await;
    tamper(
        &db,
        "DELETE FROM ledger_subjects WHERE idx = 1500; DELETE FROM ledger_entries WHERE idx = 1500",
    )
    .await;
    assert_fails_at(&db, "entry 1500", "missing: indexes must be gapless from 0").await;

    // A partial tile no block boundary made (blocks of 100 end at widths 32, 132 and 232 in
    // tile 3): the insert needs no tampering, and a reader could serve it.
    let db = ledger().await;
    db.admin()
        .await
        .batch_execute(
            "INSERT INTO ledger_tiles (level, idx, width, hashes) \
             SELECT 0, 3, 100, substr(hashes, 1, 3200) FROM ledger_tiles WHERE level = 0 AND idx = 3 AND width = 256",
        )
        .await
        .unwrap();
    assert_fails_at(&db, "tile tile/0/003.p/100", "never produced").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_servers_that_stop_the_audit_exit_2_and_are_named() {
    let o = acectl(&[
        "audit",
        "--database-url",
        "postgres://ace_reader@127.0.0.1:1/ace",
        "--ledger-key",
        &signer().verifier_key(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("127.0.0.1:1/ace"),
        "{}",
        show(&o)
    );
    let o = acectl(&[
        "audit",
        "--database-url",
        "postgres://ace_reader@127.0.0.1:5432/ace",
        "--ledger-key",
        "not-a-key",
    ])
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--ledger-key"),
        "{}",
        show(&o)
    );
    // No key at all: clap's usage error, also 2.
    let o = acectl(&["audit", "--database-url", "postgres://x@127.0.0.1/ace"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}

/// Serves `body` with `status` at `/v1/checkpoint` on a free local port; returns the base URL.
async fn fake_reader(status: u16, body: String) -> String {
    fake_reader_with_keys(
        status,
        body,
        serde_json::json!({"ledger": [], "producers": []}),
    )
    .await
}

/// GET `path` from `base` (plain HTTP/1.0) and parse the body as JSON.
async fn http_get_json(base: &str, path: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap()
}

/// A reader serving `body` as its checkpoint and `keys` as its `/v1/keys`.
async fn fake_reader_with_keys(status: u16, body: String, keys: serde_json::Value) -> String {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/v1/checkpoint",
            get(move || {
                let body = body.clone();
                async move {
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        [("content-type", "text/plain; charset=utf-8")],
                        body,
                    )
                }
            }),
        )
        .route(
            "/v1/keys",
            get(move || {
                let keys = keys.clone();
                async move { axum::Json(keys) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readers_checkpoint_is_checked_against_the_stored_one() {
    let db = ledger().await;
    let c = db.admin().await;
    let stored = |h: i64| {
        let c = &c;
        async move {
            c.query_one(
                "SELECT checkpoint FROM ledger_blocks WHERE height = $1",
                &[&h],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
        }
    };
    let latest: i64 = c
        .query_one("SELECT max(height) FROM ledger_blocks", &[])
        .await
        .unwrap()
        .get(0);

    // The real reader on this database passes.
    let cfg = ace_reader::Config {
        pool_size: 2,
        tile_cache_bytes: 0,
        head_max_age: std::time::Duration::ZERO,
        ..ace_reader::Config::with_defaults(
            ace_core::config::Secret::new(db.url("ace_reader")),
            vec![signer().verifier()],
        )
    };
    let state = ace_reader::prepare(&cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let real = format!("http://{}", listener.local_addr().unwrap());
    let (stop_reader, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(ace_reader::serve(state, listener, rx));
    let o = audit_as(&db, "ace_reader", &["--reader", &real]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        stdout(&o).contains(
            "/v1/keys: the 12 keys the log's key events register are served as they describe"
        ),
        "{}",
        show(&o)
    );
    // What the reader serves as /v1/keys, for the fakes below.
    let keys = http_get_json(&real, "/v1/keys").await;
    let _ = stop_reader.send(true);

    // The latest and an older stored checkpoint both pass (a reader may lag).
    for h in [latest, 7] {
        let url = fake_reader_with_keys(200, stored(h).await, keys.clone()).await;
        let o = audit_as(&db, "ace_reader", &["--reader", &format!("{url}/")]).await;
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
        assert!(
            stdout(&o).contains(&format!(
                "reader:     GET {url}/v1/checkpoint: checkpoint at tree size"
            )),
            "{}",
            show(&o)
        );
    }

    // A reader whose /v1/keys hides a key the log registers, or serves one with another
    // start of validity, is named.
    let mut hidden = keys.clone();
    let first = hidden["producers"].as_array_mut().unwrap().remove(0);
    let keyid = first["keyid"].as_str().unwrap().to_owned();
    let url = fake_reader_with_keys(200, stored(latest).await, hidden).await;
    let o = audit_as(&db, "ace_reader", &["--reader", &url]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stdout(&o).starts_with(&format!(
            "audit FAILED at reader {url}/v1/keys: /v1/keys does not list key {keyid}"
        )),
        "{}",
        show(&o)
    );
    let mut moved = keys.clone();
    moved["producers"][0]["valid_from"] = "2001-01-01T00:00:00.000Z".into();
    let url = fake_reader_with_keys(200, stored(latest).await, moved).await;
    let o = audit_as(&db, "ace_reader", &["--reader", &url]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stdout(&o).contains("with a valid_from the log's key events do not give"),
        "{}",
        show(&o)
    );

    // A checkpoint signed by the right key for a tree size that is no block's.
    let s = signer();
    let forged = ace_core::checkpoint::sign_checkpoint(
        &ace_core::checkpoint::Checkpoint {
            origin: s.name().into(),
            tree_size: 1234,
            root_hash: [7; 32],
            extensions: vec![],
        },
        &[&s],
    )
    .unwrap();
    let url = fake_reader(200, forged).await;
    let o = audit_as(&db, "ace_reader", &["--reader", &url]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stdout(&o).starts_with(&format!(
            "audit FAILED at reader {url}/v1/checkpoint: the served checkpoint's tree size is no block's"
        )),
        "{}",
        show(&o)
    );

    // A stored checkpoint with one character changed does not open.
    let mut bad = stored(latest).await.into_bytes();
    let p = bad.len() - 10;
    bad[p] = if bad[p] == b'A' { b'B' } else { b'A' };
    let url = fake_reader(200, String::from_utf8(bad).unwrap()).await;
    let o = audit_as(&db, "ace_reader", &["--reader", &url]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stdout(&o).contains("does not open"), "{}", show(&o));

    // A reader that answers an error, or is not there, stops the audit: exit 2.
    let url = fake_reader(503, "down".into()).await;
    let o = audit_as(&db, "ace_reader", &["--reader", &url]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("HTTP 503"),
        "{}",
        show(&o)
    );
    let o = audit_as(&db, "ace_reader", &["--reader", "http://127.0.0.1:1"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = audit_as(&db, "ace_reader", &["--reader", "ftp://reader.example"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--reader"),
        "{}",
        show(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_versions_are_rehashed_and_must_be_kept() {
    let db = ledger().await;
    let text = "[[rule]]\nid = \"m\"\nkind = \"max_subjects\"\nmode = \"deny\"\nmax = 8\n";
    let version = ace_core::policy::version_of(text.as_bytes());
    tamper(
        &db,
        &format!(
            "INSERT INTO ledger_policies (version, source) VALUES ('{version}', '{text}'); \
             UPDATE ledger_entries SET policy_version = '{version}' WHERE idx < 1500"
        ),
    )
    .await;
    let o = audit_as(&db, "ace_reader", &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        stdout(&o).contains("policies:   1 versions"),
        "{}",
        show(&o)
    );

    let unknown = format!("sha256:{}", "0".repeat(64));
    tamper(
        &db,
        &format!("UPDATE ledger_entries SET policy_version = '{unknown}' WHERE idx = 2000"),
    )
    .await;
    assert_fails_at(
        &db,
        "entry 2000",
        "the entry names a policy version whose text is not kept",
    )
    .await;

    tamper(
        &db,
        "UPDATE ledger_entries SET policy_version = NULL WHERE idx = 2000; \
         UPDATE ledger_policies SET source = replace(source, '8', '9')",
    )
    .await;
    assert_fails_at(
        &db,
        &format!("policy {version}"),
        "the kept policy text does not hash to its version",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witness_receipts_are_verified_with_the_given_keys() {
    let db = ledger().await;
    let w = ace_core::witness::CosignatureSigner::from_seed("witness.test/w1", [42; 32]).unwrap();
    let vkey = w.verifier().to_vkey();
    let admin = db.admin().await;
    let row = admin
        .query_one(
            "SELECT height, tree_size, checkpoint FROM ledger_blocks ORDER BY height DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (height, size, note): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
    let body = ace_core::witness::note_body(&note).unwrap();
    let insert = |size: i64, line: String| {
        let vkey = vkey.clone();
        let admin = &admin;
        async move {
            admin
                .execute(
                    "INSERT INTO anchor_receipts (height, tree_size, sink, kind, receipt) \
                     VALUES ($1, $2, 'w1', 'witness', jsonb_build_object('witness', 'witness.test/w1', 'vkey', $3::text, 'cosignatures', jsonb_build_array($4::text)))",
                    &[&height, &size, &vkey, &line],
                )
                .await
                .unwrap();
        }
    };
    insert(size, w.cosign(body, 1_700_000_000)).await;
    let o = audit_as(&db, "ace_reader", &["--witness-key", &vkey]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        stdout(&o).contains("receipts:   1 (1 witness), each for its block's tree size; 1 witness cosignatures and 0 time-stamp tokens verified"),
        "{}",
        show(&o)
    );
    let o = audit_as(&db, "ace_reader", &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        stdout(&o).contains("1 receipts by witness witness.test/w1 NOT checked"),
        "{}",
        show(&o)
    );

    // A cosignature over another tree (a split view) is named.
    let forked = body.replace(&format!("\n{size}\n"), &format!("\n{}\n", size + 1));
    insert(size, w.cosign(&forked, 1_700_000_001)).await;
    let o = audit_as(&db, "ace_reader", &["--witness-key", &vkey]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!("audit FAILED at anchor receipt 2 (sink w1, block {height}): a cosignature does not verify")),
        "{}",
        show(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_stamp_tokens_are_verified_against_the_tsa_certificate() {
    use ace_testkit::tsa::{KeyKind, TestTsa};
    use base64::Engine as _;
    let db = ledger().await;
    let dir = std::env::temp_dir().join(ace_testkit::unique("ace-audit-tsa-"));
    let t = TestTsa::create(&dir, KeyKind::EcP256).unwrap();
    let ca = dir.join("ca.pem");
    let admin = db.admin().await;
    let row = admin
        .query_one(
            "SELECT height, tree_size, checkpoint FROM ledger_blocks ORDER BY height DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (height, size, note): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
    let insert = |data: Vec<u8>| {
        let admin = &admin;
        let t = &t;
        async move {
            let req = ace_core::tsa::request(&data, 9).unwrap();
            let resp = t.reply(&req.der).unwrap();
            let token = ace_core::tsa::verify_response(
                &resp,
                &req,
                &data,
                &ace_core::tsa::TsaTrust::from_pem(&t.ca_pem()).unwrap(),
            )
            .unwrap();
            let b64 = base64::engine::general_purpose::STANDARD.encode(&token.token_der);
            admin
                .execute(
                    "INSERT INTO anchor_receipts (height, tree_size, sink, kind, receipt) \
                     VALUES ($1, $2, 'tsa', 'rfc3161', jsonb_build_object('token', $3::text))",
                    &[&height, &size, &b64],
                )
                .await
                .unwrap();
        }
    };
    insert(note.clone().into_bytes()).await;
    let o = audit_as(&db, "ace_reader", &["--tsa-cert", ca.to_str().unwrap()]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        stdout(&o).contains("0 witness cosignatures and 1 time-stamp tokens verified"),
        "{}",
        show(&o)
    );
    let o = audit_as(&db, "ace_reader", &[]).await;
    assert!(
        stdout(&o).contains("1 rfc3161 receipts NOT checked"),
        "{}",
        show(&o)
    );

    // A token over something else than the block's checkpoint is named.
    insert(b"another checkpoint".to_vec()).await;
    let o = audit_as(&db, "ace_reader", &["--tsa-cert", ca.to_str().unwrap()]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stdout(&o).starts_with(&format!(
            "audit FAILED at anchor receipt 2 (sink tsa, block {height}): the time-stamp token does not verify"
        )),
        "{}",
        show(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The operators' trail: rows of `operator_audit` and the `dlq_actions` recorded in them.
struct Trail {
    /// Each row's hash, row 1 first.
    hashes: Vec<[u8; 32]>,
    /// Each row as inserted, row 1 first.
    records: Vec<AuditRecord>,
    /// The ids of the two actions: a discard recorded in row 2, a retry in row 3.
    actions: [i64; 2],
}

/// A small ledger (20 entries in 4 blocks; the audit needs one) with a trail of four rows
/// and two DLQ actions, all written as the dashboard's role, as the dashboard writes them:
/// the V7 trigger checks each row's seq and prev_hash, the hashes are core's `row_hash`.
async fn ledger_with_trail() -> (TestDb, Trail) {
    let db = TestDb::new().await;
    let mut admin = db.admin().await;
    let opts = SynthOptions {
        entries: 20,
        block_size: 5,
        producers: 2,
        ..Default::default()
    };
    synth::load(&mut admin, &signer(), &opts).await.unwrap();
    // The writer's rejections (the dashboard never writes dlq_items).
    let mut items = Vec::new();
    for seq in [7i64, 9] {
        let id: i64 = admin
            .query_one(
                "INSERT INTO dlq_items (stream_seq, stored_at, subject, producer, code, detail, envelope) \
                 VALUES ($1, now(), 'ace.intake.synth-0', 'synth-0', 'bad_signature', \
                         'signature 0 does not verify', '\\x7b7d'::bytea) RETURNING id",
                &[&seq],
            )
            .await
            .unwrap()
            .get(0);
        items.push(id);
    }

    let dash = ace_core::db::connect(&db.url("ace_dashboard"))
        .await
        .unwrap();
    let rows = [
        (
            "operator",
            "login",
            "session".to_string(),
            r#"{"via":"password"}"#.to_string(),
        ),
        (
            "operator",
            "dlq.discard",
            format!("dlq:{}", items[0]),
            r#"{"note":"spam from a test producer"}"#.to_string(),
        ),
        (
            "operator",
            "dlq.retry",
            format!("dlq:{}", items[1]),
            r#"{"outcome":"resubmitted","stream_seq":42}"#.to_string(),
        ),
        ("viewer", "login", "session".to_string(), "{}".to_string()),
    ];
    let mut prev = GENESIS;
    let mut trail = Trail {
        hashes: Vec::new(),
        records: Vec::new(),
        actions: [0; 2],
    };
    for (i, (role, action, target, detail)) in rows.into_iter().enumerate() {
        let rec = AuditRecord {
            seq: i as i64 + 1,
            at: 1_764_600_000_000 + 1000 * i as i64,
            actor: "alice".into(),
            role: role.into(),
            action: action.into(),
            target,
            detail,
        };
        let hash = row_hash(&prev, &rec).unwrap();
        dash.execute(
            "INSERT INTO operator_audit (seq, at, actor, role, action, target, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &rec.seq,
                &rec.at,
                &rec.actor,
                &rec.role,
                &rec.action,
                &rec.target,
                &rec.detail,
                &prev.as_slice(),
                &hash.as_slice(),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("inserting operator_audit row {}: {e}", rec.seq));
        trail.hashes.push(hash);
        trail.records.push(rec);
        prev = hash;
    }
    trail.actions[0] = dash
        .query_one(
            "INSERT INTO dlq_actions (dlq_id, action, note, actor, audit_seq) \
             VALUES ($1, 'discard', 'spam from a test producer', 'alice', 2) RETURNING id",
            &[&items[0]],
        )
        .await
        .unwrap()
        .get(0);
    trail.actions[1] = dash
        .query_one(
            "INSERT INTO dlq_actions (dlq_id, action, actor, msg_id, stream_seq, audit_seq) \
             VALUES ($1, 'retry', 'alice', 'sha256:00', 42, 3) RETURNING id",
            &[&items[1]],
        )
        .await
        .unwrap()
        .get(0);
    (db, trail)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intact_operator_trail_passes_with_its_head() {
    let (db, trail) = ledger_with_trail().await;
    let o = audit_as(&db, "ace_reader", &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "operator_audit: 4 rows, head {} ",
            hex::encode(trail.hashes[3])
        )),
        "{out}"
    );
    assert!(out.contains("dlq_actions: 2, "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_operator_audit_row_is_named() {
    let (db, _) = ledger_with_trail().await;
    tamper(
        &db,
        r#"UPDATE operator_audit SET detail = '{"note":"nothing to see"}' WHERE seq = 2"#,
    )
    .await;
    assert_fails_at(&db, "operator_audit row 2", "(the row was altered)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_operator_audit_row_is_named() {
    let (db, _) = ledger_with_trail().await;
    tamper(&db, "DELETE FROM operator_audit WHERE seq = 2").await;
    assert_fails_at(
        &db,
        "operator_audit row 3",
        "expected seq 2 (rows missing or out of order)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehashed_operator_audit_row_breaks_the_next_link() {
    let (db, trail) = ledger_with_trail().await;
    // Row 2 rewritten with a hash that is right for its new content: only row 3's link,
    // which still names the old hash, shows it.
    let mut edited = trail.records[1].clone();
    edited.actor = "mallory".into();
    let rehashed = row_hash(&trail.hashes[0], &edited).unwrap();
    tamper(
        &db,
        &format!(
            "UPDATE operator_audit SET actor = 'mallory', hash = '\\x{}'::bytea WHERE seq = 2",
            hex::encode(rehashed)
        ),
    )
    .await;
    assert_fails_at(&db, "operator_audit row 3", "prev_hash is").await;
    let o = audit_as(&db, "postgres", &[]).await;
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "expected: {} (the hash of row 2)",
            hex::encode(rehashed)
        )) && out.contains(&format!(
            "found:    {} (stored prev_hash)",
            hex::encode(trail.hashes[1])
        )),
        "{}",
        show(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_actions_must_name_an_audit_row_and_a_dlq_item() {
    let (db, trail) = ledger_with_trail().await;
    // Cutting the chain's tail leaves a chain that verifies; the retry recorded in row 3
    // no longer has its record.
    tamper(&db, "DELETE FROM operator_audit WHERE seq >= 3").await;
    assert_fails_at(
        &db,
        &format!("dlq action {}", trail.actions[1]),
        "audit_seq 3 names no operator_audit row",
    )
    .await;
    // The earlier action, pointed at a DLQ item that does not exist (foreign keys off),
    // is the first one named.
    tamper(
        &db,
        &format!(
            "UPDATE dlq_actions SET dlq_id = 999999 WHERE id = {}",
            trail.actions[0]
        ),
    )
    .await;
    assert_fails_at(
        &db,
        &format!("dlq action {}", trail.actions[0]),
        "dlq_id 999999 names no dlq_items row",
    )
    .await;
}
