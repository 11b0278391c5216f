use std::time::Duration;

use ace_core::ack::AckStatus;
use ace_core::envelope::Envelope;
use ed25519_dalek::SigningKey;
use rand::Rng;

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republished_statements_are_one_entry() {
    // A short ack_wait: a message that reaches the stopped writer's last pull request
    // comes back in seconds.
    let opts = ace_core::nats::InitOptions {
        ack_wait: Duration::from_secs(3),
        ..Default::default()
    };
    let mut l = Ledger::from_parts(TestDb::new().await, TestNats::with(NATS_URL, opts).await);
    l.add_producer("acme").await;
    // A second key for the same producer, to re-sign the same statement.
    let other = SigningKey::from_bytes(&rand::thread_rng().gen());
    register_key(
        &l.db.admin().await,
        "acme",
        &other,
        "now() - interval '1 hour'",
        "NULL",
    )
    .await;
    let w = l.spawn_writer(l.writer_config());
    let mut acks = l.ack_stream().await;

    let st = statement(1, "dedupe");
    let original = sign(&st, l.key("acme"));
    let resigned = sign(&st, &other);
    assert_ne!(original, resigned);
    let digest = Envelope::parse(&original)
        .unwrap()
        .digest()
        .as_str()
        .to_string();
    assert_eq!(
        Envelope::parse(&resigned).unwrap().digest().as_str(),
        digest,
        "same statement, same digest"
    );

    // First publication.
    let seq1 = l.publish_raw("acme", original.clone(), Some(&digest)).await;
    let a1 = collect_acks(&mut acks, 1, Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(a1.status, AckStatus::Accepted);
    assert_eq!(a1.stream_seq, seq1);
    let (index, block) = (a1.index.unwrap(), a1.block.unwrap());

    // Inside the JetStream duplicate window, same and re-signed: JetStream drops both.
    for raw in [original.clone(), resigned.clone()] {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", digest.as_str());
        let pa = l
            .nats
            .js
            .publish_with_headers(l.nats.names.intake_subject("acme"), h, raw.into())
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(pa.duplicate, "JetStream deduplicates inside its window");
        assert_eq!(pa.sequence, seq1);
    }

    // Outside the window (no Nats-Msg-Id, as after the window has passed): the writer
    // deduplicates, and the ack names the original entry.
    for raw in [original.clone(), resigned.clone()] {
        let seq = l.publish_raw("acme", raw, None).await;
        let a = collect_acks(&mut acks, 1, Duration::from_secs(30))
            .await
            .remove(0);
        assert_eq!(a.stream_seq, seq);
        assert_eq!(a.status, AckStatus::Duplicate);
        assert_eq!((a.index, a.block), (Some(index), Some(block)));
        assert_eq!(a.digest.as_deref(), Some(digest.as_str()));
    }

    // Truly outside the window: shrink it, wait it out, publish with the same Msg-Id.
    let mut cfg = l
        .nats
        .js
        .get_stream(l.nats.names.intake_stream())
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    cfg.duplicate_window = Duration::from_millis(500);
    l.nats.js.update_stream(cfg).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let seq = l.publish_raw("acme", resigned.clone(), Some(&digest)).await;
    assert_ne!(seq, seq1, "past the window JetStream stores it again");
    let a = collect_acks(&mut acks, 1, Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(
        (a.status, a.index, a.block),
        (AckStatus::Duplicate, Some(index), Some(block))
    );

    // Two copies published back to back while no writer runs: one entry; whichever copy
    // is sequenced second is a duplicate naming the first. (Usually one batch takes both;
    // the in-batch path itself is pinned by batch::tests.)
    w.stop().await;
    let st2 = sign(&statement(2, "dedupe"), l.key("acme"));
    let s1 = l.publish_raw("acme", st2.clone(), None).await;
    let s2 = l.publish_raw("acme", st2, None).await;
    let w = l.spawn_writer(l.writer_config());
    let two = collect_acks(&mut acks, 2, Duration::from_secs(30)).await;
    let mut seqs: Vec<u64> = two.iter().map(|a| a.stream_seq).collect();
    seqs.sort();
    assert_eq!(seqs, vec![s1, s2]);
    let mut statuses: Vec<AckStatus> = two.iter().map(|a| a.status).collect();
    statuses.sort_by_key(|s| s.as_str());
    assert_eq!(statuses, vec![AckStatus::Accepted, AckStatus::Duplicate]);
    assert_eq!(two[0].index, two[1].index);
    assert_eq!(two[0].block, two[1].block);

    let c = l.db.admin().await;
    let report = check_log(&c, &l.signer).await;
    assert_eq!(report.entries, 2, "two statements, two entries");
    w.stop().await;
}
