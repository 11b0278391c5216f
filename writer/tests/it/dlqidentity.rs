//! A DLQ row is named by its message's identity in JetStream, (stream sequence, storage
//! time), not by the sequence alone (migration V10): a recreated intake stream numbers its
//! messages from 1 again, and each rejection there still gets its row, while a redelivery
//! of one message still makes exactly one.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use ace_core::ack::{Ack, AckStatus};
use ace_core::nats::InitOptions;
use ace_core::rejection::RejectionCode;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::support::*;

/// The DLQ rows of `seq`, oldest first: (envelope, stored_at, delivered).
async fn dlq_rows(
    c: &tokio_postgres::Client,
    seq: u64,
) -> Vec<(Vec<u8>, Option<DateTime<Utc>>, Option<i64>)> {
    c.query(
        "SELECT envelope, stored_at, delivered FROM dlq_items WHERE stream_seq = $1 ORDER BY id",
        &[&(seq as i64)],
    )
    .await
    .expect("reading dlq_items")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn assert_rejected(a: &Ack, seq: u64) {
    assert_eq!(a.status, AckStatus::Rejected, "{a:?}");
    assert_eq!(a.stream_seq, seq, "the ack names its message: {a:?}");
    assert_eq!(
        a.reason.as_ref().map(|r| r.code),
        Some(RejectionCode::MalformedEnvelope),
        "{a:?}"
    );
}

/// The operator drill that lost a row: a rejection, the intake stream deleted and made
/// again (`nats stream rm`, `acectl nats init`), another rejection at the same sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_stream_reusing_a_sequence_still_gets_its_dlq_row() {
    let mut l = Ledger::new().await;
    l.add_producer("acme").await;
    let admin = l.db.admin().await;
    let mut acks = l.ack_stream().await;
    let mut notices = l
        .nats
        .client
        .subscribe(format!("{}.dlq.>", l.nats.names.prefix()))
        .await
        .unwrap();

    let w = l.spawn_writer(l.writer_config());
    let first = b"{\"payloadType\": \"first stream\"".to_vec();
    let seq = l.publish_raw("acme", first.clone(), None).await;
    assert_eq!(seq, 1, "a new stream's first message");
    let a = collect_acks(&mut acks, 1, Duration::from_secs(30)).await;
    assert_rejected(&a[0], seq);
    // The writer commits before it acks: the row is there.
    assert_eq!(dlq_rows(&admin, seq).await.len(), 1);
    w.stop().await;

    let intake = l.nats.names.intake_stream();
    l.nats
        .js
        .delete_stream(&intake)
        .await
        .unwrap_or_else(|e| panic!("deleting {intake}: {e}"));
    ace_core::nats::init(&l.nats.js, &l.nats.names, &InitOptions::default())
        .await
        .unwrap_or_else(|e| panic!("recreating {intake}: {e}"));

    // The writer finds its consumer at start: a new one for the new stream.
    let w = l.spawn_writer(l.writer_config());
    let second = b"{\"payloadType\": \"second stream\"".to_vec();
    let reused = l.publish_raw("acme", second.clone(), None).await;
    assert_eq!(reused, seq, "the recreated stream numbers from 1 again");
    let a = collect_acks(&mut acks, 1, Duration::from_secs(30)).await;
    assert_rejected(&a[0], reused);

    let rows = dlq_rows(&admin, seq).await;
    assert_eq!(
        rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        vec![first, second],
        "both rejections in the DLQ, each with its own bytes"
    );
    let (t1, t2) = (rows[0].1.expect("stored_at"), rows[1].1.expect("stored_at"));
    assert!(t1 < t2, "two messages, two storage times: {t1} then {t2}");

    // Each notice names its row: the sequence and the storage time.
    let mut named = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while named.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, notices.next())
            .await
            .expect("two DLQ notices")
            .expect("the notice subscription");
        let n: serde_json::Value = serde_json::from_slice(&m.payload).expect("notice is JSON");
        assert_eq!(n["stream_seq"], seq, "{n}");
        named.push(n["stored_at"].as_str().expect("stored_at").to_string());
    }
    let stored: Vec<DateTime<Utc>> = named
        .iter()
        .map(|t| DateTime::parse_from_rfc3339(t).expect("RFC 3339").to_utc())
        .collect();
    assert_eq!(stored, vec![t1, t2]);
    w.stop().await;
}

/// The writer killed after its transaction committed a rejection and before JetStream
/// heard the ack: the message comes back, is rejected again, and the DLQ keeps its one
/// row (the first delivery's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_rejection_keeps_its_one_dlq_row() {
    let opts = InitOptions {
        ack_wait: Duration::from_secs(2),
        ..Default::default()
    };
    let mut l = Ledger::from_parts(TestDb::new().await, TestNats::with(NATS_URL, opts).await);
    l.add_producer("acme").await;
    let admin = l.db.admin().await;
    let mut acks = l.ack_stream().await;

    // A first batch takes the registry's key events into the log, so that the next
    // commit (where the writer below dies) is the rejection's.
    let w = l.spawn_writer(l.writer_config());
    let good = l
        .publish_raw(
            "acme",
            sign(&statement(1, "redeliver"), l.key("acme")),
            None,
        )
        .await;
    let a = collect_acks(&mut acks, 1, Duration::from_secs(30)).await;
    assert_eq!((a[0].status, a[0].stream_seq), (AckStatus::Accepted, good));
    w.stop().await;

    let log = l.dir.join("writer.log");
    let mut child = l.spawn_writer_process_with(
        free_port(),
        &[("ACE_WRITER_CRASH_AT", "committed:1".to_string())],
        Some(&log),
    );
    let raw = b"{\"payloadType\": \"delivered twice\"".to_vec();
    let seq = l.publish_raw("acme", raw.clone(), None).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the writer did not reach its crash point within 60 s; log {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        status.signal(),
        Some(6),
        "aborted after commit; log {}",
        log.display()
    );
    let rows = dlq_rows(&admin, seq).await;
    assert_eq!(rows.len(), 1, "committed before the crash");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), acks.next())
            .await
            .is_err(),
        "no ack was sent: the message was never acked either"
    );

    // After ack_wait JetStream delivers it again, to the next writer.
    let w = l.spawn_writer(l.writer_config());
    let a = collect_acks(&mut acks, 1, Duration::from_secs(30)).await;
    assert_rejected(&a[0], seq);
    let again = dlq_rows(&admin, seq).await;
    assert_eq!(again, rows, "still the one row, from the first delivery");
    assert_eq!(again[0].0, raw);
    assert_eq!(again[0].2, Some(1), "the first delivery's row");
    let total: i64 = admin
        .query_one("SELECT count(*) FROM dlq_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 1);
    w.stop().await;
}
