//! Hostile and malformed input, table-driven, through the running writer: each envelope
//! gets its exact rejection code, the raw bytes are kept in the DLQ, nothing panics, and a
//! replay is a duplicate, never a second entry.

use std::collections::HashMap;
use std::time::Duration;

use ace_core::ack::AckStatus;
use ace_core::envelope::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use ace_core::rejection::RejectionCode;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::SigningKey;

use super::support::*;

use RejectionCode::*;

/// An envelope JSON with the given fields (any JSON values).
fn env_json(
    payload_type: serde_json::Value,
    payload: serde_json::Value,
    sigs: serde_json::Value,
) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!({"payloadType": payload_type, "payload": payload, "signatures": sigs}),
    )
    .unwrap()
}

fn stmt(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_hostile_envelopes_each_get_their_exact_code() {
    let mut l = Ledger::new().await;
    l.add_producer("acme").await;
    l.add_producer("other").await;
    let mut cfg = l.writer_config();
    cfg.max_envelope_bytes = 64 * 1024;
    let w = l.spawn_writer(cfg);
    let mut acks = l.ack_stream().await;
    let acme = l.key("acme").clone();
    let other = l.key("other").clone();
    let stranger = SigningKey::from_bytes(&[77; 32]);
    let good = sign(&statement(1, "hostile"), &acme);
    let good_env = Envelope::parse(&good).unwrap();
    let sig = |e: &Envelope| serde_json::json!([{"keyid": e.signatures[0].keyid, "sig": STANDARD.encode(&e.signatures[0].sig)}]);
    let payload_b64 = STANDARD.encode(&good_env.payload);
    // Deep, but under the size limit: the parser's depth limit answers, not a stack overflow.
    // Deep, but under the size limit: the parser's depth limit answers, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let deep_predicate = format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"x","digest":{{"sha256":"{}"}}}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{}{}}}"#,
        "a".repeat(64),
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let truncated = good[..good.len() / 2].to_vec();
    // A valid signature by acme over another statement, moved onto this payload.
    let other_sig = Envelope::parse(&sign(&statement(2, "hostile"), &acme)).unwrap();
    let mut moved = good_env.clone();
    moved.signatures = other_sig.signatures.clone();
    let mut short_sig = good_env.clone();
    short_sig.signatures[0].sig.truncate(63);
    // acme's keyid on a signature made by another key.
    let mut forged = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &statement(3, "hostile"), &stranger);
    forged.signatures[0].keyid = good_env.signatures[0].keyid.clone();
    // A valid acme signature plus a broken one by another registered key.
    let mut mixed = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &statement(4, "hostile"), &acme);
    mixed.add_signature(&other);
    if let Some(b) = mixed.signatures[1].sig.get_mut(0) {
        *b ^= 1;
    }
    let mut many = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &statement(5, "hostile"), &stranger);
    for i in 0..300u32 {
        let k = SigningKey::from_bytes(&[(i % 250) as u8 + 1; 32]);
        many.add_signature(&k);
    }
    let nested = sign(&good, &acme); // a DSSE envelope whose payload is a DSSE envelope
    let s = |v| sign(&stmt(v), &acme);
    let digest = "ab".repeat(32);

    let cases: Vec<(&str, &str, Vec<u8>, RejectionCode)> = vec![
        ("empty", "acme", vec![], MalformedEnvelope),
        ("null", "acme", b"null".to_vec(), MalformedEnvelope),
        ("array", "acme", b"[]".to_vec(), MalformedEnvelope),
        ("empty object", "acme", b"{}".to_vec(), MalformedEnvelope),
        ("truncated", "acme", truncated, MalformedEnvelope),
        ("deep nesting", "acme", deep.into_bytes(), MalformedEnvelope),
        (
            "NaN",
            "acme",
            br#"{"payloadType":NaN,"payload":"","signatures":[]}"#.to_vec(),
            MalformedEnvelope,
        ),
        (
            "trailing garbage",
            "acme",
            [good.clone(), b"{}".to_vec()].concat(),
            MalformedEnvelope,
        ),
        (
            "not UTF-8",
            "acme",
            vec![b'{', 0xff, 0xfe, b'}'],
            MalformedEnvelope,
        ),
        (
            "payloadType missing",
            "acme",
            serde_json::to_vec(
                &serde_json::json!({"payload": payload_b64, "signatures": sig(&good_env)}),
            )
            .unwrap(),
            MalformedEnvelope,
        ),
        (
            "payloadType a number",
            "acme",
            env_json(7.into(), payload_b64.clone().into(), sig(&good_env)),
            MalformedEnvelope,
        ),
        (
            "payloadType empty",
            "acme",
            env_json("".into(), payload_b64.clone().into(), sig(&good_env)),
            MalformedEnvelope,
        ),
        (
            "payload not base64",
            "acme",
            env_json(
                IN_TOTO_PAYLOAD_TYPE.into(),
                "not base64!".into(),
                sig(&good_env),
            ),
            MalformedEnvelope,
        ),
        (
            // DSSE allows URL-safe base64: it decodes, and the bytes are no statement.
            "payload url-safe base64 of junk",
            "acme",
            env_json(
                IN_TOTO_PAYLOAD_TYPE.into(),
                URL_SAFE_NO_PAD.encode([0xfb, 0xff, 0xfe]).into(),
                sig(&good_env),
            ),
            MalformedStatement,
        ),
        (
            "signatures missing",
            "acme",
            serde_json::to_vec(
                &serde_json::json!({"payloadType": IN_TOTO_PAYLOAD_TYPE, "payload": payload_b64}),
            )
            .unwrap(),
            MalformedEnvelope,
        ),
        (
            "no signatures",
            "acme",
            env_json(
                IN_TOTO_PAYLOAD_TYPE.into(),
                payload_b64.clone().into(),
                serde_json::json!([]),
            ),
            MalformedEnvelope,
        ),
        (
            "sig not base64",
            "acme",
            env_json(
                IN_TOTO_PAYLOAD_TYPE.into(),
                payload_b64.clone().into(),
                serde_json::json!([{"keyid": "k", "sig": "%%%"}]),
            ),
            MalformedEnvelope,
        ),
        (
            "keyid a number",
            "acme",
            env_json(
                IN_TOTO_PAYLOAD_TYPE.into(),
                payload_b64.clone().into(),
                serde_json::json!([{"keyid": 5, "sig": "AAAA"}]),
            ),
            MalformedEnvelope,
        ),
        ("too large", "acme", vec![b' '; 70 * 1024], TooLarge),
        (
            "payload type json",
            "acme",
            Envelope::sign("application/json", b"{}", &acme).to_json(),
            UnsupportedPayloadType,
        ),
        (
            "payload type case",
            "acme",
            Envelope::sign(
                "application/vnd.in-toto+JSON",
                &statement(6, "hostile"),
                &acme,
            )
            .to_json(),
            UnsupportedPayloadType,
        ),
        (
            "statement not JSON",
            "acme",
            sign(b"plain text", &acme),
            MalformedStatement,
        ),
        (
            "statement _type missing",
            "acme",
            s(
                serde_json::json!({"subject": [{"name": "x", "digest": {"sha256": digest}}], "predicateType": "p"}),
            ),
            MalformedStatement,
        ),
        (
            "statement _type v0.1",
            "acme",
            s(
                serde_json::json!({"_type": "https://in-toto.io/Statement/v0.1", "subject": [{"name": "x", "digest": {"sha256": digest}}], "predicateType": "p"}),
            ),
            MalformedStatement,
        ),
        (
            "no subjects",
            "acme",
            s(
                serde_json::json!({"_type": "https://in-toto.io/Statement/v1", "subject": [], "predicateType": "p"}),
            ),
            MalformedStatement,
        ),
        (
            "empty digest",
            "acme",
            s(
                serde_json::json!({"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "x", "digest": {}}], "predicateType": "p"}),
            ),
            MalformedStatement,
        ),
        (
            "predicateType missing",
            "acme",
            s(
                serde_json::json!({"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "x", "digest": {"sha256": digest}}]}),
            ),
            MalformedStatement,
        ),
        (
            "subject name a number",
            "acme",
            s(
                serde_json::json!({"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": 1, "digest": {"sha256": digest}}], "predicateType": "p"}),
            ),
            MalformedStatement,
        ),
        (
            "deep predicate",
            "acme",
            sign(deep_predicate.as_bytes(), &acme),
            MalformedStatement,
        ),
        ("nested envelope", "acme", nested, MalformedStatement),
        (
            "statement an array",
            "acme",
            sign(b"[]", &acme),
            MalformedStatement,
        ),
        (
            "producer in capitals",
            "ACME",
            sign(&statement(7, "hostile"), &acme),
            UnknownProducer,
        ),
        (
            "unregistered producer",
            "ghost",
            sign(&statement(8, "hostile"), &acme),
            UnknownProducer,
        ),
        (
            "signature over another payload",
            "acme",
            moved.to_json(),
            BadSignature,
        ),
        (
            "signature of 63 bytes",
            "acme",
            short_sig.to_json(),
            MalformedEnvelope,
        ),
        (
            "acme's keyid, another key",
            "acme",
            forged.to_json(),
            BadSignature,
        ),
        (
            "one good, one broken known signature",
            "acme",
            mixed.to_json(),
            BadSignature,
        ),
        (
            "another producer's key",
            "acme",
            sign(&statement(9, "hostile"), &other),
            WrongProducerKey,
        ),
        (
            "an unregistered key",
            "acme",
            sign(&statement(10, "hostile"), &stranger),
            UnknownKey,
        ),
        ("301 unknown signatures", "acme", many.to_json(), UnknownKey),
    ];
    assert!(cases.len() >= 40, "{}", cases.len());
    let mut by_seq = HashMap::new();
    for (i, (_, producer, raw, _)) in cases.iter().enumerate() {
        by_seq.insert(l.publish_raw(producer, raw.clone(), None).await, i);
    }
    // The good envelope, then its replay without a message id (past JetStream's dedupe).
    let first = l.publish_raw("acme", good.clone(), None).await;
    let replay = l.publish_raw("acme", good.clone(), None).await;

    let got = collect_acks(&mut acks, cases.len() + 2, Duration::from_secs(60)).await;
    let admin = l.db.admin().await;
    let mut wrong = Vec::new();
    let first_index = got
        .iter()
        .find(|a| a.stream_seq == first)
        .and_then(|a| a.index);
    assert!(first_index.is_some(), "the good envelope was accepted");
    for a in &got {
        if a.stream_seq == first {
            assert_eq!(a.status, AckStatus::Accepted, "{a:?}");
            continue;
        }
        if a.stream_seq == replay {
            assert_eq!(a.status, AckStatus::Duplicate, "the replay: {a:?}");
            assert_eq!(a.index, first_index);
            continue;
        }
        let (name, producer, raw, code) = &cases[by_seq[&a.stream_seq]];
        let r = a.reason.as_ref();
        if a.status != AckStatus::Rejected || r.map(|r| r.code) != Some(*code) {
            wrong.push(format!(
                "{name}: expected {code:?}, got {:?} {:?}",
                a.status, r
            ));
            continue;
        }
        let row = admin
            .query_one(
                "SELECT envelope, code, producer FROM dlq_items WHERE stream_seq = $1",
                &[&(a.stream_seq as i64)],
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: DLQ row: {e}"));
        assert_eq!(
            &row.get::<_, Vec<u8>>(0),
            raw,
            "{name}: the DLQ keeps the raw bytes"
        );
        assert_eq!(row.get::<_, String>(1), code.as_str(), "{name}");
        assert_eq!(&row.get::<_, String>(2), producer, "{name}");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let report = check_log(&admin, &l.signer).await;
    full_audit(&l);
    assert_eq!(report.entries, 1, "only the good envelope, once");
    w.stop().await;
}
