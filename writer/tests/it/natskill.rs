//! nats-server (a private instance with its own file store) SIGKILLed under load and
//! restarted on the same port and store: the writer and the producer reconnect by
//! themselves, and every envelope ends in the log exactly once.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::support::*;

struct NatsServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    fn start() -> NatsServer {
        let dir = std::env::temp_dir().join(unique("ace-nats-"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = NatsServer {
            port: free_port(),
            dir,
            child: None,
        };
        s.resume();
        s
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn resume(&mut self) {
        let child = Command::new("/usr/sbin/nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting a private nats-server (Debian package nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.sigkill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_killed_and_restarted_loses_nothing() {
    let mut server = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap();
    let nats = TestNats::with(&server.url(), Default::default()).await;
    let mut l = Ledger::from_parts(TestDb::new().await, nats);
    l.add_producer("acme").await;
    let w = l.spawn_writer(l.writer_config());
    const TOTAL: u64 = 2000;
    let items: Vec<Vec<u8>> = (0..TOTAL)
        .map(|n| sign(&statement(n, "natskill"), l.key("acme")))
        .collect();
    // A producer that keeps publishing until JetStream stores each envelope, as the
    // producer guide says to: retry with the same bytes (the log dedupes them).
    let js = l.nats.js.clone();
    let subject = l.nats.names.intake_subject("acme");
    let publisher = tokio::spawn(async move {
        let mut retries = 0u64;
        for (i, raw) in items.iter().enumerate() {
            loop {
                let stored = match js.publish(subject.clone(), raw.clone().into()).await {
                    Ok(f) => matches!(
                        tokio::time::timeout(Duration::from_secs(2), f).await,
                        Ok(Ok(_))
                    ),
                    Err(_) => false,
                };
                if stored {
                    break;
                }
                retries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if i % 100 == 99 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        retries
    });
    let admin = l.db.admin().await;
    wait_for_entries(&admin, 300, Duration::from_secs(30)).await;
    server.sigkill();
    // Down for twice the publisher's 2 s wait for a stored-ack, so that it always sees
    // the outage (an outage of about 2 s raced with it).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut server = tokio::task::spawn_blocking(move || {
        server.resume();
        server
    })
    .await
    .unwrap();
    let retries = publisher.await.unwrap();
    assert!(retries > 0, "the publisher saw the outage");
    wait_for_entries(&admin, TOTAL as i64, Duration::from_secs(60)).await;
    let report = check_log(&admin, &l.signer).await;
    full_audit(&l);
    assert_eq!(report.entries, TOTAL, "each envelope once");
    let dlq: i64 = admin
        .query_one("SELECT count(*) FROM dlq_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dlq, 0);
    w.stop().await;
    // The streams are deleted while the server still runs (a dead one makes each
    // deletion wait for its timeout).
    drop(l);
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.sigkill();
}
