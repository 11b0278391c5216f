//! The leaf record: what the Merkle tree commits to for each entry.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::{parse_json_strict, push_json_integer, push_json_string, MAX_EXACT_INTEGER};
use crate::ids::{excerpt, is_lower_hex, EnvelopeDigest, ProducerId};
use crate::merkle::{leaf_hash, Hash};

/// Why bytes are not a leaf record.
#[derive(Debug, thiserror::Error)]
pub enum LeafError {
    #[error("leaf record is not valid JSON: {0}")]
    Json(#[from] crate::canonical::StrictJsonError),
    #[error("leaf record must be a JSON object with exactly digest, envelope_sha256, index, integrated_time and producer: {0}")]
    Shape(String),
    #[error("leaf record field {field}: {reason}")]
    Field { field: &'static str, reason: String },
    /// The fields are fine but the bytes are not their RFC 8785 form, so the leaf hash would
    /// not be reproducible from the fields.
    #[error("leaf record is not in RFC 8785 canonical form (expected {expected})")]
    NotCanonical { expected: String },
}

/// One entry's leaf: the RFC 8785 JSON of these five fields (DESIGN.md "The log").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafRecord {
    /// Envelope digest, `sha256:<hex>` of the PAE.
    pub digest: String,
    /// Lowercase hex SHA-256 of the raw envelope bytes as received.
    pub envelope_sha256: String,
    pub index: u64,
    /// Unix milliseconds.
    pub integrated_time: i64,
    pub producer: String,
}

impl LeafRecord {
    /// The RFC 8785 bytes. Written by hand (keys in sorted order) so that it cannot fail;
    /// `index` and `integrated_time` are far below 2^53, where RFC 8785 turns integers into
    /// doubles (such records would not parse back).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(192);
        out.push_str("{\"digest\":");
        push_json_string(&mut out, &self.digest);
        out.push_str(",\"envelope_sha256\":");
        push_json_string(&mut out, &self.envelope_sha256);
        out.push_str(",\"index\":");
        push_json_integer(&mut out, i128::from(self.index));
        out.push_str(",\"integrated_time\":");
        push_json_integer(&mut out, i128::from(self.integrated_time));
        out.push_str(",\"producer\":");
        push_json_string(&mut out, &self.producer);
        out.push('}');
        out.into_bytes()
    }

    /// Parses leaf bytes, checking every field and that the bytes are exactly
    /// [`LeafRecord::to_bytes`] of the result (so the stored leaf hashes reproducibly).
    ///
    /// # Errors
    /// [`LeafError`] naming the field, or `NotCanonical` with the expected bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, LeafError> {
        let Value::Object(obj) = parse_json_strict(bytes)? else {
            return Err(LeafError::Shape("not an object".to_owned()));
        };
        const FIELDS: [&str; 5] = [
            "digest",
            "envelope_sha256",
            "index",
            "integrated_time",
            "producer",
        ];
        if let Some(extra) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(LeafError::Shape(format!(
                "unexpected field {:?}",
                excerpt(extra)
            )));
        }
        let string = |field: &'static str| match obj.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(field_error(field, "must be a string")),
            None => Err(field_error(field, "is missing")),
        };
        let integer = |field: &'static str| match obj.get(field) {
            Some(Value::Number(n)) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .filter(|v| v.unsigned_abs() <= MAX_EXACT_INTEGER.unsigned_abs())
                .ok_or_else(|| field_error(field, "must be an integer of magnitude at most 2^53")),
            Some(_) => Err(field_error(field, "must be a number")),
            None => Err(field_error(field, "is missing")),
        };

        let digest = string("digest")?;
        EnvelopeDigest::parse(&digest).map_err(|e| field_error("digest", e.to_string()))?;
        let envelope_sha256 = string("envelope_sha256")?;
        if envelope_sha256.len() != 64 || !is_lower_hex(&envelope_sha256) {
            return Err(field_error(
                "envelope_sha256",
                "must be 64 lowercase hex characters",
            ));
        }
        let index = u64::try_from(integer("index")?)
            .map_err(|_| field_error("index", "must not be negative"))?;
        let integrated_time = i64::try_from(integer("integrated_time")?)
            .map_err(|_| field_error("integrated_time", "is out of range"))?;
        let producer = string("producer")?;
        ProducerId::parse_stored(&producer).map_err(|e| field_error("producer", e.to_string()))?;

        let record = LeafRecord {
            digest,
            envelope_sha256,
            index,
            integrated_time,
            producer,
        };
        let canonical = record.to_bytes();
        if canonical != bytes {
            return Err(LeafError::NotCanonical {
                expected: String::from_utf8_lossy(&canonical).into_owned(),
            });
        }
        Ok(record)
    }

    /// The RFC 6962 leaf hash of [`LeafRecord::to_bytes`].
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.to_bytes())
    }

    /// The fields in which `self` and `other` differ, in the record's order, each as
    /// (name, `self`'s value, `other`'s value): what a verifier names when a rebuilt leaf
    /// is not the stored one.
    pub fn differences(&self, other: &LeafRecord) -> Vec<(&'static str, String, String)> {
        let pairs = [
            ("digest", self.digest.clone(), other.digest.clone()),
            (
                "envelope_sha256",
                self.envelope_sha256.clone(),
                other.envelope_sha256.clone(),
            ),
            ("index", self.index.to_string(), other.index.to_string()),
            (
                "integrated_time",
                self.integrated_time.to_string(),
                other.integrated_time.to_string(),
            ),
            ("producer", self.producer.clone(), other.producer.clone()),
        ];
        pairs.into_iter().filter(|(_, a, b)| a != b).collect()
    }
}

