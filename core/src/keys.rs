//! Signature verification of envelopes against the producer key registry. Pure: the
//! registry is whatever implements [`KeyLookup`].

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat};
use ed25519_dalek::{Signature, VerifyingKey};

use crate::envelope::Envelope;
use crate::ids::KeyId;
use crate::prepared_key::PreparedKey;
use crate::rejection::{Rejection, RejectionCode};

/// A producer signing key as registered in the ledger. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredKey {
    pub keyid: KeyId,
    pub producer: String,
    pub public_key: VerifyingKey,
    /// First instant the key may sign (inclusive).
    pub valid_from_ms: i64,
    /// First instant the key may no longer sign (exclusive); `None` = open-ended.
    pub valid_until_ms: Option<i64>,
    /// Instant of revocation; the key is unusable from then on.
    pub revoked_at_ms: Option<i64>,
}

impl RegisteredKey {
    /// A key valid from `valid_from_ms` with no end and no revocation; its keyid is derived
    /// from the public key.
    pub fn new(producer: impl Into<String>, public_key: VerifyingKey, valid_from_ms: i64) -> Self {
        RegisteredKey {
            keyid: KeyId::from_public_key(&public_key),
            producer: producer.into(),
            public_key,
            valid_from_ms,
            valid_until_ms: None,
            revoked_at_ms: None,
        }
    }

    pub fn is_revoked_at(&self, now_ms: i64) -> bool {
        self.revoked_at_ms.is_some_and(|r| r <= now_ms)
    }

    /// Whether `now_ms` lies in `[valid_from, valid_until)`.
    pub fn is_in_validity_at(&self, now_ms: i64) -> bool {
        now_ms >= self.valid_from_ms && self.valid_until_ms.is_none_or(|u| now_ms < u)
    }
}

/// Finds a registered key by its DSSE keyid (any producer).
pub trait KeyLookup {
    fn lookup(&self, keyid: &str) -> Option<&RegisteredKey>;

    /// The key prepared for many verifications, where the lookup keeps one (the writer
    /// does for its busiest keys); same verdicts, less time.
    fn prepared(&self, _keyid: &str) -> Option<&PreparedKey> {
        None
    }
}

impl KeyLookup for HashMap<String, RegisteredKey> {
    fn lookup(&self, keyid: &str) -> Option<&RegisteredKey> {
        self.get(keyid)
    }
}

impl KeyLookup for BTreeMap<String, RegisteredKey> {
    fn lookup(&self, keyid: &str) -> Option<&RegisteredKey> {
        self.get(keyid)
    }
}

/// The verdict for one envelope from `producer` at `now_ms`: the KeyId of a valid signer.
///
/// Rules (DESIGN.md "Valid"):
/// 1. Every signature whose keyid the ledger knows, whoever's key it is, must verify with
///    `verify_strict` over `pae`; the first that does not gives `bad_signature` naming
///    `signatures[i]` and the keyid. A known key that signs garbage is an attack or a bug,
///    and either must be seen, even when another signature is good.
/// 2. At least one verified signature must be by a key of `producer` that is in its
///    validity window and not revoked at `now_ms`.
/// 3. Otherwise the most specific reason wins: `key_revoked` (a signature by the
///    producer's key revoked at or before `now_ms`) > `key_expired` (the producer's key
///    outside `[valid_from, valid_until)`, including not yet valid) > `wrong_producer_key`
///    (only keys of other producers) > `unknown_key`.
///
/// Unknown keyids are ignored when another signature carries the envelope, as in DSSE.
///
/// # Errors
/// A [`Rejection`] with one of the codes above, whose detail names the keyid(s) and, for
/// revocation and expiry, the times in RFC 3339.
pub fn verify_envelope(
    env: &Envelope,
    pae: &[u8],
    producer: &str,
    keys: &impl KeyLookup,
    now_ms: i64,
) -> Result<KeyId, Rejection> {
    verify_signers(env, pae, producer, keys, now_ms).map(|v| v.keyid)
}

