use ed25519_dalek::SigningKey;
use serde_json::json;

use super::*;

fn sk(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn keyid(k: &SigningKey) -> String {
    KeyId::from_public_key(&k.verifying_key())
        .as_str()
        .to_owned()
}

fn added(event: i64, producer: &str, k: &SigningKey, from: i64, until: Option<i64>) -> KeyEvent {
    KeyEvent::from_row(
        event,
        "key_added",
        producer,
        Some(&keyid(k)),
        from,
        "alice",
        &json!({"public_key": hex::encode(k.verifying_key().as_bytes()), "valid_from": from, "valid_until": until}),
    )
    .unwrap()
}

fn producer(event: i64, kind: &str, producer: &str, at: i64) -> KeyEvent {
    let detail = if kind == "producer_added" {
        json!({})
    } else {
        json!({"reason": "drill"})
    };
    KeyEvent::from_row(event, kind, producer, None, at, "alice", &detail).unwrap()
}

fn key_change(
    event: i64,
    kind: &str,
    producer: &str,
    k: &SigningKey,
    at: i64,
    detail: Value,
) -> KeyEvent {
    KeyEvent::from_row(event, kind, producer, Some(&keyid(k)), at, "alice", &detail).unwrap()
}

#[test]
fn payload_is_canonical_and_round_trips() {
    let ev = added(3, "acme", &sk(1), 1_000, Some(5_000));
    let payload = ev.to_payload();
    let text = String::from_utf8(payload.clone()).unwrap();
    assert!(text.starts_with("{\"_type\":\"https://ace-ledger.dev/key-event/v1\",\"actor\":\"alice\",\"at\":1000,\"event\":3,"), "{text}");
    assert_eq!(KeyEvent::parse_payload(&payload).unwrap(), ev);
    // The same event, not canonical (a space), is refused.
    let spaced = text.replacen(',', ", ", 1);
    assert_eq!(
        KeyEvent::parse_payload(spaced.as_bytes()),
        Err(KeyEventError::NotCanonical { event: 3 })
    );
}

#[test]
fn malformed_events_name_the_field() {
    let err = |detail: Value, kind: &str, keyid: Option<&str>| {
        KeyEvent::from_row(1, kind, "acme", keyid, 5, "a", &detail)
            .unwrap_err()
            .to_string()
    };
    let k = keyid(&sk(1));
    assert!(err(json!({}), "key_added", Some(&k)).contains("public_key"));
    assert!(err(json!({"public_key": hex::encode(sk(2).verifying_key().as_bytes()), "valid_from": 1, "valid_until": null}), "key_added", Some(&k)).contains("keyid"));
    assert!(err(json!({}), "key_revoked", Some(&k)).contains("reason"));
    assert!(err(json!({"reason": "x", "extra": 1}), "key_revoked", Some(&k)).contains("extra"));
    assert!(err(json!({}), "producer_added", Some(&k)).contains("keyid"));
    assert!(err(json!({}), "key_exploded", None).contains("unknown kind"));
}

#[test]
fn the_envelope_is_signed_by_every_ledger_key() {
    let a = NoteSigner::from_seed("example.com/log", [7; 32]).unwrap();
    let b = NoteSigner::from_seed("example.com/log", [8; 32]).unwrap();
    let ev = producer(1, "producer_added", "acme", 10);
    let env = ev.envelope(&[&a, &b]);
    assert_eq!(env.payload_type, KEY_EVENT_PAYLOAD_TYPE);
    assert_eq!(env.signatures.len(), 2);
    let pae = env.pae();
    for (s, signer) in env.signatures.iter().zip([&a, &b]) {
        let vk = signer.verifier();
        assert_eq!(s.keyid, KeyId::from_public_key(vk.public_key()).as_str());
        let sig = ed25519_dalek::Signature::from_slice(&s.sig).unwrap();
        vk.public_key().verify_strict(&pae, &sig).unwrap();
    }
}

fn history(events: &[(u64, KeyEvent)]) -> Result<KeyHistory, String> {
    let mut h = KeyHistory::default();
    for (idx, ev) in events {
        h.apply(*idx, ev)?;
    }
    Ok(h)
}

#[test]
fn a_missing_event_is_named() {
    let h = history(&[
        (0, producer(1, "producer_added", "acme", 10)),
        (1, added(3, "acme", &sk(1), 10, None)),
    ]);
    assert_eq!(
        h.unwrap_err(),
        "key events 2..2 are missing: the log goes from event 1 to event 3"
    );
    let h = history(&[(0, added(1, "acme", &sk(1), 10, None))]);
    assert!(h.unwrap_err().contains("no earlier event adds"));
}

#[test]
fn entries_are_judged_by_the_keys_the_log_registered_before_them() {
    let (k1, k2) = (sk(1), sk(2));
    let h = history(&[
        (0, producer(1, "producer_added", "acme", 10)),
        (1, added(2, "acme", &k1, 10, None)),
        // Rotation at 1,000 with an overlap until 2,000; k1 revoked at 3,000.
        (5, added(3, "acme", &k2, 1_000, None)),
        (
            5 + 1,
            key_change(
                4,
                "key_validity_changed",
                "acme",
                &k1,
                1_000,
                json!({"valid_until": 2_000}),
            ),
        ),
        (
            9,
            key_change(
                5,
                "key_revoked",
                "acme",
                &k1,
                3_000,
                json!({"reason": "laptop stolen"}),
            ),
        ),
        (12, producer(6, "producer_suspended", "acme", 4_000)),
        (13, producer(7, "producer_resumed", "acme", 5_000)),
    ])
    .unwrap();
    let by = |k: &SigningKey| Envelope::sign("text/plain", b"x", k);
    // Each verdict is the same with the signatures verified and with the key alone.
    let check = |index: u64, t: i64, k: &SigningKey| {
        let env = by(k);
        let full = h.check_entry(index, "acme", t, &keyid(k), Some(&env));
        let quick = h.check_entry(index, "acme", t, &keyid(k), None);
        assert_eq!(full.is_ok(), quick.is_ok(), "{full:?} {quick:?}");
        if let (Err(f), Err(q)) = (&full, &quick) {
            for code in ["unknown_key", "key_expired", "key_revoked", "suspended"] {
                assert_eq!(f.contains(code), q.contains(code), "{f} / {q}");
            }
        }
        full
    };
    assert_eq!(check(2, 500, &k1).unwrap().as_str(), keyid(&k1));
    // k2 signs at index 3, before its registration at index 5: unknown then.
    let e = check(3, 1_500, &k2).unwrap_err();
    assert!(e.contains("unknown_key"), "{e}");
    // In the overlap both keys are good; after it, only k2.
    check(7, 1_500, &k1).unwrap();
    check(7, 1_500, &k2).unwrap();
    let e = check(8, 2_500, &k1).unwrap_err();
    assert!(e.contains("key_expired"), "{e}");
    let e = check(10, 3_000, &k1).unwrap_err();
    assert!(e.contains("key_revoked"), "{e}");
    let e = check(14, 4_500, &k2).unwrap_err();
    assert!(e.contains("suspended"), "{e}");
    check(14, 5_000, &k2).unwrap();
    let e = h
        .check_entry(14, "beta", 5_000, &keyid(&k2), None)
        .unwrap_err();
    assert!(e.contains("not added"), "{e}");
    // A signature that does not verify is caught only when signatures are verified.
    let mut forged = by(&k2);
    forged.signatures[0].sig[0] ^= 1;
    assert!(h
        .check_entry(14, "acme", 5_000, &keyid(&k2), Some(&forged))
        .is_err());
    assert!(h.check_entry(14, "acme", 5_000, &keyid(&k2), None).is_ok());
}

#[test]
fn backfilled_keys_may_precede_their_events() {
    let k = sk(1);
    let mut p = producer(1, "producer_added", "acme", 10);
    p.backfilled = true;
    let mut a = added(2, "acme", &k, 10, None);
    a.backfilled = true;
    let h = history(&[(40, p), (41, a.clone())]).unwrap();
    let env = Envelope::sign("t", b"x", &k);
    h.check_entry(3, "acme", 500, &keyid(&k), Some(&env))
        .unwrap();
    h.check_entry(3, "acme", 500, &keyid(&k), None).unwrap();
    assert_eq!(KeyEvent::parse_payload(&a.to_payload()).unwrap(), a);
}
