//! Turning intake messages into verdicts: parse, check, verify signatures, apply policy.
//! Pure functions over a registry snapshot; the signature checks run in parallel.
//!
//! Checks run cheapest first, and the first failure is the verdict: subject → size →
//! envelope → payload type → statement → producer registered → signatures → policy.
//! Policy rules are evaluated in parallel with the signatures; rate limits, which
//! depend on message order, are settled afterwards in one pass ([`settle`]).
//! A well-signed copy of an entry already in the log is a duplicate; a badly signed one is
//! rejected (the ledger never confirms anything to an invalid signer).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use ace_core::envelope::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use ace_core::ids::{EnvelopeDigest, KeyId, ProducerId};
use ace_core::keys::{verify_signers, KeyLookup, RegisteredKey};
use ace_core::nats::Names;
use ace_core::policy::{
    check_producer_active, Candidate, Decision, Evaluation, Policy, ProducerStatus, RateLimiter,
    Tally,
};
use ace_core::prepared_key::PreparedKey;
use ace_core::rejection::{Rejection, RejectionCode};
use ace_core::statement::{Statement, Subject};
use bytes::Bytes;
use rayon::prelude::*;

/// One message from the intake stream.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub subject: String,
    pub payload: Bytes,
    pub stream_seq: u64,
    /// When JetStream stored the message (its metadata's timestamp). With `stream_seq` it
    /// names the message: a redelivery has both the same, while a message of a deleted and
    /// recreated stream reuses the sequence at another time.
    pub stored_at: chrono::DateTime<chrono::Utc>,
    /// JetStream's delivery count of this message (1 on first delivery), kept with a DLQ
    /// row: a high count tells the operator the writer crashed or timed out on it.
    pub delivered: i64,
    /// From the `Ace-Published-At` header, unix ms.
    pub published_at_ms: Option<i64>,
    /// Headers kept with a DLQ row, for triage.
    pub headers: serde_json::Value,
}

/// An envelope that passed every check and may be appended.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub producer: String,
    pub digest: EnvelopeDigest,
    pub payload_type: String,
    pub predicate_type: Option<String>,
    pub subjects: Vec<Subject>,
    pub keyid: KeyId,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Verdict {
    Admit(Admitted),
    Reject {
        /// The subject's producer token, verbatim (may name no registered producer).
        producer: String,
        digest: Option<EnvelopeDigest>,
        rejection: Rejection,
    },
}

impl Verdict {
    pub fn producer(&self) -> &str {
        match self {
            Verdict::Admit(a) => &a.producer,
            Verdict::Reject { producer, .. } => producer,
        }
    }
}

/// A message after the checks that need no registry.
#[derive(Debug)]
pub enum Parsed {
    Rejected {
        producer: String,
        digest: Option<EnvelopeDigest>,
        rejection: Rejection,
    },
    Ok {
        producer: ProducerId,
        envelope: Envelope,
        pae: Vec<u8>,
        digest: EnvelopeDigest,
        statement: Option<Statement>,
        /// Bytes as received.
        size: usize,
    },
}

/// The deployment's payload type gate, applied before the payload is parsed.
pub fn check_payload_type(allowed: &[String], payload_type: &str) -> Result<(), Rejection> {
    if allowed.iter().any(|t| t == payload_type) {
        Ok(())
    } else {
        Err(Rejection::new(
            RejectionCode::UnsupportedPayloadType,
            format!(
                "payload type {payload_type:?} is not stored by this ledger (stored: {})",
                allowed.join(", ")
            ),
        )
        .with_field("payloadType"))
    }
}

pub fn parse(names: &Names, allowed_types: &[String], max_bytes: usize, msg: &Incoming) -> Parsed {
    let token = names.producer_of(&msg.subject).unwrap_or(&msg.subject);
    let reject = |digest: Option<EnvelopeDigest>, rejection: Rejection| Parsed::Rejected {
        producer: token.to_string(),
        digest,
        rejection,
    };
    let producer = match ProducerId::parse(token) {
        Ok(p) => p,
        Err(e) => {
            return reject(
                None,
                Rejection::new(
                    RejectionCode::UnknownProducer,
                    format!("subject {} names no valid producer: {e}", msg.subject),
                )
                .with_field("subject"),
            )
        }
    };
    if msg.payload.len() > max_bytes {
        return reject(
            None,
            Rejection::new(
                RejectionCode::TooLarge,
                format!(
                    "envelope is {} bytes; this ledger admits at most {max_bytes}",
                    msg.payload.len()
                ),
            )
            .with_field("envelope"),
        );
    }
    let envelope = match Envelope::parse(&msg.payload) {
        Ok(e) => e,
        Err(r) => return reject(None, r),
    };
    let pae = envelope.pae();
    let digest = EnvelopeDigest::from_pae(&pae);
    if let Err(r) = check_payload_type(allowed_types, &envelope.payload_type) {
        return reject(Some(digest), r);
    }
    let statement = if envelope.payload_type == IN_TOTO_PAYLOAD_TYPE {
        match Statement::parse(&envelope.payload) {
            Ok(s) => Some(s),
            Err(r) => return reject(Some(digest), r),
        }
    } else {
        None
    };
    Parsed::Ok {
        producer,
        envelope,
        pae,
        digest,
        statement,
        size: msg.payload.len(),
    }
}