/// A verified envelope's signers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signers {
    /// The first valid signer (recorded with the entry).
    pub keyid: KeyId,
    /// Distinct keys of the producer, in validity, whose signatures verify (what a
    /// policy's `min_signatures` rule counts).
    pub valid_keys: usize,
}

/// [`verify_envelope`], also counting the valid signers.
pub fn verify_signers(
    env: &Envelope,
    pae: &[u8],
    producer: &str,
    keys: &impl KeyLookup,
    now_ms: i64,
) -> Result<Signers, Rejection> {
    let mut valid: Option<KeyId> = None;
    let mut valid_keys: Vec<&str> = Vec::new();
    let mut revoked: Option<(usize, &RegisteredKey)> = None;
    let mut expired: Option<(usize, &RegisteredKey)> = None;
    let mut foreign: Option<(usize, &RegisteredKey)> = None;

    for (i, s) in env.signatures.iter().enumerate() {
        let Some(key) = keys.lookup(&s.keyid) else {
            continue;
        };
        let verified = Signature::from_slice(&s.sig).is_ok_and(|sig| {
            match keys
                .prepared(&s.keyid)
                .filter(|p| p.key() == &key.public_key)
            {
                Some(prepared) => prepared.verify_strict(pae, &sig),
                None => key.public_key.verify_strict(pae, &sig).is_ok(),
            }
        });
        if !verified {
            return Err(Rejection::new(
                RejectionCode::BadSignature,
                format!(
                    "signature {i} by key {} (producer {}) does not verify over the envelope's PAE",
                    key.keyid, key.producer
                ),
            )
            .with_field(format!("signatures[{i}]")));
        }
        if key.producer != producer {
            foreign.get_or_insert((i, key));
        } else if key.is_revoked_at(now_ms) {
            revoked.get_or_insert((i, key));
        } else if !key.is_in_validity_at(now_ms) {
            expired.get_or_insert((i, key));
        } else {
            if valid.is_none() {
                valid = Some(key.keyid.clone());
            }
            if !valid_keys.contains(&key.keyid.as_str()) {
                valid_keys.push(key.keyid.as_str());
            }
        }
    }

    if let Some(keyid) = valid {
        return Ok(Signers {
            keyid,
            valid_keys: valid_keys.len(),
        });
    }
    if let Some((i, key)) = revoked {
        return Err(Rejection::new(
            RejectionCode::KeyRevoked,
            format!(
                "key {} of producer {producer} was revoked at {}, at or before integration time {}",
                key.keyid,
                rfc3339_ms(key.revoked_at_ms.unwrap_or(now_ms)),
                rfc3339_ms(now_ms)
            ),
        )
        .with_field(format!("signatures[{i}]")));
    }
    if let Some((i, key)) = expired {
        let until = key
            .valid_until_ms
            .map_or_else(|| "no end".to_owned(), rfc3339_ms);
        let when = if now_ms < key.valid_from_ms {
            "is not yet valid"
        } else {
            "has expired"
        };
        return Err(Rejection::new(
            RejectionCode::KeyExpired,
            format!(
                "key {} of producer {producer} {when} at {}: valid from {} until {until}",
                key.keyid,
                rfc3339_ms(now_ms),
                rfc3339_ms(key.valid_from_ms)
            ),
        )
        .with_field(format!("signatures[{i}]")));
    }
    if let Some((i, key)) = foreign {
        return Err(Rejection::new(
            RejectionCode::WrongProducerKey,
            format!(
                "no signature by a key of producer {producer}; key {} belongs to producer {}",
                key.keyid, key.producer
            ),
        )
        .with_field(format!("signatures[{i}]")));
    }
    let keyids: Vec<String> = env
        .signatures
        .iter()
        .map(|s| format!("{:?}", crate::ids::excerpt(&s.keyid)))
        .collect();
    Err(Rejection::new(
        RejectionCode::UnknownKey,
        format!(
            "no signature names a key the ledger knows (keyids: {})",
            keyids.join(", ")
        ),
    )
    .with_field("signatures"))
}

