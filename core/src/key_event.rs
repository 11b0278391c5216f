//! Key events: the registry's history as entries of the log itself.
//!
//! Every change to a producer or a producer key (added, suspended, resumed; key added,
//! validity changed, revoked) is recorded by the database (migration V9) as a numbered
//! event, and the writer appends each one to the log as an entry of the reserved producer
//! `_ledger`: a DSSE envelope of payload type [`KEY_EVENT_PAYLOAD_TYPE`] whose payload is
//! the event's RFC 8785 JSON, signed by every ledger key the writer holds. An auditor with
//! nothing but the log and the ledger's verifier keys rebuilds the registry from those
//! entries ([`KeyHistory`]) and checks that every other entry was signed by a key of its
//! producer that was registered before it in the log and valid at its integrated time.
//!
//! Payload (all integers are unix milliseconds or small counters, below 2^53):
//! `{"_type": "https://ace-ledger.dev/key-event/v1", "event": N, "kind": "...",
//!   "producer": "...", "keyid"?: "...", "at": ms, "actor": "...", ...kind fields}`
//! - `key_added`: `public_key` (64 hex), `valid_from`, `valid_until` (ms or null)
//! - `key_validity_changed`: `valid_until` (ms or null)
//! - `key_revoked`, `producer_suspended`, `producer_resumed`: `reason`
//! - `backfilled: true` on events made by the V9 migration for a registry that existed
//!   before key events did (their keys may have signed entries before the event).

use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::VerifyingKey;
use serde_json::{Map, Value};

use crate::canonical::{parse_json_strict, to_canonical_json};
use crate::checkpoint::NoteSigner;
use crate::envelope::Envelope;
use crate::ids::{KeyId, ProducerId};
use crate::keys::{verify_signers, KeyLookup, RegisteredKey};

pub const KEY_EVENT_PAYLOAD_TYPE: &str = "application/vnd.ace.key-event+json";
pub const KEY_EVENT_TYPE: &str = "https://ace-ledger.dev/key-event/v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyEventError {
    #[error("key event payload is not JSON: {0}")]
    Json(String),
    #[error("key event field {field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error(
        "key event {event} is not in canonical form (RFC 8785): the ledger writes it canonical"
    )]
    NotCanonical { event: u64 },
}

fn field(field: &'static str, reason: impl Into<String>) -> KeyEventError {
    KeyEventError::Field {
        field,
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyEventKind {
    ProducerAdded,
    ProducerSuspended,
    ProducerResumed,
    KeyAdded,
    KeyValidityChanged,
    KeyRevoked,
}

impl KeyEventKind {
    pub const ALL: [KeyEventKind; 6] = [
        KeyEventKind::ProducerAdded,
        KeyEventKind::ProducerSuspended,
        KeyEventKind::ProducerResumed,
        KeyEventKind::KeyAdded,
        KeyEventKind::KeyValidityChanged,
        KeyEventKind::KeyRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyEventKind::ProducerAdded => "producer_added",
            KeyEventKind::ProducerSuspended => "producer_suspended",
            KeyEventKind::ProducerResumed => "producer_resumed",
            KeyEventKind::KeyAdded => "key_added",
            KeyEventKind::KeyValidityChanged => "key_validity_changed",
            KeyEventKind::KeyRevoked => "key_revoked",
        }
    }

    pub fn parse(s: &str) -> Option<KeyEventKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    fn is_key(self) -> bool {
        matches!(
            self,
            KeyEventKind::KeyAdded | KeyEventKind::KeyValidityChanged | KeyEventKind::KeyRevoked
        )
    }
}

/// One change to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    /// 1, 2, 3, … without gaps, in the order the changes were committed.
    pub event: u64,
    pub kind: KeyEventKind,
    pub producer: String,
    pub keyid: Option<String>,
    /// When the change takes effect, unix ms (database clock).
    pub at: i64,
    /// Who made it (the database session user, or what acectl set as `ace.actor`).
    pub actor: String,
    pub public_key: Option<String>,
    pub valid_from: Option<i64>,
    pub valid_until: Option<i64>,
    pub reason: Option<String>,
    pub backfilled: bool,
}