/// What the registry must be asked for: producers and keyids named by the batch.
pub fn registry_needs(parsed: &[Parsed]) -> (Vec<String>, Vec<String>) {
    let mut producers = BTreeSet::new();
    let mut keyids = BTreeSet::new();
    for p in parsed {
        if let Parsed::Ok {
            producer, envelope, ..
        } = p
        {
            producers.insert(producer.as_str().to_string());
            for s in &envelope.signatures {
                keyids.insert(s.keyid.clone());
            }
        }
    }
    (
        producers.into_iter().collect(),
        keyids.into_iter().collect(),
    )
}

/// The digests of the envelopes that parsed, for the dedupe lookup.
pub fn digests(parsed: &[Parsed]) -> Vec<String> {
    parsed
        .iter()
        .filter_map(|p| match p {
            Parsed::Ok { digest, .. } => Some(digest.as_str().to_owned()),
            Parsed::Rejected { .. } => None,
        })
        .collect()
}

/// The registry as read for one batch.
#[derive(Debug, Default)]
pub struct Registry {
    pub producers: HashMap<String, ProducerStatus>,
    pub keys: HashMap<String, RegisteredKey>,
    /// The batch's busy keys, prepared for fast verification, by keyid ([`PreparedKeys`]).
    pub prepared: HashMap<String, Arc<PreparedKey>>,
}

impl KeyLookup for Registry {
    fn lookup(&self, keyid: &str) -> Option<&RegisteredKey> {
        self.keys.get(keyid)
    }
    fn prepared(&self, keyid: &str) -> Option<&PreparedKey> {
        self.prepared.get(keyid).map(|p| p.as_ref())
    }
}

/// A key is prepared (its table built, ~1 ms) once it signs this many envelopes of one
/// batch: each of its verifications then saves ~10 µs, so the table pays for itself
/// within the batch. Quieter keys are verified as they are.
pub const PREPARE_AT: usize = 64;

/// At most this many prepared keys (30 KiB each) are kept between batches; when more are
/// needed the cache starts over, so memory stays bounded whatever the number of keys.
pub const PREPARED_MAX: usize = 256;

/// Prepared keys kept between batches, by public key: a producer's key signs batch after
/// batch, and its table is built once.
#[derive(Default)]
pub struct PreparedKeys {
    by_key: HashMap<[u8; 32], Arc<PreparedKey>>,
}

