use std::collections::HashSet;
use std::time::{Duration, Instant};

use ace_core::nats::InitOptions;
use futures::StreamExt;
use rand::Rng;

use super::support::*;

const TOTAL: u64 = 20_000;
const KILLS: usize = 20;
const BATCH: usize = 100;

/// The writer is SIGKILLed at 20 random moments while 20,000 envelopes flow over about
/// 16 s (so kills land mid-fetch, mid-decision, mid-transaction, and between commit, the
/// JetStream acks and the producer acks), and restarted each time. Every envelope ends up in the log exactly once, every message gets an ack,
/// and the tree verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_writer_loses_nothing_and_duplicates_nothing() {
    let opts = InitOptions {
        ack_wait: Duration::from_secs(3),
        ..Default::default()
    };
    let nats = TestNats::with(NATS_URL, opts).await;
    let mut l = Ledger::from_parts(TestDb::new().await, nats);
    let producers = ["p1", "p2", "p3", "p4"];
    for p in producers {
        l.add_producer(p).await;
    }
    let items: Vec<(String, Vec<u8>)> = (0..TOTAL)
        .map(|n| {
            let p = producers[(n % 4) as usize];
            (p.to_string(), sign(&statement(n, "crash"), l.key(p)))
        })
        .collect();

    // Acks are published after the JetStream ack (DESIGN.md's order), so a kill between
    // the two loses the producer acks of the batches being settled then: at most two,
    // the writer's bound on batches settling in the background (the outcome itself is
    // committed, and a republish is answered "duplicate" with the original index). Every
    // other message is acked, redeliveries possibly twice.
    let mut acks = l.ack_stream().await;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let acked = tokio::spawn(async move {
        let mut seen = HashSet::new();
        loop {
            tokio::select! {
                m = acks.next() => match m {
                    Some(m) => {
                        let a: ace_core::ack::Ack = serde_json::from_slice(&m.payload).unwrap();
                        assert_ne!(a.status, ace_core::ack::AckStatus::Rejected, "{a:?}");
                        seen.insert(a.stream_seq);
                        if seen.len() == TOTAL as usize { break; }
                    }
                    None => break,
                },
                _ = &mut stop_rx => break,
            }
        }
        seen
    });

    let port = free_port();
    // Batches of at most BATCH, so that the bound on lost producer acks below is
    // a real check (20 kills × 2 batches of 1,000 would exceed the whole run).
    let settings = [("ACE_BATCH_MAX_ENTRIES", BATCH.to_string())];
    let mut child = l.spawn_writer_process_with(port, &settings, None);
    let started = Instant::now();
    let publisher = spawn_publisher(&l, items, 500, Duration::from_millis(400));

    let admin = l.db.admin().await;
    let mut kills: usize = 0;
    let mut rng = rand::rngs::StdRng::from_entropy();
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM ledger_entries WHERE producer <> '_ledger'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n as u64 >= TOTAL || kills >= KILLS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..900))).await;
        child.sigkill();
        kills += 1;
        child = l.spawn_writer_process_with(port, &settings, None);
    }
    publisher.await.unwrap();
    wait_for_entries(&admin, TOTAL as i64, Duration::from_secs(240)).await;
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_tx.send(());
    let seen = acked.await.unwrap();
    child.sigkill();

    let report = check_log(&admin, &l.signer).await;
    full_audit(&l);
    assert_eq!(report.entries, TOTAL, "each envelope exactly once");
    let unacked = TOTAL as usize - seen.len();
    assert!(
        unacked <= kills * 2 * BATCH,
        "{unacked} messages got no ack; at most two batches per kill may lose their producer acks"
    );
    let dlq: i64 = admin
        .query_one("SELECT count(*) FROM dlq_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dlq, 0);
    eprintln!(
        "crash test: {TOTAL} envelopes, {kills} SIGKILLs, {} blocks, {unacked} producer acks lost to kills, {:.1} s from first publish to last commit = {:.0} envelopes/s (including restarts and ack_wait redeliveries)",
        report.blocks,
        elapsed.as_secs_f64(),
        TOTAL as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(
        kills, KILLS,
        "the writer was killed {KILLS} times while envelopes flowed"
    );
}

use rand::SeedableRng;
