use std::sync::Arc;
use std::time::Duration;

use ace_core::ack::AckStatus;

use super::support::*;
use ace_testkit::PgServer;

/// Postgres (a private instance) goes away for 10 s under load, stopped as in a crash:
/// nothing is lost, nothing lands in the DLQ, and the writer resumes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_loses_nothing() {
    outage("immediate").await;
}

/// The same with a fast shutdown (sessions ended, a checkpoint, as in a planned restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fast_shutdown_loses_nothing() {
    outage("fast").await;
}

async fn outage(mode: &'static str) {
    let pg = Arc::new(tokio::task::spawn_blocking(PgServer::start).await.unwrap());
    let db = TestDb::on("127.0.0.1", pg.port).await;
    let mut l = Ledger::from_parts(db, TestNats::new().await);
    l.add_producer("acme").await;
    let w = l.spawn_writer(l.writer_config());
    let mut acks = l.ack_stream().await;
    const TOTAL: u64 = 3000;
    let items: Vec<(String, Vec<u8>)> = (0..TOTAL)
        .map(|n| {
            (
                "acme".to_string(),
                sign(&statement(n, "outage"), l.key("acme")),
            )
        })
        .collect();
    // A steady flow over ~15 s, across the outage.
    let publisher = spawn_publisher(&l, items, 100, Duration::from_millis(500));
    let admin = l.db.admin().await;
    wait_for_entries(&admin, 200, Duration::from_secs(30)).await;
    drop(admin);
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.stop(mode))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.resume())
        .await
        .unwrap();
    publisher.await.unwrap();
    let admin = l.db.admin().await;
    wait_for_entries(&admin, TOTAL as i64, Duration::from_secs(120)).await;
    let report = check_log(&admin, &l.signer).await;
    full_audit(&l);
    assert_eq!(report.entries, TOTAL);
    let dlq: i64 = admin
        .query_one("SELECT count(*) FROM dlq_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dlq, 0, "a database outage never lands in the DLQ");
    let got = collect_acks(&mut acks, TOTAL as usize, Duration::from_secs(60)).await;
    let odd: Vec<_> = got
        .iter()
        .filter(|a| a.status != AckStatus::Accepted)
        .collect();
    if let Some(a) = odd.first() {
        let stream = l
            .nats
            .js
            .get_stream(l.nats.names.intake_stream())
            .await
            .unwrap();
        let info = stream.get_info().await.unwrap();
        for seq in a.stream_seq.saturating_sub(2)..=a.stream_seq + 1 {
            let m = stream.get_raw_message(seq).await.unwrap();
            let d = ace_core::envelope::Envelope::parse(&m.payload)
                .unwrap()
                .digest();
            eprintln!("seq {seq}: {} {:?}", d.as_str(), m.time);
        }
        eprintln!("stream: {:?}", info.state);
    }
    assert!(odd.is_empty(), "acks other than accepted: {odd:?}");
    w.stop().await;
}
