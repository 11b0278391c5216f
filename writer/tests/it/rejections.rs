use std::collections::HashMap;
use std::time::Duration;

use ace_core::ack::AckStatus;
use ace_core::envelope::Envelope;
use ace_core::rejection::RejectionCode;
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use rand::Rng;

use super::support::*;

struct Case {
    name: &'static str,
    producer: &'static str,
    raw: Vec<u8>,
    code: RejectionCode,
    /// Expected `field`, and a fragment the detail must contain.
    field: &'static str,
    detail: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_code_lands_in_the_dlq_with_its_reason() {
    let mut l = Ledger::new().await;
    l.add_producer("acme").await;
    l.add_producer("other").await;
    let admin = l.db.admin().await;
    let revoked = SigningKey::from_bytes(&rand::thread_rng().gen());
    let revoked_id = register_key(
        &admin,
        "acme",
        &revoked,
        "now() - interval '2 hours'",
        "NULL",
    )
    .await;
    admin
        .execute(
            "UPDATE producer_keys SET revoked_at = now() - interval '1 minute', revoke_reason = 'leaked' WHERE keyid = $1",
            &[&revoked_id.as_str()],
        )
        .await
        .unwrap();
    let expired = SigningKey::from_bytes(&rand::thread_rng().gen());
    let expired_id = register_key(
        &admin,
        "acme",
        &expired,
        "now() - interval '2 days'",
        "now() - interval '1 day'",
    )
    .await;
    let stranger = SigningKey::from_bytes(&rand::thread_rng().gen());
    let stranger_id = ace_core::ids::KeyId::from_public_key(&stranger.verifying_key());

    let mut cfg = l.writer_config();
    cfg.max_envelope_bytes = 4096;
    cfg.policy_file = Some(l.write_policy(
        "[[rule]]\nid = \"slsa-only\"\nkind = \"predicate_types\"\nmode = \"deny\"\nallow = [\"https://slsa.dev/*\"]\n",
    ));
    let w = l.spawn_writer(cfg);
    let mut acks = l.ack_stream().await;
    let mut dlq_notices = l
        .nats
        .client
        .subscribe(format!("{}.dlq.>", l.nats.names.prefix()))
        .await
        .unwrap();

    let good = |n: u64| statement(n, "rej");
    let mut bad_sig = Envelope::parse(&sign(&good(9), l.key("acme"))).unwrap();
    if let Some(b) = bad_sig.signatures[0].sig.get_mut(5) {
        *b ^= 0x40;
    }
    let huge = serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "x", "digest": {"sha256": "a".repeat(64)}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"pad": "z".repeat(8000)},
    }))
    .unwrap();
    let other_predicate = serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "x", "digest": {"sha256": "b".repeat(64)}}],
        "predicateType": "https://example.com/unvetted/v1",
        "predicate": {},
    }))
    .unwrap();
    let wrong_type = serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v0.9",
        "subject": [{"name": "x", "digest": {"sha256": "c".repeat(64)}}],
        "predicateType": "https://slsa.dev/provenance/v1",
    }))
    .unwrap();

    let cases = vec![
        Case { name: "not JSON", producer: "acme", raw: b"this is not json".to_vec(), code: RejectionCode::MalformedEnvelope, field: "", detail: String::new() },
        Case { name: "bad base64", producer: "acme", raw: br#"{"payloadType":"application/vnd.in-toto+json","payload":"@@@","signatures":[{"keyid":"","sig":"AAAA"}]}"#.to_vec(), code: RejectionCode::MalformedEnvelope, field: "payload", detail: String::new() },
        Case { name: "too large", producer: "acme", raw: sign(&huge, l.key("acme")), code: RejectionCode::TooLarge, field: "envelope", detail: "4096".into() },
        Case { name: "payload type", producer: "acme", raw: Envelope::sign("text/plain", b"hello", l.key("acme")).to_json(), code: RejectionCode::UnsupportedPayloadType, field: "payloadType", detail: "text/plain".into() },
        Case { name: "statement", producer: "acme", raw: sign(&wrong_type, l.key("acme")), code: RejectionCode::MalformedStatement, field: "_type", detail: String::new() },
        Case { name: "unknown producer", producer: "ghost", raw: sign(&good(1), l.key("acme")), code: RejectionCode::UnknownProducer, field: "subject", detail: "ghost".into() },
        Case { name: "unknown key", producer: "acme", raw: sign(&good(2), &stranger), code: RejectionCode::UnknownKey, field: "", detail: stranger_id.as_str().to_string() },
        Case { name: "wrong producer key", producer: "acme", raw: sign(&good(3), l.key("other")), code: RejectionCode::WrongProducerKey, field: "", detail: String::new() },
        Case { name: "revoked", producer: "acme", raw: sign(&good(4), &revoked), code: RejectionCode::KeyRevoked, field: "", detail: revoked_id.as_str().to_string() },
        Case { name: "expired", producer: "acme", raw: sign(&good(5), &expired), code: RejectionCode::KeyExpired, field: "", detail: expired_id.as_str().to_string() },
        Case { name: "bad signature", producer: "acme", raw: bad_sig.to_json(), code: RejectionCode::BadSignature, field: "", detail: String::new() },
        Case { name: "policy", producer: "acme", raw: sign(&other_predicate, l.key("acme")), code: RejectionCode::PolicyDenied, field: "predicateType", detail: "rule slsa-only (predicate_types)".into() },
    ];
    let mut by_seq = HashMap::new();
    for (i, c) in cases.iter().enumerate() {
        let seq = l.publish_raw(c.producer, c.raw.clone(), None).await;
        by_seq.insert(seq, i);
    }
    // One good envelope: rejections do not stop the batch.
    let good_seq = l
        .publish_raw("acme", sign(&good(100), l.key("acme")), None)
        .await;

    let got = collect_acks(&mut acks, cases.len() + 1, Duration::from_secs(30)).await;
    let covered: std::collections::HashSet<_> = cases.iter().map(|c| c.code).collect();
    assert_eq!(
        covered.len(),
        RejectionCode::ALL.len(),
        "every rejection code has a case"
    );
    let admin = l.db.admin().await;
    for a in got {
        if a.stream_seq == good_seq {
            assert_eq!(a.status, AckStatus::Accepted);
            continue;
        }
        let c = &cases[by_seq[&a.stream_seq]];
        assert_eq!(a.status, AckStatus::Rejected, "{}", c.name);
        let r = a.reason.as_ref().unwrap();
        assert_eq!(r.code, c.code, "{}: {r:?}", c.name);
        if !c.field.is_empty() {
            assert_eq!(r.field.as_deref(), Some(c.field), "{}: {r:?}", c.name);
        }
        assert!(
            r.detail.contains(&c.detail),
            "{}: detail {:?} lacks {:?}",
            c.name,
            r.detail,
            c.detail
        );
        let row = admin
            .query_one(
                "SELECT envelope, code, detail, field, producer, subject FROM dlq_items WHERE stream_seq = $1",
                &[&(a.stream_seq as i64)],
            )
            .await
            .unwrap_or_else(|e| panic!("{}: DLQ row: {e}", c.name));
        assert_eq!(
            row.get::<_, Vec<u8>>(0),
            c.raw,
            "{}: DLQ keeps the raw bytes",
            c.name
        );
        assert_eq!(row.get::<_, String>(1), c.code.as_str());
        assert_eq!(row.get::<_, String>(2), r.detail);
        assert_eq!(row.get::<_, Option<String>>(3), r.field);
        assert_eq!(row.get::<_, String>(4), c.producer);
    }
    let dlq: i64 = admin
        .query_one("SELECT count(*) FROM dlq_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dlq as usize, cases.len());
    for _ in 0..cases.len() {
        let m = tokio::time::timeout(Duration::from_secs(10), dlq_notices.next())
            .await
            .expect("a DLQ notice per rejection")
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert!(v["reason"]["code"].is_string(), "{v}");
    }
    let report = check_log(&admin, &l.signer).await;
    assert_eq!(report.entries, 1, "only the good envelope is in the log");
    w.stop().await;
}