impl KeyEvent {
    /// From a `key_events` row: its columns and its `detail` object.
    ///
    /// # Errors
    /// A field the kind needs is missing or has the wrong type, or the kind is unknown.
    pub fn from_row(
        id: i64,
        kind: &str,
        producer: &str,
        keyid: Option<&str>,
        at_ms: i64,
        actor: &str,
        detail: &Value,
    ) -> Result<KeyEvent, KeyEventError> {
        let mut obj = detail.as_object().cloned().unwrap_or_default();
        obj.insert("_type".into(), KEY_EVENT_TYPE.into());
        obj.insert("event".into(), id.into());
        obj.insert("kind".into(), kind.into());
        obj.insert("producer".into(), producer.into());
        if let Some(k) = keyid {
            obj.insert("keyid".into(), k.into());
        }
        obj.insert("at".into(), at_ms.into());
        obj.insert("actor".into(), actor.into());
        Self::from_object(&obj)
    }

    fn from_object(obj: &Map<String, Value>) -> Result<KeyEvent, KeyEventError> {
        let s = |name: &'static str| -> Result<Option<String>, KeyEventError> {
            match obj.get(name) {
                None => Ok(None),
                Some(Value::String(v)) => Ok(Some(v.clone())),
                Some(_) => Err(field(name, "must be a string")),
            }
        };
        let int = |name: &'static str| -> Result<Option<Option<i64>>, KeyEventError> {
            match obj.get(name) {
                None => Ok(None),
                Some(Value::Null) => Ok(Some(None)),
                Some(v) => v
                    .as_i64()
                    .filter(|n| (0..1 << 53).contains(n))
                    .map(|n| Some(Some(n)))
                    .ok_or_else(|| field(name, "must be an integer in [0, 2^53) or null")),
            }
        };
        if s("_type")?.as_deref() != Some(KEY_EVENT_TYPE) {
            return Err(field("_type", format!("must be {KEY_EVENT_TYPE:?}")));
        }
        let kind_text = s("kind")?.ok_or_else(|| field("kind", "missing"))?;
        let kind = KeyEventKind::parse(&kind_text)
            .ok_or_else(|| field("kind", format!("unknown kind {kind_text:?}")))?;
        let event = obj
            .get("event")
            .and_then(Value::as_u64)
            .filter(|n| *n >= 1 && *n < 1 << 53)
            .ok_or_else(|| field("event", "must be an integer >= 1"))?;
        let producer = s("producer")?.ok_or_else(|| field("producer", "missing"))?;
        ProducerId::parse(&producer).map_err(|e| field("producer", e.to_string()))?;
        let keyid = s("keyid")?;
        match (&keyid, kind.is_key()) {
            (Some(k), true) => {
                KeyId::parse(k).map_err(|e| field("keyid", e.to_string()))?;
            }
            (None, true) => return Err(field("keyid", "missing for a key event")),
            (Some(_), false) => return Err(field("keyid", "present in a producer event")),
            (None, false) => {}
        }
        let at = int("at")?.flatten().ok_or_else(|| field("at", "missing"))?;
        let actor = s("actor")?.ok_or_else(|| field("actor", "missing"))?;
        let backfilled = match obj.get("backfilled") {
            None => false,
            Some(Value::Bool(true)) => true,
            Some(_) => return Err(field("backfilled", "must be true when present")),
        };
        let mut allowed: Vec<&str> = vec!["_type", "event", "kind", "producer", "at", "actor"];
        if keyid.is_some() {
            allowed.push("keyid");
        }
        if backfilled {
            allowed.push("backfilled");
        }
        let mut ev = KeyEvent {
            event,
            kind,
            producer,
            keyid,
            at,
            actor,
            public_key: None,
            valid_from: None,
            valid_until: None,
            reason: None,
            backfilled,
        };
        match kind {
            KeyEventKind::KeyAdded => {
                let pk = s("public_key")?.ok_or_else(|| field("public_key", "missing"))?;
                let key = parse_public_key(&pk)?;
                if ev.keyid.as_deref() != Some(KeyId::from_public_key(&key).as_str()) {
                    return Err(field(
                        "keyid",
                        "is not the SHA-256 of the event's public_key",
                    ));
                }
                ev.public_key = Some(pk);
                ev.valid_from = int("valid_from")?
                    .flatten()
                    .map(Some)
                    .ok_or_else(|| field("valid_from", "missing"))?;
                ev.valid_until = int("valid_until")?
                    .ok_or_else(|| field("valid_until", "missing (null when open-ended)"))?;
                if let (Some(f), Some(u)) = (ev.valid_from, ev.valid_until) {
                    if u <= f {
                        return Err(field("valid_until", "must be after valid_from"));
                    }
                }
                allowed.extend(["public_key", "valid_from", "valid_until"]);
            }
            KeyEventKind::KeyValidityChanged => {
                ev.valid_until = int("valid_until")?
                    .ok_or_else(|| field("valid_until", "missing (null when open-ended)"))?;
                allowed.push("valid_until");
            }
            KeyEventKind::KeyRevoked
            | KeyEventKind::ProducerSuspended
            | KeyEventKind::ProducerResumed => {
                ev.reason = Some(s("reason")?.ok_or_else(|| field("reason", "missing"))?);
                allowed.push("reason");
            }
            KeyEventKind::ProducerAdded => {}
        }
        if let Some(extra) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(KeyEventError::Field {
                field: "payload",
                reason: format!("unexpected member {extra:?} for a {} event", kind.as_str()),
            });
        }
        Ok(ev)
    }

    /// The payload as the log holds it: RFC 8785 JSON.
    pub fn to_payload(&self) -> Vec<u8> {
        let mut obj = Map::new();
        obj.insert("_type".into(), KEY_EVENT_TYPE.into());
        obj.insert("event".into(), self.event.into());
        obj.insert("kind".into(), self.kind.as_str().into());
        obj.insert("producer".into(), self.producer.clone().into());
        if let Some(k) = &self.keyid {
            obj.insert("keyid".into(), k.clone().into());
        }
        obj.insert("at".into(), self.at.into());
        obj.insert("actor".into(), self.actor.clone().into());
        if self.backfilled {
            obj.insert("backfilled".into(), true.into());
        }
        match self.kind {
            KeyEventKind::KeyAdded => {
                obj.insert("public_key".into(), self.public_key.clone().into());
                obj.insert("valid_from".into(), self.valid_from.into());
                obj.insert("valid_until".into(), self.valid_until.into());
            }
            KeyEventKind::KeyValidityChanged => {
                obj.insert("valid_until".into(), self.valid_until.into());
            }
            KeyEventKind::KeyRevoked
            | KeyEventKind::ProducerSuspended
            | KeyEventKind::ProducerResumed => {
                obj.insert("reason".into(), self.reason.clone().into());
            }
            KeyEventKind::ProducerAdded => {}
        }
        // A map of strings, integers below 2^53, booleans and nulls always canonicalizes.
        to_canonical_json(&Value::Object(obj)).unwrap_or_default()
    }

    /// Parses a payload from the log, refusing anything but the canonical form.
    ///
    /// # Errors
    /// Not JSON, a field missing or wrong for the kind, or not canonical.
    pub fn parse_payload(bytes: &[u8]) -> Result<KeyEvent, KeyEventError> {
        let v = parse_json_strict(bytes).map_err(|e| KeyEventError::Json(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| KeyEventError::Json("the payload is not a JSON object".into()))?;
        let ev = Self::from_object(obj)?;
        if ev.to_payload() != bytes {
            return Err(KeyEventError::NotCanonical { event: ev.event });
        }
        Ok(ev)
    }

    /// The DSSE envelope the writer appends: signed by every ledger key it holds.
    pub fn envelope(&self, signers: &[&NoteSigner]) -> Envelope {
        let mut env = Envelope {
            payload_type: KEY_EVENT_PAYLOAD_TYPE.to_owned(),
            payload: self.to_payload(),
            signatures: Vec::new(),
        };
        for s in signers {
            s.sign_envelope(&mut env);
        }
        env
    }

    /// One line for people: `#7 key_revoked acme/ab12… at 2026-… by alice: reason`.
    pub fn describe(&self) -> String {
        let who = match &self.keyid {
            Some(k) => format!("{}/{}", self.producer, &k[..k.len().min(12)]),
            None => self.producer.clone(),
        };
        format!(
            "#{} {} {who} at {} by {}",
            self.event,
            self.kind.as_str(),
            crate::keys::rfc3339_ms(self.at),
            self.actor
        )
    }
}

