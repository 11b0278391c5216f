//! TLS between the ledger's clients and NATS, on a private nats-server 2.9 with a test PKI
//! made at test time (`ace_testkit::TestCerts`, OpenSSL's command line): a server that
//! requires TLS refuses a plaintext client and a client that does not trust its CA, and
//! serves the writer and acectl over TLS; with `verify: true` it refuses a client without
//! a certificate, or with one from another CA, and accepts the client certificate.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ace_core::checkpoint::NoteSigner;
use ace_core::nats::{ConnectOptions, Names, NatsError, Tls};
use ace_testkit::{free_port, unique, PrivateNats, TestCerts, TestDb};

type Server = PrivateNats;

/// A private nats-server with JetStream and `tls { ... }` (the certificate paths from
/// `certs`; `verify` asks every client for a certificate).
fn tls_server(dir: &Path, certs: &TestCerts, verify: bool) -> Server {
    PrivateNats::start(
        dir,
        &format!(
            "jetstream {{ store_dir: {store:?} }}\n\
             tls {{\n  cert_file: {cert:?}\n  key_file: {key:?}\n  ca_file: {ca:?}\n  verify: {verify}\n  timeout: 5\n}}\n",
            store = dir.join("js").display().to_string(),
            cert = certs.server_cert().display().to_string(),
            key = certs.server_key().display().to_string(),
            ca = certs.ca().display().to_string(),
        ),
    )
}

/// A fresh directory with a test PKI in `pki/`.
fn setup(tag: &str) -> (PathBuf, TestCerts) {
    let dir = std::env::temp_dir().join(unique(tag));
    std::fs::create_dir_all(&dir).expect("dir");
    let certs = TestCerts::create(&dir.join("pki")).expect("test certificates");
    (dir, certs)
}

fn start(dir: &Path, certs: &TestCerts, verify: bool) -> Server {
    tls_server(dir, certs, verify)
}

fn opts(url: &str, tls: Tls) -> ConnectOptions {
    ConnectOptions {
        url: url.into(),
        creds_file: None,
        nkey_file: None,
        name: "nats-tls-test".into(),
        tls,
    }
}

fn trusting(certs: &TestCerts) -> Tls {
    Tls::new(Some(certs.ca()), None, None).expect("tls")
}

fn with_client_cert(certs: &TestCerts, client: &TestCerts) -> Tls {
    Tls::new(
        Some(certs.ca()),
        Some(client.client_cert()),
        Some(client.client_key()),
    )
    .expect("tls")
}

async fn connect(url: &str, tls: Tls) -> Result<async_nats::Client, NatsError> {
    // Generous: two cores shared with other builds and tests.
    tokio::time::timeout(
        Duration::from_secs(60),
        ace_core::nats::connect(&opts(url, tls)),
    )
    .await
    .expect("connect answers within 60 s")
}

/// Streams on the private server, created over TLS; the intake stream's message count.
async fn init_streams(
    client: &async_nats::Client,
    names: &Names,
) -> async_nats::jetstream::Context {
    let js = async_nats::jetstream::new(client.clone());
    ace_core::nats::init(&js, names, &Default::default())
        .await
        .expect("streams over TLS");
    js
}

async fn intake_count(js: &async_nats::jetstream::Context, names: &Names) -> u64 {
    js.get_stream(names.intake_stream())
        .await
        .expect("intake stream")
        .info()
        .await
        .expect("info")
        .state
        .messages
}

