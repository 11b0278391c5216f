//! The operators' audit trail: one row per operator action (dashboard logins, DLQ retries
//! and discards), each carrying the hash of the row before it, so that rewriting, removing
//! or reordering any row breaks every hash after it.
//!
//! hash(row) = SHA-256 of the RFC 8785 JSON of
//! `{"action","actor","at","detail","prev_hash","role","seq","target"}` with `at` in unix
//! ms, `detail` the JSON value of the stored detail text and `prev_hash` lowercase hex.
//! Row 1's `prev_hash` is [`GENESIS`]. The dashboard writes rows, `acectl audit` verifies
//! the chain (table `operator_audit`, migration V7).

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::canonical::to_canonical_json;
use crate::merkle::Hash;

/// `prev_hash` of the first row.
pub const GENESIS: Hash = [0u8; 32];

/// One row, as stored (without its hashes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    /// Unix ms.
    pub at: i64,
    pub actor: String,
    /// `viewer` or `operator`.
    pub role: String,
    /// What was done, e.g. `dlq.retry`, `dlq.discard`, `dlq.bulk_retry`, `login`.
    pub action: String,
    /// What it was done to, e.g. `dlq:42`, or a filter for a bulk action.
    pub target: String,
    /// JSON text with the action's particulars (note, filter, outcome).
    pub detail: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("operator_audit row {seq}: detail is not JSON ({why})")]
    Detail { seq: i64, why: String },
    #[error("operator_audit row {seq}: cannot be hashed: {why}")]
    Canonical { seq: i64, why: String },
    #[error("operator_audit row {seq}: expected seq {expected} (rows missing or out of order)")]
    Sequence { seq: i64, expected: i64 },
    #[error(
        "operator_audit row {seq}: prev_hash is {found} but the row before hashes to {expected}"
    )]
    PrevHash {
        seq: i64,
        expected: String,
        found: String,
    },
    #[error("operator_audit row {seq}: stored hash {found} but its content hashes to {expected} (the row was altered)")]
    Hash {
        seq: i64,
        expected: String,
        found: String,
    },
}

#[derive(Serialize)]
struct Hashed<'a> {
    action: &'a str,
    actor: &'a str,
    at: i64,
    detail: serde_json::Value,
    prev_hash: String,
    role: &'a str,
    seq: i64,
    target: &'a str,
}

/// The hash of `rec` chained to `prev`.
pub fn row_hash(prev: &Hash, rec: &AuditRecord) -> Result<Hash, ChainError> {
    let detail: serde_json::Value =
        serde_json::from_str(&rec.detail).map_err(|e| ChainError::Detail {
            seq: rec.seq,
            why: e.to_string(),
        })?;
    let body = to_canonical_json(&Hashed {
        action: &rec.action,
        actor: &rec.actor,
        at: rec.at,
        detail,
        prev_hash: hex::encode(prev),
        role: &rec.role,
        seq: rec.seq,
        target: &rec.target,
    })
    .map_err(|e| ChainError::Canonical {
        seq: rec.seq,
        why: e.to_string(),
    })?;
    Ok(Sha256::digest(&body).into())
}

/// Checks rows in seq order, fed one at a time so a long trail needs no memory; `finish`
/// gives the number of rows and the head hash.
#[derive(Debug)]
pub struct ChainVerifier {
    prev: Hash,
    next_seq: i64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            prev: GENESIS,
            next_seq: 1,
        }
    }
}

impl ChainVerifier {
    /// Checks the next row: its seq, its link to the row before, and its own hash.
    pub fn push(
        &mut self,
        rec: &AuditRecord,
        prev_hash: &[u8],
        hash: &[u8],
    ) -> Result<(), ChainError> {
        if rec.seq != self.next_seq {
            return Err(ChainError::Sequence {
                seq: rec.seq,
                expected: self.next_seq,
            });
        }
        if prev_hash != self.prev {
            return Err(ChainError::PrevHash {
                seq: rec.seq,
                expected: hex::encode(self.prev),
                found: hex::encode(prev_hash),
            });
        }
        let expected = row_hash(&self.prev, rec)?;
        if hash != expected {
            return Err(ChainError::Hash {
                seq: rec.seq,
                expected: hex::encode(expected),
                found: hex::encode(hash),
            });
        }
        self.prev = expected;
        self.next_seq += 1;
        Ok(())
    }

    /// Rows checked so far and the hash of the last one ([`GENESIS`] for none).
    pub fn finish(&self) -> (i64, Hash) {
        (self.next_seq - 1, self.prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: i64, detail: &str) -> AuditRecord {
        AuditRecord {
            seq,
            at: 1_764_600_000_000 + seq,
            actor: "alice".into(),
            role: "operator".into(),
            action: "dlq.discard".into(),
            target: format!("dlq:{seq}"),
            detail: detail.into(),
        }
    }

    fn chain(n: i64) -> Vec<(AuditRecord, Hash, Hash)> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|s| {
                let r = rec(s, r#"{"note":"spam from a test producer"}"#);
                let h = row_hash(&prev, &r).expect("hash");
                let out = (r, prev, h);
                prev = h;
                out
            })
            .collect()
    }

    #[test]
    fn hash_is_sha256_of_the_canonical_record() {
        let r = rec(1, r#"{ "b": 1, "a": "x" }"#);
        let expected = Sha256::digest(
            format!(
                r#"{{"action":"dlq.discard","actor":"alice","at":1764600000001,"detail":{{"a":"x","b":1}},"prev_hash":"{}","role":"operator","seq":1,"target":"dlq:1"}}"#,
                "0".repeat(64)
            )
            .as_bytes(),
        );
        assert_eq!(
            row_hash(&GENESIS, &r).expect("hash"),
            <Hash>::from(expected)
        );
    }

    #[test]
    fn an_intact_chain_verifies() {
        let mut v = ChainVerifier::default();
        for (r, p, h) in chain(5) {
            v.push(&r, &p, &h).expect("intact");
        }
        assert_eq!(v.finish().0, 5);
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        let rows = chain(4);
        let run = |rows: &[(AuditRecord, Hash, Hash)]| {
            let mut v = ChainVerifier::default();
            rows.iter().try_for_each(|(r, p, h)| v.push(r, p, h))
        };
        let mut altered = rows.clone();
        altered[2].0.detail = r#"{"note":"nothing to see"}"#.into();
        assert!(matches!(
            run(&altered),
            Err(ChainError::Hash { seq: 3, .. })
        ));

        let mut relinked = rows.clone();
        relinked[2].0.actor = "mallory".into();
        relinked[2].2 = row_hash(&relinked[2].1, &relinked[2].0).expect("hash");
        assert!(matches!(
            run(&relinked),
            Err(ChainError::PrevHash { seq: 4, .. })
        ));

        let mut gap = rows.clone();
        gap.remove(1);
        assert!(matches!(
            run(&gap),
            Err(ChainError::Sequence {
                seq: 3,
                expected: 2
            })
        ));

        let mut bad = rows;
        bad[0].0.detail = "not json".into();
        assert!(matches!(run(&bad), Err(ChainError::Detail { seq: 1, .. })));
    }
}