fn parse_public_key(hex_text: &str) -> Result<VerifyingKey, KeyEventError> {
    let bytes = hex::decode(hex_text)
        .ok()
        .filter(|b| b.len() == 32 && hex_text.bytes().all(|c| !c.is_ascii_uppercase()))
        .ok_or_else(|| field("public_key", "must be 64 lowercase hex characters"))?;
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| field("public_key", "must be 32 bytes"))?;
    VerifyingKey::from_bytes(&arr).map_err(|e| field("public_key", e.to_string()))
}

/// A producer as the log's key events describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerHistory {
    /// Index of the `producer_added` entry.
    pub added_index: u64,
    pub backfilled: bool,
    /// `[from, until)` spans of suspension, unix ms; the last may be open.
    pub suspensions: Vec<(i64, Option<i64>)>,
}

impl ProducerHistory {
    pub fn suspended(&self) -> bool {
        self.suspensions.last().is_some_and(|(_, u)| u.is_none())
    }

    pub fn suspended_at(&self, t: i64) -> Option<(i64, Option<i64>)> {
        self.suspensions
            .iter()
            .copied()
            .find(|(from, until)| *from <= t && until.is_none_or(|u| t < u))
    }
}

/// A key as the log's key events describe it (its final state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHistoryEntry {
    pub key: RegisteredKey,
    pub added_index: u64,
    pub backfilled: bool,
    pub revoke_reason: Option<String>,
}