fn field_error(field: &'static str, reason: impl Into<String>) -> LeafError {
    LeafError::Field {
        field,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn differences_name_each_differing_field_in_order() {
        let a = super::LeafRecord {
            digest: "sha256:aa".into(),
            envelope_sha256: "bb".into(),
            index: 1,
            integrated_time: 2,
            producer: "p".into(),
        };
        assert!(a.differences(&a).is_empty());
        let mut b = a.clone();
        b.integrated_time = 3;
        b.envelope_sha256 = "cc".into();
        assert_eq!(
            a.differences(&b),
            vec![
                ("envelope_sha256", "bb".to_string(), "cc".to_string()),
                ("integrated_time", "2".to_string(), "3".to_string()),
            ]
        );
    }

    use super::*;
    use crate::canonical::to_canonical_json;
    use proptest::prelude::*;

    fn sample() -> LeafRecord {
        LeafRecord {
            digest: "sha256:646f0487b6bb35f69b2cb792bccfd8ec6299b187cee5f5048d001e2456063fba"
                .into(),
            envelope_sha256: "29e72dd736ff1fb6a9ee8938b4604a4f31406bde043e4fe857c39cfeb5eab2d2"
                .into(),
            index: 0,
            integrated_time: 1_767_225_600_123,
            producer: "acme-build".into(),
        }
    }

    #[test]
    fn to_bytes_is_rfc8785() {
        let r = sample();
        assert_eq!(r.to_bytes(), to_canonical_json(&r).unwrap());
        assert_eq!(LeafRecord::parse(&r.to_bytes()).unwrap(), r);
    }

    #[test]
    fn ledger_entries_parse() {
        let mut r = sample();
        r.producer = "_ledger".into();
        assert_eq!(LeafRecord::parse(&r.to_bytes()).unwrap(), r);
    }

    #[test]
    fn rejects_non_canonical_bytes() {
        let canonical = String::from_utf8(sample().to_bytes()).unwrap();
        let spaced = canonical.replace(",\"index\"", ", \"index\"");
        let reordered = format!(
            "{{\"producer\":\"acme-build\",{}",
            canonical
                .trim_start_matches('{')
                .replace(",\"producer\":\"acme-build\"", "")
        );
        let exponent = canonical.replace("1767225600123", "1.767225600123e12");
        let trailing = format!("{canonical}\n");
        let escaped = canonical.replace("acme-build", "acme\\u002dbuild");
        assert!(LeafRecord::parse(exponent.as_bytes()).is_err());
        for bad in [spaced, reordered, trailing, escaped] {
            let err = LeafRecord::parse(bad.as_bytes()).unwrap_err();
            assert!(
                matches!(err, LeafError::NotCanonical { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn rejects_bad_fields() {
        let base: Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
        let cases: [(&str, Value, &str); 9] = [
            ("digest", "sha256:abc".into(), "digest"),
            ("digest", 1.into(), "digest"),
            ("envelope_sha256", "ABC".into(), "envelope_sha256"),
            ("index", (-1).into(), "index"),
            ("index", 1.5.into(), "index"),
            ("index", "0".into(), "index"),
            ("integrated_time", (1u64 << 60).into(), "integrated_time"),
            ("producer", "Bad Producer".into(), "producer"),
            ("producer", Value::Null, "producer"),
        ];
        for (key, val, want) in cases {
            let mut v = base.clone();
            v[key] = val;
            let bytes = to_canonical_json(&v).unwrap();
            match LeafRecord::parse(&bytes) {
                Err(LeafError::Field { field, .. }) => assert_eq!(field, want),
                other => panic!("{key}: {other:?}"),
            }
        }
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove("producer");
        assert!(matches!(
            LeafRecord::parse(&to_canonical_json(&v).unwrap()),
            Err(LeafError::Field {
                field: "producer",
                ..
            })
        ));
        let mut v = base;
        v["extra"] = 1.into();
        assert!(matches!(
            LeafRecord::parse(&to_canonical_json(&v).unwrap()),
            Err(LeafError::Shape(_))
        ));
        assert!(matches!(LeafRecord::parse(b"[]"), Err(LeafError::Shape(_))));
        assert!(matches!(LeafRecord::parse(b"{"), Err(LeafError::Json(_))));
    }

    proptest! {
        #[test]
        fn to_bytes_matches_canonicaliser(
            index in 0u64..(1 << 53),
            t in -(1i64 << 53)..(1i64 << 53),
            producer in "[a-z0-9][a-z0-9-]{0,62}",
            sha in "[0-9a-f]{64}",
        ) {
            let r = LeafRecord {
                digest: format!("sha256:{sha}"),
                envelope_sha256: sha,
                index,
                integrated_time: t,
                producer,
            };
            prop_assert_eq!(r.to_bytes(), to_canonical_json(&r).unwrap());
            prop_assert_eq!(LeafRecord::parse(&r.to_bytes()).unwrap(), r);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = LeafRecord::parse(&bytes);
        }
    }
}
