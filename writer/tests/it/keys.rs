//! Key lifecycle through acectl and the running writer: rotation with an overlap, revocation,
//! suspension and resumption; each change in the log as a key event before the entries it
//! concerns, and the auditor, rebuilding the registry from those events alone, agreeing
//! with every verdict. Then copies of the log with a key event taken out: the audit fails.

use std::time::Duration;

use ace_core::ack::{Ack, AckStatus};
use ace_core::envelope::Envelope;
use ace_core::ids::KeyId;
use ace_core::key_event::{KeyEvent, KeyEventKind};
use ed25519_dalek::SigningKey;
use rand::Rng;

use super::support::*;

/// Publish one envelope and wait for its ack.
async fn publish(
    l: &Ledger,
    acks: &mut async_nats::Subscriber,
    n: u64,
    tag: &str,
    key: &SigningKey,
) -> Ack {
    l.publish_raw("acme", sign(&statement(n, tag), key), None)
        .await;
    let mut got = collect_acks(acks, 1, Duration::from_secs(30)).await;
    got.remove(0)
}

fn reason(a: &Ack) -> String {
    a.reason
        .as_ref()
        .map(|r| format!("{} {}", r.code.as_str(), r.detail))
        .unwrap_or_default()
}

/// The key events in the log, in index order: (index, event).
async fn logged_events(c: &tokio_postgres::Client) -> Vec<(i64, KeyEvent)> {
    let rows = c
        .query(
            "SELECT idx, envelope FROM ledger_entries WHERE producer = '_ledger' ORDER BY idx",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let env = Envelope::parse(r.get::<_, &[u8]>(1)).unwrap();
            (r.get(0), KeyEvent::parse_payload(&env.payload).unwrap())
        })
        .collect()
}

/// Index of the first entry signed (admitted) by `keyid`.
async fn first_use(c: &tokio_postgres::Client, keyid: &KeyId) -> i64 {
    c.query_one(
        "SELECT min(idx) FROM ledger_entries WHERE keyid = $1",
        &[&keyid.as_str()],
    )
    .await
    .unwrap()
    .get::<_, Option<i64>>(0)
    .expect("the key admitted an entry")
}

