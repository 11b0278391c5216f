//! NKey users and subject permissions rendered by acectl, enforced by a private
//! nats-server started with the rendered authorization: a producer may publish only to
//! its own intake subject and read only its own acks, has no JetStream API, and is shut
//! out while suspended; the writer works with only its own rights.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ace_core::checkpoint::NoteSigner;
use ace_core::envelope::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use ace_core::nats::Names;
use ace_testkit::{unique, PrivateNats, TestDb};
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use rand::Rng;

fn acectl(args: &[&str], db: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_acectl"))
        .args(args)
        .env("ACE_DATABASE_URL", db)
        .output()
        .expect("running acectl")
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

type Server = PrivateNats;

/// A private nats-server with JetStream, authorized by the rendered `auth.conf` beside it.
fn acl_server(dir: &Path) -> Server {
    PrivateNats::start(
        dir,
        &format!(
            "jetstream {{ store_dir: {:?} }}\ninclude \"auth.conf\"\n",
            dir.join("js").display().to_string()
        ),
    )
}

async fn connect(url: &str, seed_file: &Path) -> Result<async_nats::Client, String> {
    let seed = std::fs::read_to_string(seed_file).map_err(|e| e.to_string())?;
    async_nats::ConnectOptions::new()
        .nkey(seed.trim().to_string())
        .connect(url)
        .await
        .map_err(|e| e.to_string())
}

fn envelope(key: &SigningKey, n: u32) -> Vec<u8> {
    let st = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": format!("a{n}"), "digest": {"sha256": format!("{:064x}", n)}}],
        "predicateType": "https://example.com/p",
        "predicate": {},
    });
    Envelope::sign(IN_TOTO_PAYLOAD_TYPE, st.to_string().as_bytes(), key).to_json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_nats_user_gets_only_its_own_subjects() {
    let db = TestDb::new().await;
    let admin_url = db.url("postgres");
    let dir: PathBuf = std::env::temp_dir().join(unique("ace-natsacl-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let prefix = unique("n");
    let names = Names::new(&prefix).expect("prefix");

    // Producers with signing keys, and a NATS user for each producer and service.
    let admin = db.admin().await;
    let mut keys = Vec::new();
    let seed = |n: &str| dir.join(format!("{n}.nk"));
    // acme in one step: producer, signing key and NATS user; beta step by step.
    let key_file = dir.join("acme.key");
    let onboard_acme = || {
        ok(&acectl(
            &[
                "producer",
                "add",
                "acme",
                "--key-out",
                key_file.to_str().expect("path"),
                "--nats-seed-out",
                seed("acme").to_str().expect("path"),
            ],
            &admin_url,
        ))
    };
    let out = onboard_acme();
    assert!(
        out.contains("producer acme added")
            && out.contains("key ")
            && out.contains("NATS user acme (producer) added"),
        "{out}"
    );
    let acme_seed = std::fs::read_to_string(&key_file).expect("key file");
    let acme_bytes: [u8; 32] = hex::decode(acme_seed.trim())
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    keys.push(SigningKey::from_bytes(&acme_bytes));
    // Run again: nothing new, the same key and NATS user.
    let again = onboard_acme();
    assert!(
        again.contains("producer acme already registered")
            && again.matches("already registered").count() == 2
            && again.contains("NATS user acme already exists"),
        "{again}"
    );
    ok(&acectl(&["producer", "add", "beta"], &admin_url));
    let sk = SigningKey::from_bytes(&rand::thread_rng().gen());
    let vk = sk.verifying_key();
    admin
        .execute(
            "INSERT INTO producer_keys (keyid, producer, public_key, valid_from) VALUES ($1, $2, $3, now() - interval '1 hour')",
            &[&ace_core::ids::KeyId::from_public_key(&vk).as_str(), &"beta", &vk.as_bytes().as_slice()],
        )
        .await
        .expect("key");
    keys.push(sk);
    for (name, kind) in [("beta", "producer"), ("writer", "writer"), ("ops", "admin")] {
        let out = ok(&acectl(
            &[
                "nats",
                "add-user",
                name,
                "--kind",
                kind,
                "--seed-out",
                seed(name).to_str().expect("path"),
            ],
            &admin_url,
        ));
        assert!(out.contains("added"), "{out}");
    }
    // Idempotent, and never a second seed.
    let again = ok(&acectl(
        &[
            "nats",
            "add-user",
            "acme",
            "--kind",
            "producer",
            "--seed-out",
            dir.join("x.nk").to_str().expect("path"),
        ],
        &admin_url,
    ));
    assert!(
        again.contains("already exists") && !dir.join("x.nk").exists(),
        "{again}"
    );
    let bad = acectl(
        &[
            "nats",
            "add-user",
            "ghost",
            "--kind",
            "producer",
            "--seed-out",
            dir.join("g.nk").to_str().expect("path"),
        ],
        &admin_url,
    );
    assert!(
        !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("not registered")
    );
    let auth = dir.join("auth.conf");
    let render = |reload: Option<u32>| {
        let mut args = vec![
            "nats".to_string(),
            "render".into(),
            "--out".into(),
            auth.display().to_string(),
            "--prefix".into(),
            prefix.clone(),
        ];
        if let Some(pid) = reload {
            args.extend(["--reload-pid".into(), pid.to_string()]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&acectl(&a, &admin_url))
    };
    assert!(render(None).contains("4 NATS user(s)"));
    let server = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || acl_server(&dir)
    })
    .await
    .expect("server");
    let url = server.url();

    // Unauthenticated clients are refused; the admin sets up the streams.
    assert!(
        async_nats::connect(&url).await.is_err(),
        "no anonymous access"
    );
    let ops = connect(&url, &seed("ops")).await.expect("admin connects");
    ace_core::nats::init(
        &async_nats::jetstream::new(ops.clone()),
        &names,
        &Default::default(),
    )
    .await
    .expect("streams");

    // The writer, with only its own rights, takes acme's envelope and acks it.
    let signer = NoteSigner::generate("natsacl.test/log").expect("ledger key");
    let key_file = dir.join("ledger.key");
    std::fs::write(&key_file, signer.to_key_file()).expect("key file");
    let wcfg = ace_writer::Config {
        nats_url: url.clone(),
        nats_nkey_file: Some(seed("writer").display().to_string()),
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

    let acme = connect(&url, &seed("acme")).await.expect("acme connects");
    let mut acks = acme
        .subscribe(names.ack_subject("acme"))
        .await
        .expect("own acks");
    let js = async_nats::jetstream::new(acme.clone());
    js.publish(names.intake_subject("acme"), envelope(&keys[0], 1).into())
        .await
        .expect("publish to its own subject")
        .await
        .expect("stored by JetStream");
    let ack = tokio::time::timeout(Duration::from_secs(20), acks.next())
        .await
        .expect("an ack within 20 s")
        .expect("ack");
    let ack: serde_json::Value = serde_json::from_slice(&ack.payload).expect("ack JSON");
    assert_eq!(ack["status"], "accepted", "{ack}");

    // Refused: publishing to beta's subject, reading beta's acks, any JetStream API.
    let mut js_short = async_nats::jetstream::new(acme.clone());
    js_short.set_timeout(Duration::from_secs(2));
    let other = js_short
        .publish(names.intake_subject("beta"), envelope(&keys[1], 2).into())
        .await;
    let stored = match other {
        Ok(f) => f.await.is_ok(),
        Err(_) => false,
    };
    assert!(
        !stored,
        "acme's publish to beta's intake subject must be refused"
    );
    let mut spy = acme
        .subscribe(names.ack_subject("beta"))
        .await
        .expect("subscribe call");
    ops.publish(names.ack_subject("beta"), "for beta only".into())
        .await
        .expect("admin publishes");
    ops.flush().await.expect("flush");
    assert!(
        tokio::time::timeout(Duration::from_secs(2), spy.next())
            .await
            .ok()
            .flatten()
            .is_none(),
        "acme must not read beta's acks"
    );
    assert!(
        js_short.get_stream(names.intake_stream()).await.is_err(),
        "no JetStream API for a producer"
    );
    let ops_js = async_nats::jetstream::new(ops.clone());
    let mut intake = ops_js
        .get_stream(names.intake_stream())
        .await
        .expect("intake stream");
    let info = intake.info().await.expect("info");
    assert_eq!(
        info.state.messages, 1,
        "nothing but acme's own envelope reached the intake"
    );

    // Suspended by acectl (which re-renders and reloads), beta cannot connect; resumed,
    // it can publish again.
    let pid = server.child.id().to_string();
    let auth_text = auth.display().to_string();
    let sync = |cmd: &str, extra: &[&str]| {
        let mut args = vec!["producer", cmd, "beta"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "--nats-auth-out",
            &auth_text,
            "--reload-pid",
            &pid,
            "--nats-prefix",
            &prefix,
        ]);
        ok(&acectl(&args, &admin_url))
    };
    let said = sync("suspend", &["--reason", "drill"]);
    assert!(
        said.contains("suspended") && said.contains("3 NATS user(s)"),
        "{said}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        connect(&url, &seed("beta")).await.is_err(),
        "a suspended producer is refused"
    );
    let said = sync("resume", &[]);
    assert!(
        said.contains("resumed") && said.contains("4 NATS user(s)"),
        "{said}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let beta = connect(&url, &seed("beta"))
        .await
        .expect("beta connects again");
    async_nats::jetstream::new(beta)
        .publish(names.intake_subject("beta"), envelope(&keys[1], 3).into())
        .await
        .expect("publish")
        .await
        .expect("stored");

    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(20), writer).await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