/// The registry rebuilt from the log's key events.
#[derive(Debug, Clone, Default)]
pub struct KeyHistory {
    pub producers: BTreeMap<String, ProducerHistory>,
    pub keys: HashMap<String, KeyHistoryEntry>,
    /// The last event applied.
    pub last_event: u64,
    /// (event number, index) of every event applied, in order.
    pub events: Vec<(u64, u64)>,
}

impl KeyHistory {
    /// Applies the event found at log index `index`.
    ///
    /// # Errors
    /// Why the event does not follow from the history before it: a gap in the numbering,
    /// a key of an unknown producer, a key registered twice, a revocation of a revoked key.
    pub fn apply(&mut self, index: u64, ev: &KeyEvent) -> Result<(), String> {
        if ev.event != self.last_event + 1 {
            return Err(if ev.event <= self.last_event {
                format!(
                    "key event {} comes again (or out of order) after event {}",
                    ev.event, self.last_event
                )
            } else {
                format!(
                    "key events {}..{} are missing: the log goes from event {} to event {}",
                    self.last_event + 1,
                    ev.event - 1,
                    self.last_event,
                    ev.event
                )
            });
        }
        let producer = self.producers.get_mut(&ev.producer);
        match (ev.kind, producer) {
            (KeyEventKind::ProducerAdded, Some(_)) => {
                return Err(format!("producer {} is added a second time", ev.producer))
            }
            (KeyEventKind::ProducerAdded, None) => {
                self.producers.insert(
                    ev.producer.clone(),
                    ProducerHistory {
                        added_index: index,
                        backfilled: ev.backfilled,
                        suspensions: Vec::new(),
                    },
                );
            }
            (_, None) => {
                return Err(format!(
                    "{} for producer {}, which no earlier event adds",
                    ev.kind.as_str(),
                    ev.producer
                ))
            }
            (KeyEventKind::ProducerSuspended, Some(p)) => {
                if p.suspended() {
                    return Err(format!("producer {} is suspended twice", ev.producer));
                }
                p.suspensions.push((ev.at, None));
            }
            (KeyEventKind::ProducerResumed, Some(p)) => match p.suspensions.last_mut() {
                Some((from, until @ None)) if *from <= ev.at => *until = Some(ev.at),
                Some((from, None)) => {
                    return Err(format!(
                        "producer {} resumed at {} before its suspension at {from}",
                        ev.producer, ev.at
                    ))
                }
                _ => {
                    return Err(format!(
                        "producer {} resumed but not suspended",
                        ev.producer
                    ))
                }
            },
            (KeyEventKind::KeyAdded, Some(_)) => {
                let keyid = ev.keyid.clone().unwrap_or_default();
                if self.keys.contains_key(&keyid) {
                    return Err(format!("key {keyid} is added a second time"));
                }
                let pk = parse_public_key(ev.public_key.as_deref().unwrap_or_default())
                    .map_err(|e| e.to_string())?;
                let mut key = RegisteredKey::new(&ev.producer, pk, ev.valid_from.unwrap_or(0));
                key.valid_until_ms = ev.valid_until;
                self.keys.insert(
                    keyid,
                    KeyHistoryEntry {
                        key,
                        added_index: index,
                        backfilled: ev.backfilled,
                        revoke_reason: None,
                    },
                );
            }
            (KeyEventKind::KeyValidityChanged | KeyEventKind::KeyRevoked, Some(_)) => {
                let keyid = ev.keyid.clone().unwrap_or_default();
                let Some(k) = self.keys.get_mut(&keyid) else {
                    return Err(format!(
                        "{} for key {keyid}, which no earlier event adds",
                        ev.kind.as_str()
                    ));
                };
                if k.key.producer != ev.producer {
                    return Err(format!(
                        "{} names producer {} for key {keyid} of producer {}",
                        ev.kind.as_str(),
                        ev.producer,
                        k.key.producer
                    ));
                }
                if ev.kind == KeyEventKind::KeyRevoked {
                    if let Some(r) = k.key.revoked_at_ms {
                        return Err(format!("key {keyid} is revoked again (first at {r})"));
                    }
                    k.key.revoked_at_ms = Some(ev.at);
                    k.revoke_reason = ev.reason.clone();
                } else {
                    k.key.valid_until_ms = ev.valid_until;
                }
            }
        }
        self.last_event = ev.event;
        self.events.push((ev.event, index));
        Ok(())
    }

