//! The network between the writer and Postgres stalls for longer than the writer's
//! ACE_DB_TIMEOUT_MS, under load: the writer gives the batch back instead of hanging,
//! reconnects once bytes flow again, and every envelope ends in the log exactly once.

use std::time::Duration;

use ace_testkit::{TcpProxy, PG_HOST, PG_PORT};

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_stall_longer_than_the_db_timeout_loses_nothing() {
    let mut l = Ledger::new().await;
    l.add_producer("acme").await;
    let upstream = format!("{PG_HOST}:{PG_PORT}").parse().unwrap();
    let proxy = TcpProxy::start(upstream).await;
    let through_proxy = l.db.url("ace_writer").replace(
        &format!("{PG_HOST}:{PG_PORT}/"),
        &format!("127.0.0.1:{}/", proxy.port),
    );
    assert_ne!(through_proxy, l.db.url("ace_writer"));
    let port = free_port();
    let settings = [
        ("ACE_DATABASE_URL", through_proxy),
        ("ACE_DB_TIMEOUT_MS", "2000".to_string()),
    ];
    let mut w = l.spawn_writer_process_with(port, &settings, None);
    const TOTAL: u64 = 3000;
    let items: Vec<(String, Vec<u8>)> = (0..TOTAL)
        .map(|n| {
            (
                "acme".to_string(),
                sign(&statement(n, "stall"), l.key("acme")),
            )
        })
        .collect();
    // A steady flow over ~9 s, across the stall.
    let publisher = spawn_publisher(&l, items, 100, Duration::from_millis(300));
    let admin = l.db.admin().await;
    wait_for_entries(&admin, 300, Duration::from_secs(30)).await;
    proxy.stall(true);
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.stall(false);
    publisher.await.unwrap();
    wait_for_entries(&admin, TOTAL as i64, Duration::from_secs(120)).await;
    // Give any stray redelivery a chance to (wrongly) land twice before checking.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = check_log(&admin, &l.signer).await;
    full_audit(&l);
    assert_eq!(report.entries, TOTAL, "each envelope exactly once");
    let dlq: i64 = admin
        .query_one("SELECT count(*) FROM dlq_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dlq, 0, "a stalled network never lands in the DLQ");
    let faults = writer_metric(port, POSTGRES_FAULTS).await;
    assert!(
        faults >= 1.0,
        "the writer saw the stall as a Postgres fault"
    );
    w.sigkill();
}