fn acectl(args: &[&str], envs: &[(&str, String)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_acectl"));
    c.args(args);
    // The caller's environment must not leak TLS settings into the child.
    for var in [
        Tls::CA_VAR,
        Tls::CERT_VAR,
        Tls::KEY_VAR,
        "ACE_NATS_CREDS",
        "ACE_NATS_NKEY_FILE",
    ] {
        c.env_remove(var);
    }
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("running acectl")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "acectl failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Speaks the NATS protocol in plaintext, as a client without TLS would: reads INFO,
/// sends CONNECT, a PUB on `subject` and a PING, and returns the INFO line and all the
/// server said before it closed the connection (or 30 s passed).
fn plaintext_publish(port: u16, subject: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("tcp connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut info = Vec::new();
    let mut byte = [0u8; 1];
    while !info.ends_with(b"\r\n") {
        match s.read(&mut byte) {
            Ok(1) => info.push(byte[0]),
            _ => break,
        }
    }
    let body = "plaintext";
    let _ = s.write_all(
        format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\"lang\":\"raw\",\"version\":\"0\"}}\r\nPUB {subject} {}\r\n{body}\r\nPING\r\n",
            body.len()
        )
        .as_bytes(),
    );
    // Until the server closes the connection, or answers the PING (a session: the
    // regression this looks for; no need to wait for the timeout then).
    let mut rest = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&rest).contains("PONG") {
            break;
        }
    }
    (
        String::from_utf8_lossy(&info).into_owned(),
        String::from_utf8_lossy(&rest).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_plaintext_client_is_refused() {
    let (dir, certs) = setup("ace-natstls-a-");
    let server = start(&dir, &certs, false);
    let url = server.url();
    let names = Names::new(&unique("n")).expect("prefix");
    let admin = connect(&url, trusting(&certs))
        .await
        .expect("a client trusting the CA connects");
    let js = init_streams(&admin, &names).await;

    let port = server.port;
    let subject = names.intake_subject("acme");
    let (info, answer) = tokio::task::spawn_blocking(move || plaintext_publish(port, &subject))
        .await
        .expect("plaintext client");
    assert!(
        info.contains("\"tls_required\":true"),
        "the server announces TLS: {info}"
    );
    assert!(
        !answer.contains("PONG"),
        "a plaintext client must not get a session: {answer:?}"
    );
    assert_eq!(
        intake_count(&js, &names).await,
        0,
        "nothing published in plaintext reached the intake stream"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_not_trusting_the_ca_is_refused() {
    let (dir, certs) = setup("ace-natstls-d-");
    let server = start(&dir, &certs, false);
    let url = server.url();

    // No CA given: the server's certificate is checked against the system roots only.
    let e = connect(&url, Tls::default())
        .await
        .expect_err("a client that does not trust the CA is refused");
    let msg = e.to_string();
    eprintln!("refused as expected: {msg}");
    assert!(matches!(e, NatsError::Tls { .. }), "{msg}");
    assert!(
        msg.contains(&url) && msg.contains("TLS is required") && msg.contains(Tls::CA_VAR),
        "{msg}"
    );
    // Another CA given: refused as well, naming that file.
    let (other_dir, other) = setup("ace-natstls-d2-");
    let e = connect(&url, trusting(&other))
        .await
        .expect_err("a client trusting another CA is refused")
        .to_string();
    assert!(
        e.contains(&url) && e.contains(&other.ca().display().to_string()),
        "{e}"
    );
    // acectl says the same, with the URL.
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || acectl(&["nats", "init", "--prefix", "x"], &[("ACE_NATS_URL", url)])
    })
    .await
    .expect("acectl");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!("acectl refused as expected: {err}");
    assert!(
        !out.status.success() && err.contains(&url) && err.contains(Tls::CA_VAR),
        "{err}"
    );

    // Files that are not what they should be are named, with the server.
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("junk");
    let e = connect(&url, Tls::new(Some(junk.clone()), None, None).expect("tls"))
        .await
        .expect_err("a CA file without a certificate")
        .to_string();
    assert!(
        e.contains(&url) && e.contains(&junk.display().to_string()) && e.contains("PEM"),
        "{e}"
    );
    let missing = dir.join("missing.pem");
    let e = connect(
        &url,
        Tls::new(
            Some(certs.ca()),
            Some(missing.clone()),
            Some(certs.client_key()),
        )
        .expect("tls"),
    )
    .await
    .expect_err("an unreadable client certificate")
    .to_string();
    assert!(
        e.contains(&missing.display().to_string()) && e.contains(Tls::CERT_VAR),
        "{e}"
    );
    assert!(Tls::new(None, Some(certs.client_cert()), None)
        .expect_err("a certificate without its key")
        .to_string()
        .contains(Tls::KEY_VAR));

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_required_tls_refuses_a_plaintext_server() {
    // A private plaintext server: a client with TLS settings must not fall back to
    // plaintext.
    let dir = std::env::temp_dir().join(unique("ace-natstls-p-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let certs = TestCerts::create(&dir.join("pki")).expect("certs");
    let port = free_port();
    let conf = dir.join("plain.conf");
    std::fs::write(&conf, format!("listen: \"127.0.0.1:{port}\"\n")).expect("conf");
    let child = Command::new("/usr/sbin/nats-server")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server");
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "plaintext nats-server did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = server.url();
    let e = connect(&url, trusting(&certs))
        .await
        .expect_err("TLS required by the client, plaintext server");
    let msg = e.to_string();
    eprintln!("refused as expected: {msg}");
    assert!(
        matches!(e, NatsError::Tls { .. }) && msg.contains(&url),
        "{msg}"
    );
    connect(&url, Tls::default())
        .await
        .expect("without TLS settings the plaintext server is fine");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_writer_and_acectl_publish_over_tls() {
    let (dir, certs) = setup("ace-natstls-b-");
    let server = start(&dir, &certs, false);
    let url = server.url();
    let prefix = unique("n");
    let names = Names::new(&prefix).expect("prefix");
    let db = TestDb::new().await;
    let admin_url = db.url("postgres");

    // acectl nats init over TLS.
    let tls_env = vec![
        ("ACE_NATS_URL", url.clone()),
        (Tls::CA_VAR, certs.ca().display().to_string()),
        ("ACE_PREFIX", prefix.clone()),
    ];
    ok(&acectl(&["nats", "init"], &tls_env));
    ok(&acectl(
        &["producer", "add", "acme"],
        &[("ACE_DATABASE_URL", admin_url.clone())],
    ));
    let pk = dir.join("acme.key");
    ok(&acectl(
        &[
            "key",
            "add",
            "acme",
            "--generate",
            "--out",
            pk.to_str().expect("path"),
        ],
        &[("ACE_DATABASE_URL", admin_url.clone())],
    ));

    // The writer, connecting with the same TLS settings.
    let signer = NoteSigner::generate("natstls.test/log").expect("ledger key");
    let key_file = dir.join("ledger.key");
    std::fs::write(&key_file, signer.to_key_file()).expect("key file");
    let wcfg = ace_writer::Config {
        nats_url: url.clone(),
        nats_tls: trusting(&certs),
        prefix: prefix.clone(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        batch_max_delay: Duration::from_millis(20),
        standby_poll: Duration::from_millis(200),
        retry_max: Duration::from_secs(1),
        nak_delay: Duration::from_millis(200),
        ..ace_writer::Config::with_defaults(
            ace_core::config::Secret::new(db.url("ace_writer")),
            key_file,
        )
    };
    let (stop, rx) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(ace_writer::run(wcfg, rx));

    // acectl publishes over TLS and gets the writer's ack.
    let statement = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/statement.json");
    let out = tokio::task::spawn_blocking({
        let pk = pk.clone();
        let tls_env = tls_env.clone();
        move || {
            acectl(
                &[
                    "publish",
                    "--producer",
                    "acme",
                    "--timeout-secs",
                    "120",
                    "--key",
                    pk.to_str().expect("path"),
                    "--statement",
                    statement.to_str().expect("path"),
                ],
                &tls_env,
            )
        }
    })
    .await
    .expect("acectl publish");
    let ack: serde_json::Value = serde_json::from_str(&ok(&out)).expect("ack JSON");
    assert_eq!(ack["status"], "accepted", "{ack}");
    // After the key events of acme's registration and key (entries 0 and 1).
    assert_eq!(ack["index"], 2, "{ack}");

    let client = connect(&url, trusting(&certs)).await.expect("connects");
    let js = async_nats::jetstream::new(client);
    assert_eq!(intake_count(&js, &names).await, 1);

    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), writer).await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_requires_the_client_certificate() {
    let (dir, certs) = setup("ace-natstls-c-");
    let server = start(&dir, &certs, true);
    let url = server.url();
    let names = Names::new(&unique("n")).expect("prefix");

    // Trusting the server, but no client certificate: refused.
    let e = connect(&url, trusting(&certs))
        .await
        .expect_err("no client certificate, verify: true");
    let msg = e.to_string();
    eprintln!("refused as expected: {msg}");
    assert!(
        matches!(e, NatsError::Tls { .. })
            && msg.contains(&url)
            && msg.contains("requires a client certificate"),
        "{msg}"
    );
    // A client certificate from another CA: refused, naming the certificate.
    let (other_dir, other) = setup("ace-natstls-c2-");
    let e = connect(&url, with_client_cert(&certs, &other))
        .await
        .expect_err("a client certificate the server's CA did not sign");
    let msg = e.to_string();
    eprintln!("refused as expected: {msg}");
    assert!(
        matches!(e, NatsError::Tls { .. })
            && msg.contains(&url)
            && msg.contains("refused the client certificate")
            && msg.contains(&other.client_cert().display().to_string()),
        "{msg}"
    );
    // The client certificate: accepted, and JetStream works.
    let client = connect(&url, with_client_cert(&certs, &certs))
        .await
        .expect("the client certificate is accepted");
    let js = init_streams(&client, &names).await;
    js.publish(names.intake_subject("acme"), "over mutual TLS".into())
        .await
        .expect("publish")
        .await
        .expect("stored by JetStream");
    assert_eq!(intake_count(&js, &names).await, 1);

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other_dir);
}
