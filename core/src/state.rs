//! State snapshots: a service's state S(T) = {code, configuration, environment, data
//! mutations}, recorded as in-toto statements any producer can publish, and the rules
//! that bind them.
//!
//! Every state statement names its service in a subject `service:<name>` whose digest is
//! `sha256` of that name ([`service_subject`]), so that the reader's subject search
//! (`/v1/entries?subject_digest=sha256:<hex>`) finds all of a service's statements in log
//! order. A snapshot binds one component of each kind by the component's envelope digest.
//! JSON Schemas of each predicate are in `schemas/state/` (checked against these types in
//! the tests).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const CODE_V1: &str = "https://ace-ledger.dev/state/code/v1";
pub const CONFIG_V1: &str = "https://ace-ledger.dev/state/config/v1";
pub const ENVIRONMENT_V1: &str = "https://ace-ledger.dev/state/environment/v1";
pub const MUTATION_V1: &str = "https://ace-ledger.dev/state/mutation/v1";
pub const SNAPSHOT_V1: &str = "https://ace-ledger.dev/state/snapshot/v1";

/// A component kind, as named in snapshots and determinism contracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Code,
    Config,
    Environment,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Code, Kind::Config, Kind::Environment];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Code => "code",
            Kind::Config => "config",
            Kind::Environment => "environment",
        }
    }

    pub fn predicate_type(self) -> &'static str {
        match self {
            Kind::Code => CODE_V1,
            Kind::Config => CONFIG_V1,
            Kind::Environment => ENVIRONMENT_V1,
        }
    }

    pub fn of_predicate_type(t: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.predicate_type() == t)
    }
}

/// `(name, sha256 hex)` of the subject that ties a statement to its service.
pub fn service_subject(service: &str) -> (String, String) {
    let name = format!("service:{service}");
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    (name, digest)
}

/// A file and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodePredicate {
    pub service: String,
    /// The repository's identity: its origin URL, or its path when it has none.
    pub repository: String,
    /// The commit checked out (hex object id).
    pub commit: String,
    /// The commit's tree object id.
    pub tree: String,
    /// Whether the work tree had uncommitted changes (the commit then does not describe
    /// the code exactly).
    pub dirty: bool,
    #[serde(default)]
    pub artifacts: Vec<FileDigest>,
    #[serde(default)]
    pub lockfiles: Vec<FileDigest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub path: String,
    pub sha256: String,
    /// The content, when recorded; absent when redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigPredicate {
    pub service: String,
    /// Where the configuration came from (e.g. `file`, a config service's name).
    pub source: String,
    /// An operator's version label, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// SHA-256 over the files' `path NUL sha256 LF` lines in path order: one digest for
    /// the whole snapshot ([`config_digest`]).
    pub snapshot_digest: String,
    pub files: Vec<ConfigFile>,
}

