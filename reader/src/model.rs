//! The JSON shapes of Reader API v1 (DESIGN.md, "Reader API v1"). Hashes are lowercase hex,
//! times are as the log records them (unix ms) except the registry's, which are RFC 3339.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

/// One entry of the log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Entry {
    pub index: u64,
    /// `sha256:<hex>` of the envelope's PAE: the dedupe key.
    pub digest: String,
    pub producer: String,
    /// Unix milliseconds, as in the leaf.
    pub integrated_time: i64,
    /// Height of the block that sealed the entry.
    pub block: u64,
    /// The exact leaf record (RFC 8785 JSON) whose hash is in the tree.
    pub leaf: String,
    /// Standard base64 of the envelope bytes exactly as received. Absent from search
    /// results: fetch `/v1/entries/{index}` for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envelope: Option<String>,
    /// The in-toto subjects indexed for search (empty for other payload types).
    pub subjects: Vec<Subject>,
    /// Policy warnings recorded when the entry was admitted.
    #[schema(value_type = Vec<Object>)]
    pub warnings: serde_json::Value,
    /// `sha256:<hex>` of the policy file that admitted the entry (its text is at
    /// `/v1/policies/{version}`); null for entries written before policy versions were kept.
    pub policy_version: Option<String>,
}

/// An admission policy version that admitted entries, with its exact text.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyText {
    /// `sha256:<hex>` of `source`'s UTF-8 bytes.
    pub version: String,
    /// The policy file's text, byte for byte.
    pub source: String,
    /// When the writer first admitted an entry under it (RFC 3339).
    pub first_used_at: String,
}

/// An in-toto subject as indexed: its name and digests by algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InclusionProof {
    pub index: u64,
    pub tree_size: u64,
    pub leaf_hash: String,
    /// RFC 9162 inclusion path, leaf to root.
    pub hashes: Vec<String>,
    pub root_hash: String,
    /// The signed checkpoint note for `tree_size`.
    pub checkpoint: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    /// RFC 9162 consistency proof from the tree of `from` leaves to that of `to`.
    pub hashes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Reason {
    pub code: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// What the ledger did with an envelope.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnvelopeStatus {
    pub digest: String,
    /// `accepted`, `rejected` or `unknown`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EntryPage {
    pub entries: Vec<Entry>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

/// A receipt from a trust anchor for a block's checkpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Anchor {
    pub sink: String,
    /// `nats`, `rfc3161`, `webhook` or `witness`.
    pub kind: String,
    pub tree_size: u64,
    #[schema(value_type = Object)]
    pub receipt: serde_json::Value,
    /// RFC 3339.
    pub created_at: String,
}

/// A block's checkpoint note with the witness cosignatures recorded for it appended as
/// further signature lines: still one signed note, which any C2SP note verifier opens
/// with the ledger's key (ignoring lines for keys it does not know) and a witness's key
/// checks. Lines that are not a single note signature line are left out.
pub fn cosigned_checkpoint(checkpoint: &str, anchors: &[Anchor]) -> String {
    let mut note = checkpoint.to_string();
    if !note.ends_with('\n') {
        note.push('\n');
    }
    let mut seen: Vec<&str> = Vec::new();
    let lines = anchors
        .iter()
        .filter(|a| a.kind == "witness")
        .filter_map(|a| a.receipt.get("cosignatures").and_then(|c| c.as_array()))
        .flatten()
        .filter_map(|l| l.as_str());
    for line in lines {
        let well_formed =
            line.starts_with("\u{2014} ") && !line.contains('\n') && line.len() < 1024;
        if well_formed && !seen.contains(&line) && !note.contains(&format!("\n{line}\n")) {
            seen.push(line);
            note.push_str(line);
            note.push('\n');
        }
    }
    note
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Block {
    pub height: u64,
    pub first_index: u64,
    pub tree_size: u64,
    pub root_hash: String,
    pub block_hash: String,
    pub prev_block_hash: String,
    /// Unix milliseconds, as in the block header.
    pub sealed_at: i64,
    pub checkpoint: String,
    pub anchors: Vec<Anchor>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BlockPage {
    pub blocks: Vec<Block>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProducerKey {
    pub producer: String,
    pub keyid: String,
    /// Hex of the raw 32-byte ed25519 public key.
    pub public_key: String,
    /// RFC 3339.
    pub valid_from: String,
    pub valid_until: Option<String>,
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Keys {
    /// The ledger's note verifier keys, `name+hash+base64`.
    pub ledger: Vec<String>,
    pub producers: Vec<ProducerKey>,
}

/// Unix milliseconds as RFC 3339 UTC with millisecond precision.
pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Groups `(name, algorithm, value)` rows, sorted by name, into in-toto subjects. Two
/// subjects of one name with digests of the same algorithm stay two subjects.
pub fn group_subjects(rows: impl IntoIterator<Item = (String, String, String)>) -> Vec<Subject> {
    let mut out: Vec<Subject> = Vec::new();
    for (name, algorithm, value) in rows {
        match out.last_mut() {
            Some(s) if s.name == name && !s.digest.contains_key(&algorithm) => {
                s.digest.insert(algorithm, value);
            }
            _ => out.push(Subject {
                name,
                digest: BTreeMap::from([(algorithm, value)]),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosignatures_are_appended_once_and_only_well_formed() {
        let cp = "o\n1\nAAAA\n\n\u{2014} o sig1\n";
        let a = |kind: &str, lines: serde_json::Value| Anchor {
            sink: "w".into(),
            kind: kind.into(),
            tree_size: 1,
            receipt: serde_json::json!({ "cosignatures": lines }),
            created_at: String::new(),
        };
        let note = cosigned_checkpoint(
            cp,
            &[
                a(
                    "witness",
                    serde_json::json!(["\u{2014} w1 c1", "\u{2014} w1 c1"]),
                ),
                a(
                    "witness",
                    serde_json::json!(["\u{2014} w2 c2\n\u{2014} forged x", "junk"]),
                ),
                a("webhook", serde_json::json!(["\u{2014} w3 c3"])),
                a("witness", serde_json::json!(["\u{2014} o sig1"])),
            ],
        );
        assert_eq!(note, format!("{cp}\u{2014} w1 c1\n"));
    }

    #[test]
    fn subjects_group_by_name_and_keep_repeats_apart() {
        let r = |n: &str, a: &str, v: &str| (n.to_string(), a.to_string(), v.to_string());
        let g = group_subjects([
            r("a", "sha256", "01"),
            r("a", "sha512", "02"),
            r("a", "sha256", "03"),
            r("b", "sha256", "04"),
        ]);
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].digest.len(), 2);
        assert_eq!(g[1].digest["sha256"], "03");
        assert_eq!(g[2].name, "b");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
