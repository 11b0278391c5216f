//! `acectl verify` against a real reader over TCP on the real Postgres: entries verify until
//! one is tampered with (as superuser, triggers off), and then exactly that one fails at the
//! named step; a monitor's state follows the log and refuses forks and rollbacks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ace_core::checkpoint::NoteSigner;
use ace_reader::config::Config;
use ace_testkit::{SynthOptions, TestDb};
use tokio::sync::watch;

const ORIGIN: &str = "verify.test/log";

struct Reader {
    url: String,
    stop: watch::Sender<bool>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A reader on a free port, caching nothing, so that tampering shows at once.
async fn reader(db: &TestDb, signer: &NoteSigner) -> Reader {
    let cfg = Config {
        pool_size: 2,
        tile_cache_bytes: 0,
        head_max_age: Duration::ZERO,
        ..Config::with_defaults(
            ace_core::config::Secret::new(db.url("ace_reader")),
            vec![signer.verifier()],
        )
    };
    let state = ace_reader::prepare(&cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, rx) = watch::channel(false);
    tokio::spawn(ace_reader::serve(Arc::clone(&state), listener, rx));
    Reader { url, stop }
}

async fn grow(db: &TestDb, signer: &NoteSigner, seed: u64, from: u64, sizes: &[u64]) {
    let mut admin = db.admin().await;
    let mut at = from;
    for &size in sizes {
        let n = size - at;
        let opts = SynthOptions {
            entries: n,
            block_size: n,
            producers: 2,
            seed,
            entries_per_transaction: n,
            // Entries addressed by position: the registrations' key events stay pending.
            key_events: false,
            ..Default::default()
        };
        ace_testkit::load(&mut admin, signer, &opts).await.unwrap();
        at = size;
    }
}

struct Run {
    code: i32,
    out: String,
    err: String,
}

async fn acectl(args: &[&str]) -> Run {
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_acectl"))
        .args(args)
        .env_remove("ACE_READER_URL")
        .output()
        .await
        .unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

async fn verify_entry(r: &Reader, key: &str, index: u64, tree_size: Option<u64>) -> Run {
    let index = index.to_string();
    let size = tree_size.map(|s| s.to_string());
    let mut args = vec![
        "verify",
        "entry",
        "--reader",
        &r.url,
        "--ledger-key",
        key,
        "--index",
        &index,
    ];
    if let Some(s) = &size {
        args.extend(["--tree-size", s.as_str()]);
    }
    acectl(&args).await
}

fn passed(r: &Run, what: &str) {
    assert_eq!(r.code, 0, "{what}: {}{}", r.out, r.err);
    assert!(r.out.contains("verified"), "{what}: {}", r.out);
}

fn failed_at(r: &Run, index: u64, step: &str, mention: &str) {
    assert_eq!(r.code, 1, "entry {index}: {}{}", r.out, r.err);
    let want = format!("entry {index}: {step} check failed");
    assert!(r.err.contains(&want), "want {want:?} in: {}", r.err);
    assert!(r.err.contains(mention), "want {mention:?} in: {}", r.err);
}

async fn tamper(db: &TestDb, sql: &str) {
    let admin = db.admin().await;
    admin
        .batch_execute(&format!("SET session_replication_role = replica; {sql}"))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_entry_passes_then_names_the_step_each_tampering_breaks() {
    let db = TestDb::new().await;
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    grow(&db, &signer, 3, 0, &[300, 600]).await;
    let r = reader(&db, &signer).await;
    let key = signer.verifier().to_vkey();
    for (i, size) in [
        (0, None),
        (299, None),
        (599, None),
        (10, Some(300)),
        (299, Some(300)),
    ] {
        passed(
            &verify_entry(&r, &key, i, size).await,
            &format!("entry {i}"),
        );
    }

    // One byte of an envelope (inside a signature, so the JSON still parses): its leaf no
    // longer matches the bytes.
    tamper(
        &db,
        "UPDATE ledger_entries SET envelope = overlay(envelope placing \
           (CASE WHEN get_byte(envelope, position('\"sig\":\"'::bytea in envelope) + 6) = 65 THEN 'B' ELSE 'A' END)::bytea \
           from position('\"sig\":\"'::bytea in envelope) + 7 for 1) WHERE idx = 10",
    )
    .await;
    failed_at(
        &verify_entry(&r, &key, 10, None).await,
        10,
        "leaf",
        "envelope_sha256",
    );
    passed(&verify_entry(&r, &key, 11, None).await, "entry 11");

    // An integrated time.
    tamper(
        &db,
        "UPDATE ledger_entries SET integrated_time = integrated_time + 1 WHERE idx = 20",
    )
    .await;
    failed_at(
        &verify_entry(&r, &key, 20, None).await,
        20,
        "leaf",
        "integrated_time",
    );
    passed(&verify_entry(&r, &key, 21, Some(300)).await, "entry 21");

    // A tile hash: entry 40's leaf hash in the full level-0 tile.
    tamper(
        &db,
        "UPDATE ledger_tiles SET hashes = overlay(hashes placing '\\xff'::bytea from 40 * 32 + 1 for 1) \
         WHERE level = 0 AND idx = 0 AND width = 256",
    )
    .await;
    failed_at(
        &verify_entry(&r, &key, 40, None).await,
        40,
        "inclusion proof",
        "inconsistent",
    );
    passed(&verify_entry(&r, &key, 500, None).await, "entry 500");

    // A block's checkpoint signature (the one for tree size 300).
    let admin = db.admin().await;
    let note: String = admin
        .query_one("SELECT checkpoint FROM ledger_blocks WHERE height = 1", &[])
        .await
        .unwrap()
        .get(0);
    let forged = flip_signature_bit(&note);
    admin
        .batch_execute("SET session_replication_role = replica")
        .await
        .unwrap();
    admin
        .execute(
            "UPDATE ledger_blocks SET checkpoint = $1 WHERE height = 1",
            &[&forged],
        )
        .await
        .unwrap();
    // Blocks are immutable, so a reader keeps those it has read: ask a fresh one.
    let r = reader(&db, &signer).await;
    failed_at(
        &verify_entry(&r, &key, 270, Some(300)).await,
        270,
        "checkpoint signature",
        "",
    );
    passed(
        &verify_entry(&r, &key, 270, None).await,
        "entry 270 at the latest size",
    );

    // A block root (not the latest: a reader refuses to start on a latest block whose
    // root its checkpoint does not sign): its tiles no longer prove anything against it.
    tamper(
        &db,
        "UPDATE ledger_blocks SET root_hash = sha256(root_hash) WHERE height = 1",
    )
    .await;
    let r = reader(&db, &signer).await;
    failed_at(
        &verify_entry(&r, &key, 250, Some(300)).await,
        250,
        "inclusion proof",
        "block 1",
    );
    passed(&verify_entry(&r, &key, 450, None).await, "entry 450");

    // Usage errors and an unreachable reader are exit 2, naming the cause.
    let bad = acectl(&[
        "verify",
        "entry",
        "--reader",
        &r.url,
        "--ledger-key",
        "nope",
        "--index",
        "1",
    ])
    .await;
    assert_eq!(bad.code, 2);
    assert!(bad.err.contains("--ledger-key"), "{}", bad.err);
    let gone = acectl(&[
        "verify",
        "entry",
        "--reader",
        "http://127.0.0.1:1",
        "--ledger-key",
        &key,
        "--index",
        "1",
    ])
    .await;
    assert_eq!(gone.code, 2);
    assert!(gone.err.contains("127.0.0.1:1"), "{}", gone.err);
    let missing = verify_entry(&r, &key, 600, None).await;
    assert_eq!(missing.code, 2);
    assert!(
        missing.err.contains("404") && missing.err.contains("no entry 600"),
        "{}",
        missing.err
    );
}

/// The note with one bit of its ed25519 signature (after the 4-byte key hash) flipped.
fn flip_signature_bit(note: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (body, sig_line) = note.trim_end_matches('\n').rsplit_once('\n').unwrap();
    let (prefix, sig) = sig_line.rsplit_once(' ').unwrap();
    let mut raw = b64.decode(sig).unwrap();
    raw[10] ^= 1;
    format!("{body}\n{prefix} {}\n", b64.encode(raw))
}

fn state_size(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_consistency_follows_the_log_and_refuses_forks_loudly() {
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    let key = signer.verifier().to_vkey();
    let dir = std::env::temp_dir().join(format!("acectl-consistency-{}", ace_testkit::unique("")));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("trusted-checkpoint");
    let state_arg = state.to_str().unwrap().to_string();
    let check = |url: String| {
        let key = key.clone();
        let state_arg = state_arg.clone();
        async move {
            acectl(&[
                "verify",
                "consistency",
                "--reader",
                &url,
                "--ledger-key",
                &key,
                "--state",
                &state_arg,
            ])
            .await
        }
    };

    let a = TestDb::new().await;
    grow(&a, &signer, 1, 0, &[100]).await;
    let ra = reader(&a, &signer).await;
    let first = check(ra.url.clone()).await;
    assert_eq!(first.code, 0, "{}", first.err);
    assert!(first.out.contains("first use"), "{}", first.out);
    assert_eq!(state_size(&state), "100");

    grow(&a, &signer, 1, 100, &[250, 400]).await;
    let grown = check(ra.url.clone()).await;
    assert_eq!(grown.code, 0, "{}", grown.err);
    assert!(grown.out.starts_with("consistent"), "{}", grown.out);
    assert_eq!(state_size(&state), "400");
    let again = check(ra.url.clone()).await;
    assert!(again.out.starts_with("unchanged"), "{}", again.out);

    // Another history signed by the same key: same size, other root.
    let b = TestDb::new().await;
    grow(&b, &signer, 2, 0, &[400]).await;
    let rb = reader(&b, &signer).await;
    let fork = check(rb.url.clone()).await;
    assert_eq!(fork.code, 1, "{}{}", fork.out, fork.err);
    assert!(
        fork.err.contains("FORK") && fork.err.contains("tree size 400"),
        "{}",
        fork.err
    );
    // And grown past the trusted size: the proof fails.
    grow(&b, &signer, 2, 400, &[500]).await;
    let fork = check(rb.url.clone()).await;
    assert_eq!(fork.code, 1, "{}{}", fork.out, fork.err);
    assert!(
        fork.err.contains("FORK") && fork.err.contains("does not extend"),
        "{}",
        fork.err
    );
    assert_eq!(
        state_size(&state),
        "400",
        "a fork must not move the trusted state"
    );
    // Another history with no checkpoint at the trusted size (a restore from an older
    // backup that a writer then continued): not provable, so not verified (exit 1).
    let e = TestDb::new().await;
    grow(&e, &signer, 3, 0, &[300, 600]).await;
    let re = reader(&e, &signer).await;
    let unprovable = check(re.url.clone()).await;
    assert_eq!(unprovable.code, 1, "{}{}", unprovable.out, unprovable.err);
    assert!(
        unprovable.err.contains("FORK or rollback")
            && unprovable.err.contains("no checkpoint has tree size 400"),
        "{}",
        unprovable.err
    );
    assert_eq!(state_size(&state), "400");

    // A smaller log: a rollback or a lagging replica, refused, state kept.
    let c = TestDb::new().await;
    grow(&c, &signer, 1, 0, &[50]).await;
    let rc = reader(&c, &signer).await;
    let old = check(rc.url.clone()).await;
    assert_eq!(old.code, 1);
    assert!(
        old.err.contains("older than the trusted one"),
        "{}",
        old.err
    );
    assert_eq!(state_size(&state), "400");

    // A checkpoint signed by another key is refused before anything else.
    let other = NoteSigner::generate(ORIGIN).unwrap();
    let d = TestDb::new().await;
    grow(&d, &other, 1, 0, &[500]).await;
    let rd = reader(&d, &other).await;
    let foreign = check(rd.url.clone()).await;
    assert_eq!(foreign.code, 1);
    assert!(foreign.err.contains("does not verify"), "{}", foreign.err);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A TLS front for a plain reader, with a self-signed certificate for `localhost`: what an
/// operator's reverse proxy does. Returns the https base URL and the CA file.
async fn tls_front(plain: &str, dir: &Path) -> (String, std::path::PathBuf) {
    use tokio_rustls::rustls;
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let ca = dir.join("reader-ca.pem");
    std::fs::write(&ca, cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = plain.trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut back) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut back).await;
            });
        }
    });
    (format!("https://localhost:{port}"), ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_speaks_https_and_checks_the_certificate() {
    let db = TestDb::new().await;
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    grow(&db, &signer, 4, 0, &[20]).await;
    let r = reader(&db, &signer).await;
    let dir = std::env::temp_dir().join(format!("acectl-tls-{}", ace_testkit::unique("")));
    std::fs::create_dir_all(&dir).unwrap();
    let (url, ca) = tls_front(&r.url, &dir).await;
    let key = signer.verifier().to_vkey();
    let ca = ca.to_str().unwrap().to_string();
    let ok = acectl(&[
        "verify",
        "entry",
        "--reader",
        &url,
        "--reader-ca-file",
        &ca,
        "--ledger-key",
        &key,
        "--index",
        "7",
    ])
    .await;
    passed(&ok, "entry 7 over https");
    // The same reader without its CA: the certificate is refused, the check cannot run.
    let refused = acectl(&[
        "verify",
        "entry",
        "--reader",
        &url,
        "--ledger-key",
        &key,
        "--index",
        "7",
    ])
    .await;
    assert_eq!(refused.code, 2, "{}{}", refused.out, refused.err);
    assert!(
        refused.err.contains("TLS with localhost") && refused.err.contains("certificate"),
        "{}",
        refused.err
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
