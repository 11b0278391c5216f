use std::time::Duration;

use ace_core::ack::AckStatus;
use ace_core::envelope::Envelope;
use ed25519_dalek::SigningKey;
use rand::Rng;

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republished_statements_are_one_entry() {
    let mut l = Ledger::new().await;
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

    // Two copies inside one batch (published while no writer runs, so one fetch takes
    // both): one entry, the second a duplicate of the first.
    w.stop().await;
    let st2 = sign(&statement(2, "dedupe"), l.key("acme"));
    let s1 = l.publish_raw("acme", st2.clone(), None).await;
    let s2 = l.publish_raw("acme", st2, None).await;
    let w = l.spawn_writer(l.writer_config());
    let mut two = collect_acks(&mut acks, 2, Duration::from_secs(30)).await;
    two.sort_by_key(|a| a.stream_seq);
    assert_eq!(
        (two[0].stream_seq, two[0].status),
        (s1, AckStatus::Accepted)
    );
    assert_eq!(
        (two[1].stream_seq, two[1].status),
        (s2, AckStatus::Duplicate)
    );
    assert_eq!(two[1].index, two[0].index);
    assert_eq!(two[1].block, two[0].block);

    let c = l.db.admin().await;
    let report = check_log(&c, &l.signer).await;
    assert_eq!(report.entries, 2, "two statements, two entries");
    w.stop().await;
}