/// RFC 3339 in UTC with milliseconds, or the raw number when out of chrono's range.
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms since the Unix epoch"),
        |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    const NOW: i64 = 1_767_225_600_123; // 2026-01-01T00:00:00.123Z

    fn sk(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn registry(keys: impl IntoIterator<Item = RegisteredKey>) -> HashMap<String, RegisteredKey> {
        keys.into_iter()
            .map(|k| (k.keyid.as_str().to_owned(), k))
            .collect()
    }

    fn reg(n: u8, producer: &str) -> RegisteredKey {
        RegisteredKey::new(producer, sk(n).verifying_key(), NOW - 1000)
    }

    fn env_signed_by(keys: &[u8]) -> Envelope {
        let mut env = Envelope {
            payload_type: "application/vnd.in-toto+json".into(),
            payload: b"{}".to_vec(),
            signatures: vec![],
        };
        for &n in keys {
            env.add_signature(&sk(n));
        }
        env
    }

    fn verdict(env: &Envelope, keys: &HashMap<String, RegisteredKey>) -> Result<KeyId, Rejection> {
        verify_envelope(env, &env.pae(), "acme", keys, NOW)
    }

    #[test]
    fn valid_signature() {
        let keys = registry([reg(1, "acme")]);
        let env = env_signed_by(&[1]);
        assert_eq!(verdict(&env, &keys).unwrap(), reg(1, "acme").keyid);
    }

    #[test]
    fn bad_signature() {
        let keys = registry([reg(1, "acme")]);
        let mut env = env_signed_by(&[1]);
        env.payload = b"{\"tampered\":1}".to_vec();
        let r = verdict(&env, &keys).unwrap_err();
        assert_eq!(r.code, RejectionCode::BadSignature);
        assert_eq!(r.field.as_deref(), Some("signatures[0]"));
        assert!(
            r.detail.contains(reg(1, "acme").keyid.as_str()),
            "{}",
            r.detail
        );
    }

    #[test]
    fn key_revoked() {
        let mut k = reg(1, "acme");
        k.revoked_at_ms = Some(NOW);
        let r = verdict(&env_signed_by(&[1]), &registry([k.clone()])).unwrap_err();
        assert_eq!(r.code, RejectionCode::KeyRevoked);
        assert!(r.detail.contains(k.keyid.as_str()), "{}", r.detail);
        assert!(
            r.detail.contains("2026-01-01T00:00:00.123Z"),
            "{}",
            r.detail
        );
        // Revocation in the future does not matter yet.
        k.revoked_at_ms = Some(NOW + 1);
        assert!(verdict(&env_signed_by(&[1]), &registry([k])).is_ok());
    }

    #[test]
    fn key_expired() {
        let mut k = reg(1, "acme");
        k.valid_until_ms = Some(NOW);
        let r = verdict(&env_signed_by(&[1]), &registry([k.clone()])).unwrap_err();
        assert_eq!(r.code, RejectionCode::KeyExpired);
        assert!(r.detail.contains(k.keyid.as_str()), "{}", r.detail);
        assert!(r.detail.contains("has expired"), "{}", r.detail);
        assert!(
            r.detail.contains("until 2026-01-01T00:00:00.123Z"),
            "{}",
            r.detail
        );
        k.valid_until_ms = Some(NOW + 1);
        assert!(verdict(&env_signed_by(&[1]), &registry([k])).is_ok());
    }

    #[test]
    fn not_yet_valid_is_key_expired() {
        let mut k = reg(1, "acme");
        k.valid_from_ms = NOW + 1;
        let r = verdict(&env_signed_by(&[1]), &registry([k])).unwrap_err();
        assert_eq!(r.code, RejectionCode::KeyExpired);
        assert!(r.detail.contains("not yet valid"), "{}", r.detail);
    }

    #[test]
    fn wrong_producer_key() {
        let k = reg(1, "other");
        let r = verdict(&env_signed_by(&[1]), &registry([k.clone()])).unwrap_err();
        assert_eq!(r.code, RejectionCode::WrongProducerKey);
        assert!(r.detail.contains(k.keyid.as_str()) && r.detail.contains("other"));
    }

    #[test]
    fn unknown_key() {
        let r = verdict(&env_signed_by(&[1]), &registry([reg(2, "acme")])).unwrap_err();
        assert_eq!(r.code, RejectionCode::UnknownKey);
        assert!(
            r.detail.contains(reg(1, "acme").keyid.as_str()),
            "{}",
            r.detail
        );
    }

    #[test]
    fn one_good_and_one_unknown_is_valid() {
        let keys = registry([reg(1, "acme")]);
        let env = env_signed_by(&[2, 1]);
        assert_eq!(verdict(&env, &keys).unwrap(), reg(1, "acme").keyid);
    }

    #[test]
    fn one_good_and_one_known_but_bad_is_bad_signature() {
        let keys = registry([reg(1, "acme"), reg(2, "other")]);
        let mut env = env_signed_by(&[1, 2]);
        env.signatures[1].sig[0] ^= 1;
        let r = verdict(&env, &keys).unwrap_err();
        assert_eq!(r.code, RejectionCode::BadSignature);
        assert_eq!(r.field.as_deref(), Some("signatures[1]"));
        assert!(r.detail.contains(reg(2, "other").keyid.as_str()));
    }

    #[test]
    fn signature_under_a_wrong_keyid_is_bad() {
        // The keyid hint points at key 1, but key 2 signed.
        let keys = registry([reg(1, "acme")]);
        let mut env = env_signed_by(&[2]);
        env.signatures[0].keyid = reg(1, "acme").keyid.as_str().to_owned();
        assert_eq!(
            verdict(&env, &keys).unwrap_err().code,
            RejectionCode::BadSignature
        );
    }

    #[test]
    fn most_specific_reason_wins() {
        let mut revoked = reg(1, "acme");
        revoked.revoked_at_ms = Some(NOW - 1);
        let mut expired = reg(2, "acme");
        expired.valid_until_ms = Some(NOW - 1);
        let foreign = reg(3, "other");
        let keys = registry([revoked, expired, foreign]);
        let code = |signers: &[u8]| verdict(&env_signed_by(signers), &keys).unwrap_err().code;
        assert_eq!(code(&[4, 3, 2, 1]), RejectionCode::KeyRevoked);
        assert_eq!(code(&[4, 3, 2]), RejectionCode::KeyExpired);
        assert_eq!(code(&[4, 3]), RejectionCode::WrongProducerKey);
        assert_eq!(code(&[4]), RejectionCode::UnknownKey);
    }

    #[test]
    fn a_valid_key_beats_a_revoked_one() {
        let mut revoked = reg(1, "acme");
        revoked.revoked_at_ms = Some(NOW - 1);
        let keys = registry([revoked, reg(2, "acme")]);
        assert_eq!(
            verdict(&env_signed_by(&[1, 2]), &keys).unwrap(),
            reg(2, "acme").keyid
        );
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let mut k = reg(1, "acme");
        k.valid_from_ms = i64::MAX;
        let r = verify_envelope(
            &env_signed_by(&[1]),
            &env_signed_by(&[1]).pae(),
            "acme",
            &registry([k]),
            i64::MIN,
        )
        .unwrap_err();
        assert_eq!(r.code, RejectionCode::KeyExpired);
        assert!(r.detail.contains("ms since the Unix epoch"), "{}", r.detail);
    }
}
