use std::time::{Duration, Instant};

use ace_core::nats::InitOptions;
use rand::{Rng, SeedableRng};

use super::intake::try_http_get;
use super::support::*;

async fn role(port: u16) -> String {
    let Ok((_, body)) = try_http_get(port, "/readyz").await else {
        return String::new();
    };
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["role"].as_str().map(String::from))
        .unwrap_or_default()
}

async fn wait_role(port: u16, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if role(port).await == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "writer on {port} never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two writers at once: one sequences, the other stands by. Kill the leader mid-flow: the
/// standby takes over; no fork, no gap, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_when_the_leader_dies() {
    let opts = InitOptions {
        ack_wait: Duration::from_secs(3),
        ..Default::default()
    };
    let nats = TestNats::with(NATS_URL, opts).await;
    let mut l = Ledger::from_parts(TestDb::new().await, nats);
    l.add_producer("acme").await;
    let (pa, pb) = (free_port(), free_port());
    let mut a = l.spawn_writer_process(pa);
    wait_role(pa, "leader", Duration::from_secs(30)).await;
    let mut b = l.spawn_writer_process(pb);
    wait_role(pb, "standby", Duration::from_secs(30)).await;
    assert_eq!(role(pa).await, "leader");

    let first: Vec<(String, Vec<u8>)> = (0..2000)
        .map(|n| {
            (
                "acme".to_string(),
                sign(&statement(n, "lead"), l.key("acme")),
            )
        })
        .collect();
    let second: Vec<(String, Vec<u8>)> = (2000..4000)
        .map(|n| {
            (
                "acme".to_string(),
                sign(&statement(n, "lead"), l.key("acme")),
            )
        })
        .collect();
    l.publish_many(first).await;
    let admin = l.db.admin().await;
    wait_for_entries(&admin, 1, Duration::from_secs(30)).await;
    a.sigkill();
    l.publish_many(second).await;
    wait_role(pb, "leader", Duration::from_secs(30)).await;
    wait_for_entries(&admin, 4000, Duration::from_secs(120)).await;
    // Give any stray redelivery a chance to (wrongly) land twice before checking.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let report = check_log(&admin, &l.signer).await;
    full_audit(&l);
    assert_eq!(report.entries, 4000);
    b.sigkill();
}

/// Two writers race for the lock while whichever leads is SIGKILLed, again and again, and
/// restarted to stand by: never two leaders, and the log ends with every envelope once,
/// without fork or gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_with_the_leader_killed_again_and_again() {
    const TOTAL: u64 = 8000;
    const KILLS: usize = 8;
    let opts = InitOptions {
        ack_wait: Duration::from_secs(3),
        ..Default::default()
    };
    let nats = TestNats::with(NATS_URL, opts).await;
    let mut l = Ledger::from_parts(TestDb::new().await, nats);
    l.add_producer("acme").await;
    let ports = [free_port(), free_port()];
    let mut writers = [
        l.spawn_writer_process(ports[0]),
        l.spawn_writer_process(ports[1]),
    ];
    let items: Vec<(String, Vec<u8>)> = (0..TOTAL)
        .map(|n| {
            (
                "acme".to_string(),
                sign(&statement(n, "race"), l.key("acme")),
            )
        })
        .collect();
    // Published over about 8 s, so that every kill lands while envelopes flow.
    let publisher = spawn_publisher(&l, items, 250, Duration::from_millis(250));
    let admin = l.db.admin().await;
    let mut rng = rand::rngs::StdRng::from_entropy();
    for _ in 0..KILLS {
        let deadline = Instant::now() + Duration::from_secs(30);
        let leader = loop {
            let roles = [role(ports[0]).await, role(ports[1]).await];
            assert!(
                !(roles[0] == "leader" && roles[1] == "leader"),
                "two writers lead at once"
            );
            if let Some(i) = roles.iter().position(|r| r == "leader") {
                break i;
            }
            assert!(Instant::now() < deadline, "no writer took the lead");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..800))).await;
        writers[leader].sigkill();
        writers[leader] = l.spawn_writer_process(ports[leader]);
    }
    publisher.await.unwrap();
    wait_for_entries(&admin, TOTAL as i64, Duration::from_secs(120)).await;
    // Give any stray redelivery a chance to (wrongly) land twice before checking.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let report = check_log(&admin, &l.signer).await;
    full_audit(&l);
    assert_eq!(report.entries, TOTAL, "each envelope exactly once");
    let dlq: i64 = admin
        .query_one("SELECT count(*) FROM dlq_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dlq, 0);
    for w in &mut writers {
        w.sigkill();
    }
}

/// SIGTERM: the writer finishes its batch and exits 0; everything it committed is acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly() {
    let mut l = Ledger::new().await;
    l.add_producer("acme").await;
    let port = free_port();
    let child = l.spawn_writer_process(port);
    wait_role(port, "leader", Duration::from_secs(30)).await;
    let items: Vec<(String, Vec<u8>)> = (0..3000)
        .map(|n| {
            (
                "acme".to_string(),
                sign(&statement(n, "term"), l.key("acme")),
            )
        })
        .collect();
    l.publish_many(items).await;
    let admin = l.db.admin().await;
    wait_for_entries(&admin, 1, Duration::from_secs(30)).await;
    let pid = child.pid().to_string();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(st.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap();
    assert!(
        status.success(),
        "writer exit status after SIGTERM: {status:?}"
    );
    let committed: i64 = admin
        .query_one(
            "SELECT count(*) FROM ledger_entries WHERE stream_seq IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // Nothing committed is left unacked: the consumer's ack floor covers every entry.
    let stream = l
        .nats
        .js
        .get_stream(l.nats.names.intake_stream())
        .await
        .unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer(ace_core::nats::WRITER_CONSUMER)
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(
        info.ack_floor.stream_sequence as i64, committed,
        "acked exactly what was committed"
    );
    check_log(&admin, &l.signer).await;
    full_audit(&l);
}
