use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use ace_core::nats::InitOptions;
use ace_writer::crashpoint::Point;

use super::support::*;

const BATCH: usize = 50;
const CHUNK: u64 = 20;
/// A bound, should the kills take far longer than expected.
const MAX_PUBLISHED: u64 = 40_000;
/// Each point is hit on its 1st, 2nd, 5th and 9th visit in turn: 5 points × 4 = 20 kills.
const VISITS: [u64; 4] = [1, 2, 5, 9];

/// The writer aborted at 20 chosen moments, four at each step of the pipeline (batch
/// fetched; envelopes parsed but not verified; rows written, not committed; committed,
/// not acked on JetStream; acked, producer acks not published), each time restarted,
/// while envelopes (some of them bad) keep flowing. Then: every envelope published is
/// in the log exactly once or in the DLQ with its reason, none missing, none twice, and
/// `acectl audit` passes over the whole ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_killed_at_each_step_of_the_pipeline_loses_nothing() {
    let opts = InitOptions {
        ack_wait: Duration::from_secs(2),
        ..Default::default()
    };
    let nats = TestNats::with(NATS_URL, opts).await;
    let mut l = Ledger::from_parts(TestDb::new().await, nats);
    let producers = ["p1", "p2", "p3"];
    for p in producers {
        l.add_producer(p).await;
    }
    // Envelopes flow until every kill is done (a writer waiting for its n-th batch
    // must get one). Every 10th is signed by another producer's key: a rejection, which
    // must be in the DLQ exactly once however often its batch is replayed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let js = l.nats.js.clone();
        let names = l.nats.names.clone();
        let keys: Vec<ed25519_dalek::SigningKey> =
            producers.iter().map(|p| l.key(p).clone()).collect();
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut good, mut bad) = (HashSet::new(), HashSet::new());
            let mut n: u64 = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < MAX_PUBLISHED {
                let mut acks = Vec::new();
                for _ in 0..CHUNK {
                    let p = (n % 3) as usize;
                    let signer = if n % 10 == 9 { (p + 1) % 3 } else { p };
                    let raw = sign(&statement(n, "points"), &keys[signer]);
                    let digest = ace_core::envelope::Envelope::parse(&raw)
                        .expect("envelope")
                        .digest()
                        .as_str()
                        .to_string();
                    if signer == p {
                        good.insert(digest);
                    } else {
                        bad.insert(digest);
                    }
                    acks.push(
                        js.publish(names.intake_subject(producers[p]), raw.into())
                            .await
                            .expect("publish"),
                    );
                    n += 1;
                }
                for a in acks {
                    a.await.expect("publish ack");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (good, bad)
        })
    };

    let port = free_port();
    let log = l.dir.join("crashpoints.log");
    let mut kills = Vec::new();
    for visit in VISITS {
        for point in Point::ALL {
            let spec = format!("{}:{visit}", point.as_str());
            let settings = [
                ("ACE_BATCH_MAX_ENTRIES", BATCH.to_string()),
                ("ACE_WRITER_CRASH_AT", spec.clone()),
            ];
            let mut child = l.spawn_writer_process_with(port, &settings, Some(&log));
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let status = loop {
                if let Some(s) = child.try_wait() {
                    break s;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{spec}: the writer did not reach its crash point within 60 s; log {}",
                    log.display()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(
                status.signal(),
                Some(6),
                "{spec}: the writer should have aborted there (SIGABRT), got {status:?}; log {}",
                log.display()
            );
            kills.push(spec);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (good, bad) = publisher.await.expect("publisher");

    // A clean writer finishes the work.
    let settings = [("ACE_BATCH_MAX_ENTRIES", BATCH.to_string())];
    let mut child = l.spawn_writer_process_with(port, &settings, None);
    let admin = l.db.admin().await;
    let want_entries = good.len() as i64;
    let want_dlq = bad.len() as i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (e, d): (i64, i64) = {
            let r = admin
                .query_one(
                    "SELECT (SELECT count(*) FROM ledger_entries), (SELECT count(*) FROM dlq_items)",
                    &[],
                )
                .await
                .expect("counts");
            (r.get(0), r.get(1))
        };
        if e >= want_entries && d >= want_dlq {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after the kills: {e} of {want_entries} entries, {d} of {want_dlq} DLQ items"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Redeliveries still in flight must change nothing: wait out an ack_wait.
    tokio::time::sleep(Duration::from_secs(3)).await;
    child.sigkill();

    // Exact reconciliation, by digest.
    let entries: Vec<String> = admin
        .query(
            "SELECT digest FROM ledger_entries WHERE producer <> '_ledger'",
            &[],
        )
        .await
        .expect("entries")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let dlq: Vec<(Option<String>, String)> = admin
        .query("SELECT digest, code FROM dlq_items", &[])
        .await
        .expect("dlq")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let entry_set: HashSet<String> = entries.iter().cloned().collect();
    assert_eq!(entries.len(), entry_set.len(), "no entry twice");
    assert_eq!(
        entry_set, good,
        "every good envelope in the log, nothing else"
    );
    let dlq_set: HashSet<String> = dlq.iter().filter_map(|(d, _)| d.clone()).collect();
    assert_eq!(dlq.len(), dlq_set.len(), "no rejection twice");
    assert_eq!(dlq_set, bad, "every bad envelope in the DLQ, nothing else");
    assert!(
        dlq.iter().all(|(_, code)| code == "wrong_producer_key"),
        "each with its reason"
    );

    let report = check_log(&admin, &l.signer).await;
    assert_eq!(report.entries, good.len() as u64);
    let audit = full_audit(&l);
    assert!(audit.contains("audit passed"), "{audit}");
    let aborted = std::fs::read_to_string(&log).unwrap_or_default();
    for point in Point::ALL {
        assert!(
            aborted.contains(&format!("aborting at crash point {}", point.as_str())),
            "no abort logged at {}",
            point.as_str()
        );
    }
    eprintln!(
        "crash points: {} kills ({}), {} entries and {} DLQ items reconciled, {} blocks; acectl audit passed",
        kills.len(),
        kills.join(", "),
        entries.len(),
        dlq.len(),
        report.blocks
    );
}