impl PreparedKeys {
    /// Give `registry` the prepared form of every key of the batch that has one or is busy
    /// enough to get one (built in parallel).
    pub fn attach(&mut self, registry: &mut Registry, parsed: &[Parsed]) {
        let mut uses: HashMap<&str, usize> = HashMap::new();
        for p in parsed {
            if let Parsed::Ok { envelope, .. } = p {
                for sig in &envelope.signatures {
                    *uses.entry(sig.keyid.as_str()).or_default() += 1;
                }
            }
        }
        let mut build = Vec::new();
        for (keyid, n) in uses {
            let Some(key) = registry.keys.get(keyid) else {
                continue;
            };
            match self.by_key.get(key.public_key.as_bytes()) {
                Some(p) => {
                    registry.prepared.insert(keyid.to_owned(), p.clone());
                }
                None if n >= PREPARE_AT => build.push((keyid.to_owned(), key.public_key)),
                None => {}
            }
        }
        let built: Vec<(String, Arc<PreparedKey>)> = build
            .into_par_iter()
            .map(|(keyid, key)| (keyid, Arc::new(PreparedKey::new(&key))))
            .collect();
        if self.by_key.len() + built.len() > PREPARED_MAX {
            self.by_key.clear();
        }
        for (keyid, p) in built {
            self.by_key.insert(p.key().to_bytes(), p.clone());
            registry.prepared.insert(keyid, p);
        }
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Everything but the rate limits: a rejection, or an envelope whose signatures verify
/// with the policy's stateless rules evaluated.
pub fn decide(
    parsed: Parsed,
    registry: &Registry,
    policy: &Policy,
    now_ms: i64,
) -> (Verdict, Option<Evaluation>) {
    let (producer, envelope, pae, digest, statement, size) = match parsed {
        Parsed::Rejected {
            producer,
            digest,
            rejection,
        } => {
            return (
                Verdict::Reject {
                    producer,
                    digest,
                    rejection,
                },
                None,
            )
        }
        Parsed::Ok {
            producer,
            envelope,
            pae,
            digest,
            statement,
            size,
        } => (producer, envelope, pae, digest, statement, size),
    };
    let reject = |digest: EnvelopeDigest, rejection: Rejection| {
        (
            Verdict::Reject {
                producer: producer.as_str().to_string(),
                digest: Some(digest),
                rejection,
            },
            None,
        )
    };
    let Some(status) = registry.producers.get(producer.as_str()).copied() else {
        return reject(
            digest,
            Rejection::new(
                RejectionCode::UnknownProducer,
                format!("producer {producer} is not registered (acectl producer add {producer})"),
            )
            .with_field("subject"),
        );
    };
    let signers = match verify_signers(&envelope, &pae, producer.as_str(), registry, now_ms) {
        Ok(s) => s,
        Err(r) => return reject(digest, r),
    };
    if let Err(r) = check_producer_active(producer.as_str(), status) {
        return reject(digest, r);
    }
    let evaluation = policy.evaluate(&Candidate {
        producer: producer.as_str(),
        payload_type: &envelope.payload_type,
        envelope_bytes: size,
        statement: statement.as_ref(),
        valid_signatures: signers.valid_keys,
    });
    (
        Verdict::Admit(Admitted {
            producer: producer.as_str().to_string(),
            digest,
            payload_type: envelope.payload_type,
            predicate_type: statement.as_ref().map(|s| s.predicate_type.clone()),
            subjects: statement.as_ref().map(|s| s.subjects()).unwrap_or_default(),
            keyid: signers.keyid,
            warnings: Vec::new(),
        }),
        Some(evaluation),
    )
}

/// Decide a whole batch; signature verification is spread over the CPU cores.
pub fn decide_all(
    parsed: Vec<Parsed>,
    registry: &Registry,
    policy: &Policy,
    now_ms: i64,
) -> Vec<(Verdict, Option<Evaluation>)> {
    parsed
        .into_par_iter()
        .map(|p| decide(p, registry, policy, now_ms))
        .collect()
}

/// Settle the rate limits in message order and turn each evaluation into the policy's
/// decision: a deny becomes a `policy_denied` rejection, warnings go with the entry.
pub fn settle(
    decided: Vec<(Verdict, Option<Evaluation>)>,
    policy: &Policy,
    limiter: &mut RateLimiter,
    now_ms: i64,
) -> (Vec<Verdict>, Tally) {
    let mut tally = Tally::default();
    let verdicts = decided
        .into_iter()
        .map(|(verdict, evaluation)| match (verdict, evaluation) {
            (Verdict::Admit(mut a), Some(mut e)) => {
                limiter.settle(policy, &a.producer, &mut e, now_ms);
                let decision = policy.decide(&e);
                tally.add(policy, &e, &decision);
                match decision {
                    Decision::Allow => Verdict::Admit(a),
                    Decision::Warn(w) => {
                        a.warnings = w;
                        Verdict::Admit(a)
                    }
                    Decision::Deny(rejection) => Verdict::Reject {
                        producer: a.producer,
                        digest: Some(a.digest),
                        rejection,
                    },
                }
            }
            (v, _) => v,
        })
        .collect();
    (verdicts, tally)
}

pub fn parse_all(
    names: &Names,
    allowed_types: &[String],
    max_bytes: usize,
    msgs: &[Incoming],
) -> Vec<Parsed> {
    msgs.par_iter()
        .map(|m| parse(names, allowed_types, max_bytes, m))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn msg(subject: &str, payload: Vec<u8>) -> Incoming {
        Incoming {
            subject: subject.into(),
            payload: Bytes::from(payload),
            stream_seq: 1,
            stored_at: chrono::DateTime::UNIX_EPOCH,
            delivered: 1,
            published_at_ms: None,
            headers: serde_json::json!({}),
        }
    }

    fn statement() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "a", "digest": {"sha256": "ab".repeat(32)}}],
            "predicateType": "https://slsa.dev/provenance/v1",
        }))
        .unwrap()
    }

    fn code(p: &Parsed) -> Option<RejectionCode> {
        match p {
            Parsed::Rejected { rejection, .. } => Some(rejection.code),
            Parsed::Ok { .. } => None,
        }
    }

    #[test]
    fn cheap_checks_come_first() {
        let names = Names::new("ace").unwrap();
        let policy = vec![IN_TOTO_PAYLOAD_TYPE.to_string()];
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let good = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &statement(), &key).to_json();
        // A bad subject wins over everything else, even a huge non-JSON payload.
        let p = parse(
            &names,
            &policy,
            10,
            &msg("ace.intake.Bad_Id", vec![b'x'; 100]),
        );
        assert_eq!(code(&p), Some(RejectionCode::UnknownProducer));
        // Size before parsing.
        let p = parse(
            &names,
            &policy,
            10,
            &msg("ace.intake.acme", vec![b'x'; 100]),
        );
        assert_eq!(code(&p), Some(RejectionCode::TooLarge));
        let p = parse(
            &names,
            &policy,
            1 << 20,
            &msg("ace.intake.acme", b"[]".to_vec()),
        );
        assert_eq!(code(&p), Some(RejectionCode::MalformedEnvelope));
        let other = Envelope::sign("text/plain", b"hi", &key).to_json();
        let p = parse(&names, &policy, 1 << 20, &msg("ace.intake.acme", other));
        assert_eq!(code(&p), Some(RejectionCode::UnsupportedPayloadType));
        let bad_statement = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, b"{}", &key).to_json();
        let p = parse(
            &names,
            &policy,
            1 << 20,
            &msg("ace.intake.acme", bad_statement),
        );
        assert_eq!(code(&p), Some(RejectionCode::MalformedStatement));
        let p = parse(&names, &policy, 1 << 20, &msg("ace.intake.acme", good));
        assert_eq!(code(&p), None);
        let (producers, keyids) = registry_needs(&[p]);
        assert_eq!(producers, vec!["acme".to_string()]);
        assert_eq!(
            keyids,
            vec![KeyId::from_public_key(&key.verifying_key())
                .as_str()
                .to_string()]
        );
    }

    #[test]
    fn registry_then_signatures_then_policy() {
        let names = Names::new("ace").unwrap();
        let key = SigningKey::from_bytes(&[4u8; 32]);
        let raw = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &statement(), &key).to_json();
        let parsed = || {
            parse(
                &names,
                &[IN_TOTO_PAYLOAD_TYPE.to_string()],
                1 << 20,
                &msg("ace.intake.acme", raw.clone()),
            )
        };
        let mut reg = Registry::default();
        let builtin = Policy::builtin();
        let run = |reg: &Registry, policy: &Policy| {
            let decided = vec![decide(parsed(), reg, policy, 0)];
            settle(decided, policy, &mut RateLimiter::new(), 0)
                .0
                .remove(0)
        };
        let verdict_code = |v: Verdict| match v {
            Verdict::Reject { rejection, .. } => Some(rejection.code),
            Verdict::Admit(_) => None,
        };
        assert_eq!(
            verdict_code(run(&reg, &builtin)),
            Some(RejectionCode::UnknownProducer)
        );
        reg.producers.insert("acme".into(), ProducerStatus::Active);
        assert_eq!(
            verdict_code(run(&reg, &builtin)),
            Some(RejectionCode::UnknownKey)
        );
        let vk = key.verifying_key();
        let id = KeyId::from_public_key(&vk);
        reg.keys.insert(
            id.as_str().to_string(),
            RegisteredKey {
                keyid: id.clone(),
                producer: "acme".into(),
                public_key: vk,
                valid_from_ms: 0,
                valid_until_ms: None,
                revoked_at_ms: None,
            },
        );
        match run(&reg, &builtin) {
            Verdict::Admit(a) => {
                assert_eq!(a.keyid, id);
                assert_eq!(a.subjects.len(), 1);
                assert_eq!(
                    a.predicate_type.as_deref(),
                    Some("https://slsa.dev/provenance/v1")
                );
            }
            Verdict::Reject { rejection, .. } => panic!("{rejection}"),
        }
        let strict = Policy::parse(
            "[[rule]]\nid = \"ours\"\nkind = \"predicate_types\"\nmode = \"deny\"\nallow = [\"https://example.com/*\"]\n",
        )
        .unwrap();
        match run(&reg, &strict) {
            Verdict::Reject { rejection, .. } => {
                assert_eq!(rejection.code, RejectionCode::PolicyDenied);
                assert!(rejection.detail.starts_with("rule ours (predicate_types)"));
            }
            Verdict::Admit(_) => panic!("admitted against the policy"),
        }
        reg.producers
            .insert("acme".into(), ProducerStatus::Suspended);
        assert_eq!(
            verdict_code(run(&reg, &builtin)),
            Some(RejectionCode::PolicyDenied)
        );
    }

    /// A batch of one busy key (prepared) and one quiet key (not), good signatures and
    /// corrupted ones: the verdicts are those of the registry without prepared keys.
    #[test]
    fn prepared_keys_change_no_verdict_and_stay_bounded() {
        let names = Names::new("ace").unwrap();
        let allowed = vec![IN_TOTO_PAYLOAD_TYPE.to_string()];
        let busy = SigningKey::from_bytes(&[21u8; 32]);
        let quiet = SigningKey::from_bytes(&[22u8; 32]);
        let mut msgs = Vec::new();
        for i in 0..(PREPARE_AT + 8) {
            let key = if i % 9 == 8 { &quiet } else { &busy };
            let env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &statement(), key);
            let mut raw = env.to_json();
            if i % 5 == 0 {
                // Corrupt the signature: one bit of its base64 text.
                let text = String::from_utf8(raw.clone()).unwrap();
                let at = text.find("\"sig\":\"").unwrap() + 7 + (i % 40);
                raw[at] = if raw[at] == b'A' { b'B' } else { b'A' };
            }
            msgs.push(msg("ace.intake.acme", raw));
        }
        let mut plain = Registry::default();
        plain
            .producers
            .insert("acme".into(), ProducerStatus::Active);
        for k in [&busy, &quiet] {
            let rk = RegisteredKey::new("acme", k.verifying_key(), 0);
            plain.keys.insert(rk.keyid.as_str().to_string(), rk);
        }
        let verdicts = |reg: &Registry| -> Vec<Option<RejectionCode>> {
            let parsed = parse_all(&names, &allowed, 1 << 20, &msgs);
            decide_all(parsed, reg, &Policy::builtin(), 1)
                .into_iter()
                .map(|(v, _)| match v {
                    Verdict::Admit(_) => None,
                    Verdict::Reject { rejection, .. } => Some(rejection.code),
                })
                .collect()
        };
        let expected = verdicts(&plain);
        assert!(expected.contains(&Some(RejectionCode::BadSignature)));
        assert!(expected.contains(&None));

        let mut cache = PreparedKeys::default();
        let mut reg = Registry {
            producers: plain.producers.clone(),
            keys: plain.keys.clone(),
            prepared: HashMap::new(),
        };
        let parsed = parse_all(&names, &allowed, 1 << 20, &msgs);
        cache.attach(&mut reg, &parsed);
        // Only the busy key signs PREPARE_AT envelopes or more.
        assert_eq!(reg.prepared.len(), 1);
        assert_eq!(cache.len(), 1);
        let busy_id = KeyId::from_public_key(&busy.verifying_key());
        assert!(reg.prepared.contains_key(busy_id.as_str()));
        assert_eq!(verdicts(&reg), expected);

        // The next batch reuses the cached table even when the key is quiet in it.
        let mut next = Registry {
            producers: plain.producers.clone(),
            keys: plain.keys.clone(),
            prepared: HashMap::new(),
        };
        cache.attach(&mut next, &parsed[..3]);
        assert!(next.prepared.contains_key(busy_id.as_str()));
        assert_eq!(cache.len(), 1);

        // Past PREPARED_MAX keys the cache starts over instead of growing.
        for k in 0..PREPARED_MAX {
            let mut seed = [7u8; 32];
            seed[0] = (k % 250) as u8;
            seed[1] = (k / 250) as u8;
            let vk = SigningKey::from_bytes(&seed).verifying_key();
            cache
                .by_key
                .insert(vk.to_bytes(), Arc::new(PreparedKey::new(&vk)));
        }
        assert!(cache.len() > PREPARED_MAX);
        let mut again = Registry {
            producers: plain.producers.clone(),
            keys: plain.keys.clone(),
            prepared: HashMap::new(),
        };
        let quiet_only: Vec<Incoming> = msgs.iter().skip(8).step_by(9).cloned().collect();
        let mut many = Vec::new();
        for _ in 0..PREPARE_AT {
            many.extend(quiet_only.iter().cloned());
        }
        cache.attach(&mut again, &parse_all(&names, &allowed, 1 << 20, &many));
        assert!(cache.len() <= PREPARED_MAX);
        assert_eq!(verdicts(&again), expected);
    }
}