    /// Whether the entry at `index` of `producer`, integrated at `time_ms`, was signed by a
    /// key the log's key events say was valid then: the producer added before the entry
    /// and not suspended at its time, and a signature that verifies by one of its keys added
    /// before the entry, in its validity window and not revoked at that time. Returns the
    /// admitting keyid.
    ///
    /// # Errors
    /// What is wrong, naming the key and times.
    ///
    /// With `signatures` (the entry's envelope), every signature is verified as the writer
    /// verified it; without, only the admitting key recorded with the entry (`admitting`,
    /// which the caller has checked is one of the envelope's keyids) is judged, with no
    /// signature arithmetic.
    pub fn check_entry(
        &self,
        index: u64,
        producer: &str,
        time_ms: i64,
        admitting: &str,
        signatures: Option<&Envelope>,
    ) -> Result<KeyId, String> {
        let Some(p) = self.producers.get(producer) else {
            return Err(format!(
                "producer {producer} is not added by any key event in the log"
            ));
        };
        if p.added_index > index && !p.backfilled {
            return Err(format!(
                "producer {producer} is added by the key event at entry {}, after this entry",
                p.added_index
            ));
        }
        if let Some((from, until)) = p.suspended_at(time_ms) {
            return Err(format!(
                "producer {producer} was suspended at the entry's integrated time {} (suspended {}{})",
                crate::keys::rfc3339_ms(time_ms),
                crate::keys::rfc3339_ms(from),
                until.map_or(String::new(), |u| format!(
                    ", resumed {}",
                    crate::keys::rfc3339_ms(u)
                ))
            ));
        }
        let view = AsOf {
            history: self,
            index,
        };
        let Some(envelope) = signatures else {
            return self.check_key(&view, producer, time_ms, admitting);
        };
        verify_signers(envelope, &envelope.pae(), producer, &view, time_ms)
            .map(|s| s.keyid)
            .map_err(|r| {
                format!(
                    "{} ({}) at the entry's integrated time {}, by the log's key events",
                    r.detail,
                    r.code.as_str(),
                    crate::keys::rfc3339_ms(time_ms)
                )
            })
    }
}

impl KeyHistory {
    /// The admitting key alone: registered to `producer` before the entry, in its validity
    /// window and not revoked at `time_ms`.
    fn check_key(
        &self,
        view: &AsOf<'_>,
        producer: &str,
        time_ms: i64,
        keyid: &str,
    ) -> Result<KeyId, String> {
        let at = crate::keys::rfc3339_ms;
        let Some(key) = view.lookup(keyid) else {
            return Err(match self.keys.get(keyid) {
                Some(k) => format!(
                    "key {keyid} is registered by the key event at entry {}, after this entry (unknown_key)",
                    k.added_index
                ),
                None => format!("key {keyid} is registered by no key event in the log (unknown_key)"),
            });
        };
        if key.producer != producer {
            return Err(format!(
                "key {keyid} belongs to producer {}, not {producer} (wrong_producer_key)",
                key.producer
            ));
        }
        if key.is_revoked_at(time_ms) {
            return Err(format!(
                "key {keyid} was revoked at {} (key_revoked)",
                at(key.revoked_at_ms.unwrap_or(time_ms))
            ));
        }
        if !key.is_in_validity_at(time_ms) {
            return Err(format!(
                "key {keyid} is valid from {} until {} (key_expired)",
                at(key.valid_from_ms),
                key.valid_until_ms.map_or_else(|| "no end".to_owned(), at)
            ));
        }
        Ok(key.keyid.clone())
    }
}

/// The keys registered before a given index (or backfilled).
struct AsOf<'a> {
    history: &'a KeyHistory,
    index: u64,
}

impl KeyLookup for AsOf<'_> {
    fn lookup(&self, keyid: &str) -> Option<&RegisteredKey> {
        self.history
            .keys
            .get(keyid)
            .filter(|k| k.added_index < self.index || k.backfilled)
            .map(|k| &k.key)
    }
}

#[cfg(test)]
mod tests;
