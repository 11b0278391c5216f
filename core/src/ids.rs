//! Identifier newtypes, validated once at construction so nothing downstream re-checks them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Longest excerpt of a bad identifier quoted back in an error: input may be megabytes.
const ERROR_EXCERPT_CHARS: usize = 80;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("producer id {id:?} is invalid: {reason} (expected [a-z0-9][a-z0-9-]{{0,62}})")]
    InvalidProducerId { id: String, reason: &'static str },
    #[error(
        "producer id \"_ledger\" is reserved for entries the ledger appends itself and cannot be registered"
    )]
    ReservedProducerId,
    #[error(
        "key id {id:?} is invalid: expected 64 lowercase hex characters (SHA-256 of the raw ed25519 public key)"
    )]
    InvalidKeyId { id: String },
    #[error(
        "envelope digest {digest:?} is invalid: expected \"sha256:\" followed by 64 lowercase hex characters"
    )]
    InvalidEnvelopeDigest { digest: String },
}

/// The first characters of `s`, for quoting untrusted input in an error.
pub(crate) fn excerpt(s: &str) -> String {
    if s.chars().count() <= ERROR_EXCERPT_CHARS {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(ERROR_EXCERPT_CHARS).collect();
        out.push('…');
        out
    }
}

pub(crate) fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A producer id: `[a-z0-9][a-z0-9-]{0,62}`, or the reserved `_ledger`.
///
/// [`ProducerId::parse`] (and `FromStr`) refuse `_ledger`, so no operator or producer can
/// claim it; the ledger names itself with [`ProducerId::ledger`]. Deserialisation accepts
/// `_ledger` too, because stored records and API answers legitimately carry it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProducerId(String);

impl ProducerId {
    /// The id of entries the ledger appends itself (key events), signed by the ledger key.
    pub const LEDGER: &'static str = "_ledger";
    const MAX_LEN: usize = 63;

    /// Parses a producer id a producer or operator may use; `_ledger` is refused.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s == Self::LEDGER {
            return Err(IdError::ReservedProducerId);
        }
        let invalid = |reason| IdError::InvalidProducerId {
            id: excerpt(s),
            reason,
        };
        let bytes = s.as_bytes();
        let Some(first) = bytes.first() else {
            return Err(invalid("it is empty"));
        };
        if bytes.len() > Self::MAX_LEN {
            return Err(invalid("it is longer than 63 characters"));
        }
        if !matches!(first, b'a'..=b'z' | b'0'..=b'9') {
            return Err(invalid("it must start with a lowercase letter or digit"));
        }
        if !bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        {
            return Err(invalid(
                "it may contain only lowercase letters, digits and '-'",
            ));
        }
        Ok(ProducerId(s.to_owned()))
    }

    /// The reserved id of the ledger itself.
    pub fn ledger() -> Self {
        ProducerId(Self::LEDGER.to_owned())
    }

    /// Parses an id read back from the ledger's own records, where `_ledger` is legitimate.
    pub fn parse_stored(s: &str) -> Result<Self, IdError> {
        if s == Self::LEDGER {
            Ok(Self::ledger())
        } else {
            Self::parse(s)
        }
    }

    pub fn is_ledger(&self) -> bool {
        self.0 == Self::LEDGER
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A DSSE key id: lowercase hex SHA-256 of the raw 32-byte ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    pub fn from_public_key(key: &ed25519_dalek::VerifyingKey) -> Self {
        KeyId(hex::encode(Sha256::digest(key.as_bytes())))
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() == 64 && is_lower_hex(s) {
            Ok(KeyId(s.to_owned()))
        } else {
            Err(IdError::InvalidKeyId { id: excerpt(s) })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The dedupe key of an envelope: `sha256:<hex>` of its PAE bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnvelopeDigest(String);

impl EnvelopeDigest {
    const PREFIX: &'static str = "sha256:";

    /// The digest of an envelope whose PAE (see [`crate::envelope::pae`]) is `pae`.
    pub fn from_pae(pae: &[u8]) -> Self {
        EnvelopeDigest(format!(
            "{}{}",
            Self::PREFIX,
            hex::encode(Sha256::digest(pae))
        ))
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        match s.strip_prefix(Self::PREFIX) {
            Some(h) if h.len() == 64 && is_lower_hex(h) => Ok(EnvelopeDigest(s.to_owned())),
            _ => Err(IdError::InvalidEnvelopeDigest { digest: excerpt(s) }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex characters after `sha256:`.
    pub fn hex(&self) -> &str {
        // Construction guarantees the prefix; the fallback only keeps this total.
        self.0.strip_prefix(Self::PREFIX).unwrap_or(&self.0)
    }
}

macro_rules! string_newtype_traits {
    ($ty:ident, $from_str:path, $de:path) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $ty {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $from_str(s)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                $de(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype_traits!(ProducerId, ProducerId::parse, ProducerId::parse_stored);
string_newtype_traits!(KeyId, KeyId::parse, KeyId::parse);
string_newtype_traits!(EnvelopeDigest, EnvelopeDigest::parse, EnvelopeDigest::parse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids() {
        for ok in ["a", "0", "acme-build", "a-", &"a".repeat(63)] {
            assert_eq!(ProducerId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "-a",
            "Acme",
            "acme_build",
            "acme.build",
            "é",
            &"a".repeat(64),
        ] {
            let err = ProducerId::parse(bad).unwrap_err();
            assert!(matches!(err, IdError::InvalidProducerId { .. }), "{bad:?}");
        }
        assert_eq!(
            ProducerId::parse("_ledger").unwrap_err(),
            IdError::ReservedProducerId
        );
        assert_eq!(
            "_ledger".parse::<ProducerId>().unwrap_err(),
            IdError::ReservedProducerId
        );
        assert!(ProducerId::ledger().is_ledger());
        assert_eq!(ProducerId::ledger().as_str(), "_ledger");
        assert_eq!(
            ProducerId::parse_stored("_ledger").unwrap(),
            ProducerId::ledger()
        );
    }

    #[test]
    fn producer_id_serde() {
        let id = ProducerId::parse("acme-build").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"acme-build\"");
        assert_eq!(
            serde_json::from_str::<ProducerId>("\"acme-build\"").unwrap(),
            id
        );
        assert_eq!(
            serde_json::from_str::<ProducerId>("\"_ledger\"").unwrap(),
            ProducerId::ledger()
        );
        assert!(serde_json::from_str::<ProducerId>("\"Bad\"").is_err());
    }

    #[test]
    fn key_ids() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key();
        let id = KeyId::from_public_key(&key);
        assert_eq!(id.as_str(), hex::encode(Sha256::digest(key.to_bytes())));
        assert_eq!(KeyId::parse(id.as_str()).unwrap(), id);
        assert!(KeyId::parse(&id.as_str().to_uppercase()).is_err());
        assert!(KeyId::parse(&id.as_str()[1..]).is_err());
        assert!(KeyId::parse("").is_err());
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
    }

    #[test]
    fn envelope_digests() {
        let d = EnvelopeDigest::from_pae(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            d.hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(EnvelopeDigest::parse(d.as_str()).unwrap(), d);
        for bad in [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0",
        ] {
            assert!(EnvelopeDigest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn long_input_is_quoted_briefly() {
        let long = "X".repeat(10_000);
        let msg = KeyId::parse(&long).unwrap_err().to_string();
        assert!(msg.len() < 300, "{msg}");
    }
}
