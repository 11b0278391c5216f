//! `acectl audit`'s key checks (migration V9, docs/security.md "Key events").
//!
//! Before the entries are streamed, the `_ledger` entries are read in index order: each
//! must be a key event signed by a trusted ledger key, in canonical form, numbered 1, 2, 3,
//! … without a gap, and follow from the events before it ([`KeyHistory::apply`]). The
//! rebuilt history then judges every other entry as the writer did: a signature by a key
//! of its producer registered earlier in the log, valid and not revoked at the entry's
//! integrated time, the producer not suspended then ([`LedgerKeys::check_entry`]).
//!
//! After the log, the registry the reader serves (`producers`, `producer_keys`) and the
//! `key_events` rows are compared with the history: a key the registry holds that the log
//! never registered, a revocation the log does not hold, an event row that differs from
//! its entry, are each named.

use std::collections::HashMap;

use ace_core::checkpoint::NoteVerifier;
use ace_core::db::DbError;
use ace_core::envelope::Envelope;
use ace_core::ids::{KeyId, ProducerId};
use ace_core::key_event::{KeyEvent, KeyHistory, KEY_EVENT_PAYLOAD_TYPE};
use ace_core::keys::rfc3339_ms;
use tokio_postgres::Client;

use crate::audit::{mismatch, Location, Mismatch};

/// The history the log's key events give, and the first key event that does not check
/// (reported at its index, in the audit's order).
#[derive(Debug, Default)]
pub struct LedgerKeys {
    pub history: KeyHistory,
    /// Each logged event's payload as the log holds it, by event number.
    pub payloads: HashMap<u64, Vec<u8>>,
    pub broken: Option<(u64, Box<Mismatch>)>,
    /// Verify every entry's signatures (`--verify-signatures`), not only its admitting key.
    pub verify_signatures: bool,
}

/// What the key checks saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeySummary {
    pub events: u64,
    pub producers: usize,
    pub keys: usize,
    /// Events recorded but not yet in the log (the writer appends them at its next batch).
    pub pending: u64,
    pub signatures_verified: bool,
}

/// Reads and checks the `_ledger` entries.
pub async fn load(
    c: &Client,
    verifiers: &[NoteVerifier],
    verify_signatures: bool,
) -> Result<LedgerKeys, DbError> {
    let rows = c
        .query(
            "SELECT idx, envelope FROM ledger_entries WHERE producer = $1 ORDER BY idx",
            &[&ProducerId::LEDGER],
        )
        .await
        .map_err(DbError::query("reading the ledger's key events"))?;
    let mut out = LedgerKeys {
        verify_signatures,
        ..LedgerKeys::default()
    };
    for r in rows {
        let idx: i64 = r.get(0);
        let index = u64::try_from(idx).unwrap_or(0);
        let raw: &[u8] = r.get(1);
        match apply(&mut out.history, index, raw, verifiers) {
            Ok((event, payload)) => {
                out.payloads.insert(event, payload);
            }
            Err(m) => {
                out.broken = Some((index, m));
                break;
            }
        }
    }
    Ok(out)
}