/// Waits until every key event is in the log.
async fn events_logged(c: &tokio_postgres::Client) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pending: bool = c
            .query_one(
                "SELECT (SELECT coalesce(max(id), 0) FROM key_events) > (SELECT coalesce(max(event_id), 0) FROM key_event_entries)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if !pending {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "key events were not appended within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_revocation_and_suspension_are_logged_and_judged_as_the_auditor_judges() {
    let mut l = Ledger::new().await;
    let k1_id = l.add_producer("acme").await;
    let k1 = l.key("acme").clone();
    let owner = l.db.url("ace_owner");
    let admin = l.db.admin().await;
    let w = l.spawn_writer(l.writer_config());
    let mut acks = l.ack_stream().await;

    let a = publish(&l, &mut acks, 1, "k1", &k1).await;
    assert_eq!(a.status, AckStatus::Accepted, "{}", reason(&a));

    // Rotate to k2 with a 4-second overlap: both keys sign meanwhile.
    let k2 = SigningKey::from_bytes(&rand::thread_rng().gen());
    let k2_hex = hex::encode(k2.verifying_key().as_bytes());
    let (ok, out) = acectl(&[
        "key",
        "rotate",
        "acme",
        "--public-key",
        &k2_hex,
        "--overlap",
        "4s",
        "--database-url",
        &owner,
    ]);
    assert!(ok, "{out}");
    let k2_id = KeyId::from_public_key(&k2.verifying_key());
    assert!(out.contains(k2_id.as_str()), "{out}");
    assert!(
        out.contains(&format!("key {k1_id} stays valid until")),
        "{out}"
    );
    // Run again: the same key, nothing new.
    let (ok, again) = acectl(&[
        "key",
        "rotate",
        "acme",
        "--public-key",
        &k2_hex,
        "--overlap",
        "4s",
        "--database-url",
        &owner,
    ]);
    assert!(ok && !again.contains("stays valid"), "{again}");
    let overlap_end: i64 = admin
        .query_one(
            "SELECT ace_ms(valid_until) FROM producer_keys WHERE keyid = $1",
            &[&k1_id.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    for (n, key) in [(2, &k1), (3, &k2)] {
        let a = publish(&l, &mut acks, n, "overlap", key).await;
        assert_eq!(
            a.status,
            AckStatus::Accepted,
            "in the overlap: {}",
            reason(&a)
        );
    }
    // After the overlap, by the database's clock: k1 is expired, k2 signs.
    loop {
        let now: i64 = admin
            .query_one("SELECT ace_ms(clock_timestamp())", &[])
            .await
            .unwrap()
            .get(0);
        if now > overlap_end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let a = publish(&l, &mut acks, 4, "after", &k1).await;
    assert_eq!(a.status, AckStatus::Rejected);
    assert!(reason(&a).starts_with("key_expired"), "{}", reason(&a));
    let a = publish(&l, &mut acks, 5, "after", &k2).await;
    assert_eq!(a.status, AckStatus::Accepted, "{}", reason(&a));

    // A third key, then k2 revoked: its envelopes from now on are key_revoked.
    let k3 = SigningKey::from_bytes(&rand::thread_rng().gen());
    let (ok, out) = acectl(&[
        "key",
        "add",
        "acme",
        "--public-key",
        &hex::encode(k3.verifying_key().as_bytes()),
        "--database-url",
        &owner,
    ]);
    assert!(ok, "{out}");
    let (ok, out) = acectl(&[
        "key",
        "revoke",
        k2_id.as_str(),
        "--reason",
        "laptop stolen",
        "--database-url",
        &owner,
    ]);
    assert!(ok && out.contains("revoked"), "{out}");
    let (ok, out) = acectl(&[
        "key",
        "revoke",
        k2_id.as_str(),
        "--reason",
        "again",
        "--database-url",
        &owner,
    ]);
    assert!(ok && out.contains("already revoked"), "{out}");
    let a = publish(&l, &mut acks, 6, "revoked", &k2).await;
    assert_eq!(a.status, AckStatus::Rejected);
    assert!(reason(&a).starts_with("key_revoked"), "{}", reason(&a));
    let a = publish(&l, &mut acks, 7, "k3", &k3).await;
    assert_eq!(a.status, AckStatus::Accepted, "{}", reason(&a));

    // Suspended, the producer's envelopes are refused; resumed, they flow.
    let (ok, out) = acectl(&[
        "producer",
        "suspend",
        "acme",
        "--reason",
        "incident 42",
        "--database-url",
        &owner,
    ]);
    assert!(ok && out.contains("suspended"), "{out}");
    let a = publish(&l, &mut acks, 8, "suspended", &k3).await;
    assert_eq!(a.status, AckStatus::Rejected);
    assert!(reason(&a).contains("suspended"), "{}", reason(&a));
    let (ok, out) = acectl(&["producer", "resume", "acme", "--database-url", &owner]);
    assert!(ok && out.contains("resumed"), "{out}");
    let a = publish(&l, &mut acks, 9, "resumed", &k3).await;
    assert_eq!(a.status, AckStatus::Accepted, "{}", reason(&a));

    // A key's history is final: no un-revoking, no reopening.
    let err = admin
        .execute(
            "UPDATE producer_keys SET revoked_at = NULL, revoke_reason = NULL WHERE keyid = $1",
            &[&k2_id.as_str()],
        )
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("a revocation is final"),
        "{err:?}"
    );
    // Nor can the registry lose a producer or a key, even to a superuser.
    for sql in [
        "DELETE FROM producer_keys",
        "TRUNCATE producer_keys",
        "DELETE FROM producers WHERE producer = 'acme'",
        "TRUNCATE producers CASCADE",
    ] {
        let err = admin.batch_execute(sql).await.unwrap_err();
        assert!(format!("{err:?}").contains("append-only"), "{sql}: {err:?}");
    }

    events_logged(&admin).await;
    w.stop().await;

    // The log holds every change, in order, each before the entries it concerns.
    let events = logged_events(&admin).await;
    let kinds: Vec<(KeyEventKind, Option<String>)> = events
        .iter()
        .map(|(_, e)| (e.kind, e.keyid.clone()))
        .collect();
    use KeyEventKind::*;
    assert_eq!(
        kinds,
        vec![
            (ProducerAdded, None),
            (KeyAdded, Some(k1_id.as_str().into())),
            (KeyAdded, Some(k2_id.as_str().into())),
            (KeyValidityChanged, Some(k1_id.as_str().into())),
            (
                KeyAdded,
                Some(KeyId::from_public_key(&k3.verifying_key()).as_str().into())
            ),
            (KeyRevoked, Some(k2_id.as_str().into())),
            (ProducerSuspended, None),
            (ProducerResumed, None),
        ]
    );
    for (i, (_, e)) in events.iter().enumerate() {
        assert_eq!(e.event, i as u64 + 1);
    }
    assert!(events
        .iter()
        .skip(2)
        .all(|(_, e)| e.actor == "test-operator"));
    assert_eq!(events[5].1.reason.as_deref(), Some("laptop stolen"));
    assert_eq!(events[6].1.reason.as_deref(), Some("incident 42"));
    let event_index = |kind: KeyEventKind, keyid: &KeyId| {
        events
            .iter()
            .find(|(_, e)| e.kind == kind && e.keyid.as_deref() == Some(keyid.as_str()))
            .map(|(i, _)| *i)
            .unwrap()
    };
    for k in [&k1_id, &k2_id] {
        assert!(event_index(KeyAdded, k) < first_use(&admin, k).await);
    }
    // Entries k2 signed before its revocation stay in the log, valid.
    let k2_entries: i64 = admin
        .query_one(
            "SELECT count(*) FROM ledger_entries WHERE keyid = $1",
            &[&k2_id.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(k2_entries, 2);

    let text = full_audit(&l);
    assert!(text.contains("key events: 8 in the log"), "{text}");
}

/// The registry of `from`, copied into `to` with the triggers off (an attacker's copy).
async fn copy_registry(
    from: &tokio_postgres::Client,
    to: &tokio_postgres::Client,
    skip_event: i64,
) {
    to.batch_execute("SET session_replication_role = replica")
        .await
        .unwrap();
    for r in from
        .query(
            "SELECT producer, status FROM producers WHERE producer <> '_ledger'",
            &[],
        )
        .await
        .unwrap()
    {
        to.execute(
            "INSERT INTO producers (producer, status) VALUES ($1, $2)",
            &[&r.get::<_, String>(0), &r.get::<_, String>(1)],
        )
        .await
        .unwrap();
    }
    for r in from
        .query("SELECT keyid, producer, public_key, valid_from, valid_until, revoked_at, revoke_reason FROM producer_keys", &[])
        .await
        .unwrap()
    {
        to.execute(
            "INSERT INTO producer_keys (keyid, producer, public_key, valid_from, valid_until, revoked_at, revoke_reason) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &r.get::<_, String>(0),
                &r.get::<_, String>(1),
                &r.get::<_, Vec<u8>>(2),
                &r.get::<_, std::time::SystemTime>(3),
                &r.get::<_, Option<std::time::SystemTime>>(4),
                &r.get::<_, Option<std::time::SystemTime>>(5),
                &r.get::<_, Option<String>>(6),
            ],
        )
        .await
        .unwrap();
    }
    // The events but one, renumbered so that the numbering has no gap.
    let mut n = 0i64;
    for r in from
        .query(
            "SELECT id, kind, producer, keyid, at_ms, actor, detail FROM key_events ORDER BY id",
            &[],
        )
        .await
        .unwrap()
    {
        if r.get::<_, i64>(0) == skip_event {
            continue;
        }
        n += 1;
        to.execute(
            "INSERT INTO key_events (id, kind, producer, keyid, at_ms, actor, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &n,
                &r.get::<_, String>(1),
                &r.get::<_, String>(2),
                &r.get::<_, Option<String>>(3),
                &r.get::<_, i64>(4),
                &r.get::<_, String>(5),
                &r.get::<_, serde_json::Value>(6),
            ],
        )
        .await
        .unwrap();
    }
    to.batch_execute("SET session_replication_role = origin")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_the_log_without_a_key_event_fails_the_audit() {
    let mut l = Ledger::new().await;
    let k1_id = l.add_producer("acme").await;
    let k1 = l.key("acme").clone();
    let owner = l.db.url("ace_owner");
    let w = l.spawn_writer(l.writer_config());
    let mut acks = l.ack_stream().await;
    for n in 0..3 {
        let a = publish(&l, &mut acks, n, "before", &k1).await;
        assert_eq!(a.status, AckStatus::Accepted, "{}", reason(&a));
    }
    let (ok, out) = acectl(&[
        "key",
        "revoke",
        k1_id.as_str(),
        "--reason",
        "compromised",
        "--database-url",
        &owner,
    ]);
    assert!(ok, "{out}");
    let k2 = SigningKey::from_bytes(&rand::thread_rng().gen());
    let (ok, out) = acectl(&[
        "key",
        "add",
        "acme",
        "--public-key",
        &hex::encode(k2.verifying_key().as_bytes()),
        "--database-url",
        &owner,
    ]);
    assert!(ok, "{out}");
    let a = publish(&l, &mut acks, 3, "after", &k1).await;
    assert!(reason(&a).starts_with("key_revoked"), "{}", reason(&a));
    let a = publish(&l, &mut acks, 4, "after", &k2).await;
    assert_eq!(a.status, AckStatus::Accepted, "{}", reason(&a));
    let admin = l.db.admin().await;
    events_logged(&admin).await;
    w.stop().await;
    full_audit(&l);
    let envelopes: Vec<Vec<u8>> = admin
        .query(
            "SELECT envelope FROM ledger_entries WHERE producer = 'acme' ORDER BY idx",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Event 3 is the revocation of k1 (1 producer_added, 2 key_added k1, 4 key_added k2).
    let revocation: String = admin
        .query_one("SELECT kind FROM key_events WHERE id = 3", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(revocation, "key_revoked");

    // The copy: the same registry, the same envelopes, the same ledger key, rebuilt by a
    // writer, but the revocation taken out of the events (the rest renumbered). The log it
    // makes is well formed; only the key events betray it.
    let mut copy = Ledger::new().await;
    copy.signer =
        ace_core::checkpoint::NoteSigner::parse_key_file(&l.signer.to_key_file()).unwrap();
    std::fs::write(&copy.key_file, copy.signer.to_key_file()).unwrap();
    let copy_admin = copy.db.admin().await;
    copy_registry(&admin, &copy_admin, 3).await;
    let mut cfg = copy.writer_config();
    cfg.log_origin = None;
    let w = copy.spawn_writer(cfg);
    let mut copy_acks = copy.ack_stream().await;
    for env in &envelopes {
        copy.publish_raw("acme", env.clone(), None).await;
    }
    collect_acks(&mut copy_acks, envelopes.len(), Duration::from_secs(30)).await;
    events_logged(&copy_admin).await;
    w.stop().await;
    let (ok, text) = audit(&copy);
    assert!(
        !ok,
        "the audit passed a log without the revocation:\n{text}"
    );
    assert!(
        text.contains(&format!("registry: key {k1_id}"))
            && text.contains("not the one the key events describe"),
        "{text}"
    );

    // And a key event's entry taken out of the original log (triggers off, as only a
    // superuser can): the log no longer holds event 3 where the registry says it is.
    admin
        .batch_execute("SET session_replication_role = replica")
        .await
        .unwrap();
    let idx: i64 = admin
        .query_one("SELECT idx FROM key_event_entries WHERE event_id = 3", &[])
        .await
        .unwrap()
        .get(0);
    admin
        .execute("DELETE FROM ledger_entries WHERE idx = $1", &[&idx])
        .await
        .unwrap();
    let (ok, text) = audit(&l);
    assert!(!ok, "the audit passed with a key event removed:\n{text}");
    assert!(text.contains(&format!("entry {idx}")), "{text}");
}

/// The latest block's checkpoint.
async fn latest_checkpoint(c: &tokio_postgres::Client) -> String {
    c.query_one(
        "SELECT checkpoint FROM ledger_blocks ORDER BY height DESC LIMIT 1",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_key_rotates_with_both_keys_signing_during_the_overlap() {
    use ace_core::checkpoint::{open_checkpoint, NoteSigner};
    let mut l = Ledger::new().await;
    l.add_producer("acme").await;
    let k = l.key("acme").clone();
    let admin = l.db.admin().await;
    let old = l.signer.verifier();
    let new_signer = NoteSigner::generate(l.signer.name()).unwrap();
    let new = new_signer.verifier();
    let new_file = l.dir.join("ledger-next.key");
    std::fs::write(&new_file, new_signer.to_key_file()).unwrap();
    let mut acks = l.ack_stream().await;

    // Before: the old key alone.
    let w = l.spawn_writer(l.writer_config());
    publish(&l, &mut acks, 1, "old", &k).await;
    w.stop().await;
    let cp = latest_checkpoint(&admin).await;
    assert!(open_checkpoint(&cp, std::slice::from_ref(&new)).is_err());

    // The overlap: both keys sign every checkpoint, and the key events.
    let mut cfg = l.writer_config();
    cfg.ledger_extra_key_files = vec![new_file.clone()];
    let w = l.spawn_writer(cfg);
    publish(&l, &mut acks, 2, "both", &k).await;
    let k2 = SigningKey::from_bytes(&rand::thread_rng().gen());
    register_key(&admin, "acme", &k2, "now()", "NULL").await;
    let a = publish(&l, &mut acks, 3, "both", &k2).await;
    assert_eq!(a.status, AckStatus::Accepted, "{}", reason(&a));
    w.stop().await;
    let cp = latest_checkpoint(&admin).await;
    for (who, v) in [("old", &old), ("new", &new)] {
        let opened = open_checkpoint(&cp, std::slice::from_ref(v));
        assert!(
            opened.is_ok(),
            "the overlap's checkpoint does not open with the {who} key: {opened:?}\n{cp}"
        );
    }
    let event: Vec<u8> = admin
        .query_one("SELECT envelope FROM ledger_entries WHERE producer = '_ledger' ORDER BY idx DESC LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(Envelope::parse(&event).unwrap().signatures.len(), 2);

    // After: the new key alone.
    let mut cfg = l.writer_config();
    cfg.ledger_key_file = new_file;
    let w = l.spawn_writer(cfg);
    publish(&l, &mut acks, 4, "new", &k).await;
    w.stop().await;
    let cp = latest_checkpoint(&admin).await;
    assert!(open_checkpoint(&cp, std::slice::from_ref(&new)).is_ok());
    assert!(open_checkpoint(&cp, std::slice::from_ref(&old)).is_err());

    // An auditor holding both keys verifies the whole log; holding only the old one, the
    // first checkpoint signed by the new key alone is named.
    let url = l.db.url("ace_reader");
    let (ok, text) = acectl(&[
        "audit",
        "--database-url",
        &url,
        "--ledger-key",
        &old.to_vkey(),
        "--ledger-key",
        &new.to_vkey(),
        "--progress-secs",
        "0",
    ]);
    assert!(ok, "{text}");
    let (ok, text) = acectl(&[
        "audit",
        "--database-url",
        &url,
        "--ledger-key",
        &old.to_vkey(),
        "--progress-secs",
        "0",
    ]);
    assert!(!ok && text.contains("checkpoint"), "{text}");
}