/// The digest of a configuration snapshot, from its files' digests (so that a redacted
/// snapshot keeps the same digest).
pub fn config_digest(files: &[ConfigFile]) -> String {
    let mut sorted: Vec<&ConfigFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut h = Sha256::new();
    for f in sorted {
        h.update(f.path.as_bytes());
        h.update([0]);
        h.update(f.sha256.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentPredicate {
    pub service: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_image: Option<String>,
    /// Runtime name → version (e.g. `rustc`, `python3`).
    #[serde(default)]
    pub runtimes: std::collections::BTreeMap<String, String>,
    /// Feature flag → value, from a flags file.
    #[serde(default)]
    pub feature_flags: std::collections::BTreeMap<String, serde_json::Value>,
    /// How the host keeps time (e.g. `chrony`, `systemd-timesyncd`, `unknown`).
    pub time_source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MutationPredicate {
    pub service: String,
    pub mutation_id: String,
    /// 1, 2, 3, … per service, gapless: a gap is a lost mutation.
    pub sequence: u64,
    pub origin: String,
    /// SHA-256 of the mutation's payload.
    pub payload_sha256: String,
    /// Where the mutation is recorded outside the ledger (stream offset, LSN, tx id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub kind: Kind,
    /// The component statement's envelope digest (`sha256:<hex>`).
    pub envelope: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotPredicate {
    pub service: String,
    /// When the components were collected (RFC 3339).
    pub taken_at: String,
    pub components: Vec<Component>,
    /// The last mutation sequence applied when the snapshot was taken (0: none yet).
    pub mutation_sequence: u64,
    /// True when a mandatory signal is missing and the snapshot was recorded anyway.
    pub partial: bool,
    #[serde(default)]
    pub missing: Vec<Kind>,
}

/// A service's determinism contract: which signals a snapshot must carry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub service: String,
    pub mandatory: Vec<Kind>,
    #[serde(default)]
    pub optional: Vec<Kind>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContractError {
    #[error("contract {path}: {why}")]
    Parse { path: String, why: String },
    #[error("contract {path}: {kind} is both mandatory and optional")]
    Both { path: String, kind: &'static str },
}

impl Contract {
    pub fn parse(text: &str, path: &str) -> Result<Contract, ContractError> {
        let c: Contract = toml::from_str(text).map_err(|e| ContractError::Parse {
            path: path.into(),
            why: e.to_string(),
        })?;
        if let Some(k) = c.mandatory.iter().find(|k| c.optional.contains(k)) {
            return Err(ContractError::Both {
                path: path.into(),
                kind: k.as_str(),
            });
        }
        Ok(c)
    }

    /// Mandatory kinds absent from `have`.
    pub fn missing(&self, have: &[Kind]) -> Vec<Kind> {
        self.mandatory
            .iter()
            .filter(|k| !have.contains(k))
            .copied()
            .collect()
    }
}

/// Checks that mutation sequences run 1.. (or from `after`+1) without a gap or a repeat;
/// returns the first problem.
pub fn check_sequence(after: u64, seqs: &[u64]) -> Result<(), String> {
    for (i, &s) in seqs.iter().enumerate() {
        let expected = after + 1 + i as u64;
        if s < expected {
            return Err(format!(
                "mutation sequence {s} appears again (expected {expected})"
            ));
        }
        if s > expected {
            return Err(if s == expected + 1 {
                format!("mutation sequence {expected} is missing (next is {s})")
            } else {
                format!(
                    "mutation sequences {expected}..{} are missing (next is {s})",
                    s - 1
                )
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_subjects_are_stable() {
        let (name, digest) = service_subject("billing");
        assert_eq!(name, "service:billing");
        assert_eq!(digest, hex::encode(Sha256::digest(b"service:billing")));
    }

    #[test]
    fn config_digest_ignores_content_and_order() {
        let a = ConfigFile {
            path: "b.toml".into(),
            sha256: "11".into(),
            content: Some("x".into()),
        };
        let b = ConfigFile {
            path: "a.toml".into(),
            sha256: "22".into(),
            content: None,
        };
        let d1 = config_digest(&[a.clone(), b.clone()]);
        let d2 = config_digest(&[ConfigFile { content: None, ..b }, a]);
        assert_eq!(d1, d2);
    }

    #[test]
    fn contracts_name_what_is_missing() {
        let c = Contract::parse(
            "service = \"billing\"\nmandatory = [\"code\", \"config\"]\noptional = [\"environment\"]\n",
            "c.toml",
        )
        .expect("contract");
        assert_eq!(c.missing(&[Kind::Code]), vec![Kind::Config]);
        assert!(Contract::parse(
            "service = \"x\"\nmandatory = [\"code\"]\noptional = [\"code\"]\n",
            "c"
        )
        .unwrap_err()
        .to_string()
        .contains("both"));
        assert!(Contract::parse("service = \"x\"\nmandatory = [\"kernel\"]\n", "c").is_err());
    }

    #[test]
    fn sequence_gaps_and_repeats_are_named() {
        assert_eq!(check_sequence(0, &[1, 2, 3]), Ok(()));
        assert_eq!(check_sequence(5, &[]), Ok(()));
        assert_eq!(
            check_sequence(2, &[3, 5]),
            Err("mutation sequence 4 is missing (next is 5)".into())
        );
        assert_eq!(
            check_sequence(0, &[1, 4]),
            Err("mutation sequences 2..3 are missing (next is 4)".into())
        );
        assert_eq!(
            check_sequence(0, &[1, 1]),
            Err("mutation sequence 1 appears again (expected 2)".into())
        );
    }
}