fn apply(
    history: &mut KeyHistory,
    index: u64,
    raw: &[u8],
    verifiers: &[NoteVerifier],
) -> Result<(u64, Vec<u8>), Box<Mismatch>> {
    let loc = || Location::Entry(index);
    let env = Envelope::parse(raw).map_err(|r| {
        mismatch(
            loc(),
            "the ledger's entry is not a DSSE envelope",
            "a key event envelope",
            r.to_string(),
        )
    })?;
    if env.payload_type != KEY_EVENT_PAYLOAD_TYPE {
        return Err(mismatch(
            loc(),
            "an entry of producer _ledger is not a key event",
            KEY_EVENT_PAYLOAD_TYPE,
            env.payload_type,
        ));
    }
    let pae = env.pae();
    let trusted: HashMap<String, &NoteVerifier> = verifiers
        .iter()
        .map(|v| {
            (
                KeyId::from_public_key(v.public_key()).as_str().to_owned(),
                v,
            )
        })
        .collect();
    let mut signed = false;
    for (i, s) in env.signatures.iter().enumerate() {
        let Some(v) = trusted.get(&s.keyid) else {
            continue;
        };
        let ok = ed25519_dalek::Signature::from_slice(&s.sig)
            .is_ok_and(|sig| v.public_key().verify_strict(&pae, &sig).is_ok());
        if !ok {
            return Err(mismatch(
                loc(),
                format!("signatures[{i}] of the key event does not verify"),
                format!("a signature by ledger key {}", v.to_vkey()),
                "a signature that does not verify over the envelope's PAE",
            ));
        }
        signed = true;
    }
    if !signed {
        return Err(mismatch(
            loc(),
            "the key event is signed by no trusted ledger key",
            "a signature by one of the --ledger-key keys",
            format!(
                "signatures by keyids {}",
                env.signatures
                    .iter()
                    .map(|s| s.keyid.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let ev = KeyEvent::parse_payload(&env.payload).map_err(|e| {
        mismatch(
            loc(),
            "the key event's payload is malformed",
            "a key event (docs/security.md)",
            e.to_string(),
        )
    })?;
    history.apply(index, &ev).map_err(|why| {
        mismatch(
            loc(),
            format!(
                "key event {} does not follow from the log's earlier key events",
                ev.event
            ),
            format!(
                "event {} following event {}",
                history.last_event + 1,
                history.last_event
            ),
            why,
        )
    })?;
    Ok((ev.event, env.payload))
}

impl LedgerKeys {
    /// The check of one entry of a producer (not `_ledger`): Ok with the admitting keyid.
    pub fn check_entry(
        &self,
        index: u64,
        producer: &str,
        integrated_time: i64,
        envelope: &Envelope,
        keyid_column: &str,
    ) -> Result<(), Box<Mismatch>> {
        if let Some((at, m)) = &self.broken {
            if *at <= index {
                return Err(m.clone());
            }
        }
        let keyid = self
            .history
            .check_entry(
                index,
                producer,
                integrated_time,
                keyid_column,
                self.verify_signatures.then_some(envelope),
            )
            .map_err(|why| {
                mismatch(
                    Location::Entry(index),
                    "its signing key was not valid when it was integrated, by the log's key events",
                    format!(
                        "a signature by a key of {producer} registered before index {index} and valid at {}",
                        rfc3339_ms(integrated_time)
                    ),
                    why,
                )
            })?;
        if keyid.as_str() != keyid_column {
            return Err(mismatch(
                Location::Entry(index),
                "keyid column is not the key whose signature admitted the entry",
                keyid.as_str(),
                keyid_column,
            ));
        }
        Ok(())
    }

    /// The check of one `_ledger` entry: only whether its event checked (done in [`load`]).
    pub fn check_ledger_entry(&self, index: u64) -> Result<(), Box<Mismatch>> {
        match &self.broken {
            Some((at, m)) if *at <= index => Err(m.clone()),
            _ => Ok(()),
        }
    }
}

/// Compares the registry tables and the `key_events` rows with the history.
pub async fn check_registry(
    c: &Client,
    keys: &LedgerKeys,
) -> Result<Result<KeySummary, Box<Mismatch>>, DbError> {
    let history = &keys.history;
    let loc = |what: String| Location::Registry(what);
    // Every logged event has its row, identical, and the row says where it is.
    let rows = c
        .query(
            "SELECT e.id, e.kind, e.producer, e.keyid, e.at_ms, e.actor, e.detail, x.idx \
             FROM key_events e LEFT JOIN key_event_entries x ON x.event_id = e.id ORDER BY e.id",
            &[],
        )
        .await
        .map_err(DbError::query("reading key_events"))?;
    let logged: HashMap<u64, u64> = history.events.iter().copied().collect();
    let mut rebuilt = history.clone();
    let mut pending = 0u64;
    for (n, r) in rows.iter().enumerate() {
        let id: i64 = r.get(0);
        let event = u64::try_from(id).unwrap_or(0);
        let expected_id = n as u64 + 1;
        if event != expected_id {
            return Ok(Err(mismatch(
                loc(format!("key_events row {expected_id}")),
                "key_events must be numbered 1, 2, 3, … without a gap",
                format!("event {expected_id}"),
                format!("the next row is event {event}"),
            )));
        }
        let ev = match KeyEvent::from_row(
            id,
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
            &r.get(6),
        ) {
            Ok(ev) => ev,
            Err(e) => {
                return Ok(Err(mismatch(
                    loc(format!("key_events row {event}")),
                    "the row is not a valid key event",
                    "a key event",
                    e.to_string(),
                )))
            }
        };
        let idx: Option<i64> = r.get(7);
        match (logged.get(&event), idx) {
            (Some(&at), Some(i)) if i == at as i64 => {
                let payload = ev.to_payload();
                if keys.payloads.get(&event) != Some(&payload) {
                    return Ok(Err(mismatch(
                        loc(format!("key_events row {event}")),
                        "the registry's record of the event differs from the log's entry",
                        format!("entry {i}'s payload"),
                        String::from_utf8_lossy(&payload).into_owned(),
                    )));
                }
            }
            (Some(&at), other) => {
                return Ok(Err(mismatch(
                    loc(format!("key_event_entries for event {event}")),
                    "does not point at the entry that holds the event",
                    format!("index {at}"),
                    format!("{other:?}"),
                )))
            }
            (None, Some(i)) => {
                return Ok(Err(mismatch(
                    Location::Entry(u64::try_from(i).unwrap_or(0)),
                    format!("key_event_entries says key event {event} is here, but the log's key events do not hold it"),
                    format!("key event {event} ({})", ev.describe()),
                    "no such event in the log",
                )))
            }
            (None, None) => {
                // Not yet appended: only events after every logged one may wait.
                if event <= history.last_event {
                    return Ok(Err(mismatch(
                        loc(format!("key_events row {event}")),
                        "an event older than the log's last key event is not in the log",
                        format!("key event {event} ({}) in the log", ev.describe()),
                        "absent",
                    )));
                }
                pending += 1;
                if let Err(why) = rebuilt.apply(u64::MAX, &ev) {
                    return Ok(Err(mismatch(
                        loc(format!("key_events row {event}")),
                        "the pending event does not follow from the log's key events",
                        "a consistent change",
                        why,
                    )));
                }
            }
        }
    }
    if (rows.len() as u64) < history.last_event {
        let missing = rows.len() as u64 + 1;
        return Ok(Err(mismatch(
            loc(format!("key_events row {missing}")),
            "the log holds key events the registry has no row for",
            format!("rows up to event {}", history.last_event),
            format!("rows up to event {}", rows.len()),
        )));
    }

    // The registry is what the events say.
    let producers = c
        .query(
            "SELECT producer, status FROM producers WHERE producer <> $1 ORDER BY producer",
            &[&ProducerId::LEDGER],
        )
        .await
        .map_err(DbError::query("reading producers"))?;
    for r in &producers {
        let (id, status): (String, String) = (r.get(0), r.get(1));
        let Some(p) = rebuilt.producers.get(&id) else {
            return Ok(Err(mismatch(
                loc(format!("producer {id}")),
                "the registry holds a producer that no key event adds",
                "a producer_added event in the log",
                "none",
            )));
        };
        let by_events = if p.suspended() { "suspended" } else { "active" };
        if by_events != status {
            return Ok(Err(mismatch(
                loc(format!("producer {id}")),
                "the registry's status is not the one the key events give",
                by_events,
                status,
            )));
        }
    }
    if producers.len() != rebuilt.producers.len() {
        let listed: Vec<String> = producers.iter().map(|r| r.get(0)).collect();
        let gone = rebuilt
            .producers
            .keys()
            .find(|p| !listed.contains(p))
            .cloned()
            .unwrap_or_default();
        return Ok(Err(mismatch(
            loc(format!("producer {gone}")),
            "a producer the key events add is missing from the registry",
            "a producers row",
            "none",
        )));
    }
    let key_rows = c
        .query(
            "SELECT keyid, producer, public_key, ace_ms(valid_from), ace_ms(valid_until), \
                    ace_ms(revoked_at), revoke_reason FROM producer_keys ORDER BY keyid",
            &[],
        )
        .await
        .map_err(DbError::query("reading producer_keys"))?;
    for r in &key_rows {
        let keyid: String = r.get(0);
        let Some(k) = rebuilt.keys.get(&keyid) else {
            return Ok(Err(mismatch(
                loc(format!("key {keyid}")),
                "the registry holds a key that no key event registers",
                "a key_added event in the log",
                "none",
            )));
        };
        let found = (
            r.get::<_, String>(1),
            hex::encode(r.get::<_, &[u8]>(2)),
            r.get::<_, i64>(3),
            r.get::<_, Option<i64>>(4),
            r.get::<_, Option<i64>>(5),
            r.get::<_, Option<String>>(6),
        );
        let expected = (
            k.key.producer.clone(),
            hex::encode(k.key.public_key.as_bytes()),
            k.key.valid_from_ms,
            k.key.valid_until_ms,
            k.key.revoked_at_ms,
            k.revoke_reason.clone(),
        );
        if found != expected {
            let show = |t: &(
                String,
                String,
                i64,
                Option<i64>,
                Option<i64>,
                Option<String>,
            )| {
                format!(
                    "producer {}, valid from {}, until {}, revoked {}",
                    t.0,
                    rfc3339_ms(t.2),
                    t.3.map_or("-".into(), rfc3339_ms),
                    t.4.map_or("no".into(), |r| format!(
                        "at {} ({})",
                        rfc3339_ms(r),
                        t.5.clone().unwrap_or_default()
                    ))
                )
            };
            return Ok(Err(mismatch(
                loc(format!("key {keyid}")),
                "the registry's key is not the one the key events describe",
                format!("{} (by the key events)", show(&expected)),
                format!("{} (producer_keys)", show(&found)),
            )));
        }
    }
    if key_rows.len() != rebuilt.keys.len() {
        let listed: Vec<String> = key_rows.iter().map(|r| r.get(0)).collect();
        let gone = rebuilt
            .keys
            .keys()
            .find(|k| !listed.contains(k))
            .cloned()
            .unwrap_or_default();
        return Ok(Err(mismatch(
            loc(format!("key {gone}")),
            "a key the key events register is missing from the registry",
            "a producer_keys row",
            "none",
        )));
    }
    Ok(Ok(KeySummary {
        events: history.last_event,
        producers: history.producers.len(),
        keys: history.keys.len(),
        pending,
        signatures_verified: keys.verify_signatures,
    }))
}

/// Compares the reader's `/v1/keys` with the log's key events. The reader answers after the
/// audit's snapshot, so it may know newer keys and newer changes; what it may not do is
/// differ on what cannot change any more: a key's producer, public key and start, a
/// revocation, an end of validity already past.
pub fn check_served_keys(
    served: &serde_json::Value,
    keys: &LedgerKeys,
    url: &str,
    now_ms: i64,
) -> Result<usize, Box<Mismatch>> {
    let loc = || Location::Reader(url.to_owned());
    let list = served
        .get("producers")
        .and_then(|p| p.as_array())
        .ok_or_else(|| {
            mismatch(
                loc(),
                "/v1/keys is not the documented shape",
                "{\"ledger\": [...], \"producers\": [...]}",
                served.to_string(),
            )
        })?;
    let by_id: HashMap<&str, &serde_json::Value> = list
        .iter()
        .filter_map(|k| k.get("keyid").and_then(|v| v.as_str()).map(|id| (id, k)))
        .collect();
    let text =
        |v: &serde_json::Value, f: &str| v.get(f).and_then(|x| x.as_str()).map(str::to_owned);
    let mut checked = 0;
    let mut ids: Vec<&String> = keys.history.keys.keys().collect();
    ids.sort();
    for keyid in ids {
        let k = &keys.history.keys[keyid];
        let Some(s) = by_id.get(keyid.as_str()) else {
            return Err(mismatch(
                loc(),
                format!("/v1/keys does not list key {keyid}, which the log's key events register"),
                format!("key {keyid} of {}", k.key.producer),
                "absent",
            ));
        };
        let mut expected = vec![
            ("producer", Some(k.key.producer.clone())),
            ("public_key", Some(hex::encode(k.key.public_key.as_bytes()))),
            ("valid_from", Some(rfc3339_ms(k.key.valid_from_ms))),
        ];
        if let Some(r) = k.key.revoked_at_ms {
            expected.push(("revoked_at", Some(rfc3339_ms(r))));
        }
        if let Some(u) = k.key.valid_until_ms.filter(|u| *u <= now_ms) {
            expected.push(("valid_until", Some(rfc3339_ms(u))));
        }
        for (field, want) in expected {
            let got = text(s, field);
            if got != want {
                return Err(mismatch(
                    loc(),
                    format!("/v1/keys serves key {keyid} with a {field} the log's key events do not give"),
                    format!("{want:?}"),
                    format!("{got:?}"),
                ));
            }
        }
        checked += 1;
    }
    Ok(checked)
}
