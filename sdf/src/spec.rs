//! The scenario file (`sdf/sdf.yml`): a stack description and the scenarios, each a list
//! of steps. Unknown fields are refused, so a misspelt expectation is an error, never a
//! silently skipped check.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml_ng::Error,
    },
    #[error("{path}: scenario {scenario:?}, step {step}: {why}")]
    Invalid {
        path: String,
        scenario: String,
        step: usize,
        why: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdfFile {
    pub stack: StackSpec,
    pub scenarios: Vec<Scenario>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackSpec {
    /// Registered at start: producer, first key (named after it), NATS user.
    #[serde(default)]
    pub producers: Vec<String>,
    /// The writer's `ACE_ALLOWED_PAYLOAD_TYPES`; default the writer's own.
    #[serde(default)]
    pub allowed_payload_types: Vec<String>,
    /// The writer's `ACE_MAX_ENVELOPE_BYTES`; default the writer's own.
    pub max_envelope_bytes: Option<u64>,
    /// The writer's policy file (TOML text); default the built-in policy.
    pub policy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub steps: Vec<StepSpec>,
}

/// One step: exactly one action, and for the actions that produce acks, what to expect.
#[derive(Debug)]
pub struct StepSpec {
    pub action: Action,
    pub expect: Option<Expect>,
}

// By hand: serde's `flatten` cannot refuse unknown fields, and a step with two actions
// (or a misspelt one) must be an error naming them.
impl<'de> Deserialize<'de> for StepSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = serde_yaml_ng::Mapping::deserialize(d)?;
        let expect = match map.remove("expect") {
            Some(v) => Some(Expect::deserialize(v).map_err(D::Error::custom)?),
            None => None,
        };
        if map.len() != 1 {
            let keys: Vec<String> = map
                .keys()
                .map(|k| k.as_str().unwrap_or("?").to_string())
                .collect();
            return Err(D::Error::custom(format!(
                "a step is one action (and `expect`), found {keys:?}"
            )));
        }
        // Through JSON: serde_yaml_ng's Value reads enums only from YAML tags, serde_json's
        // from the one-key map the file uses.
        let json =
            serde_json::to_value(serde_yaml_ng::Value::Mapping(map)).map_err(D::Error::custom)?;
        let action = Action::deserialize(json).map_err(D::Error::custom)?;
        Ok(StepSpec { action, expect })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Health(Vec<String>),
    Publish(Box<Publish>),
    Verify(VerifySpec),
    Consistency(Empty),
    Reader(ReaderGet),
    NewKey(NewKeySpec),
    AddKey(AddKeySpec),
    RotateKey(RotateKeySpec),
    RevokeKey(RevokeKeySpec),
    Suspend(SuspendSpec),
    Resume(ResumeSpec),
    Sleep(String),
    DashboardRetry(Empty),
    DashboardDiscard(DiscardSpec),
    RefusePublish(RefusePublish),
    RefuseSubscribe(RefuseSubscribe),
    RefuseConnect(AsUser),
    RefuseJetstreamApi(AsUser),
    RefuseSql(RefuseSql),
    Anchored(AnchoredSpec),
    Audit(AuditSpec),
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Health(_) => "health",
            Action::Publish(_) => "publish",
            Action::Verify(_) => "verify",
            Action::Consistency(_) => "consistency",
            Action::Reader(_) => "reader",
            Action::NewKey(_) => "new_key",
            Action::AddKey(_) => "add_key",
            Action::RotateKey(_) => "rotate_key",
            Action::RevokeKey(_) => "revoke_key",
            Action::Suspend(_) => "suspend",
            Action::Resume(_) => "resume",
            Action::Sleep(_) => "sleep",
            Action::DashboardRetry(_) => "dashboard_retry",
            Action::DashboardDiscard(_) => "dashboard_discard",
            Action::RefusePublish(_) => "refuse_publish",
            Action::RefuseSubscribe(_) => "refuse_subscribe",
            Action::RefuseConnect(_) => "refuse_connect",
            Action::RefuseJetstreamApi(_) => "refuse_jetstream_api",
            Action::RefuseSql(_) => "refuse_sql",
            Action::Anchored(_) => "anchored",
            Action::Audit(_) => "audit",
        }
    }

    /// Whether the action's outcome is a set of ledger acks an `expect` judges.
    pub fn acks(&self) -> bool {
        matches!(self, Action::Publish(_) | Action::DashboardRetry(_))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Keys to sign with: one name or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum KeyNames {
    One(String),
    Many(Vec<String>),
}

impl KeyNames {
    pub fn names(&self) -> Vec<String> {
        match self {
            KeyNames::One(k) => vec![k.clone()],
            KeyNames::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// The NATS user that publishes: a producer, or `admin`.
    #[serde(rename = "as")]
    pub as_user: String,
    /// Whose intake subject; default the publishing producer's.
    pub to: Option<String>,
    #[serde(default = "one")]
    pub count: u32,
    /// Signing key name(s); default the key named after the target producer.
    pub key: Option<KeyNames>,
    /// Publish these bytes verbatim instead of an envelope.
    pub raw: Option<String>,
    /// Republish the previous publish step's exact bytes, without `Nats-Msg-Id`.
    #[serde(default)]
    pub again: bool,
    pub payload_type: Option<String>,
    /// A payload given as text (not a generated statement).
    pub payload: Option<String>,
    /// The whole statement, replacing the generated one.
    pub statement: Option<serde_json::Value>,
    pub predicate_type: Option<String>,
    pub predicate: Option<serde_json::Value>,
    pub subject_name: Option<String>,
    /// Subjects per statement (default 1).
    pub subjects: Option<u32>,
    /// Each subject's digest map (`{sha256}`/`{sha512}` are replaced by fresh values).
    pub digests: Option<BTreeMap<String, String>>,
    /// Pad the predicate so that the envelope is at least this many bytes.
    pub pad_to: Option<usize>,
    /// `signature`: flip a bit of each signature after signing.
    pub tamper: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// accepted | duplicate | rejected
    pub ack: Option<String>,
    pub reason: Option<String>,
    /// A substring of the rejection's detail.
    pub detail: Option<String>,
    /// The exact number of warnings.
    pub warnings: Option<usize>,
    /// A substring some warning must contain.
    pub warning: Option<String>,
    /// The ack's index (a template such as `{index}`).
    pub index: Option<String>,
    /// Whether a DLQ row must exist for the message (true) or must not (false).
    pub dlq: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// Verify at most this many of the last publish's entries (first, last, evenly
    /// spaced between); default 10.
    pub max: Option<usize>,
    /// Verify this entry instead (e.g. 0, the ledger's first key event).
    pub index: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderGet {
    pub get: String,
    #[serde(default = "ok_status")]
    pub status: u16,
    /// A subset the JSON answer must contain (see sdf/README.md for the matching rules).
    pub json: Option<serde_json::Value>,
}

fn ok_status() -> u16 {
    200
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeySpec {
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddKeySpec {
    pub producer: String,
    /// The key's name: an existing key (`new_key`) or, with `generate`, a new one.
    pub key: String,
    #[serde(default)]
    pub generate: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKeySpec {
    pub producer: String,
    pub new: String,
    pub overlap: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeKeySpec {
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuspendSpec {
    pub producer: String,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeSpec {
    pub producer: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscardSpec {
    pub note: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusePublish {
    #[serde(rename = "as")]
    pub as_user: String,
    pub to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefuseSubscribe {
    #[serde(rename = "as")]
    pub as_user: String,
    /// Relative to the prefix: `ack.beta` is `<prefix>.ack.beta`.
    pub subject: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsUser {
    #[serde(rename = "as")]
    pub as_user: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefuseSql {
    pub role: String,
    pub statements: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchoredSpec {
    pub sinks: Vec<String>,
    #[serde(default = "thirty")]
    pub within: String,
}

fn thirty() -> String {
    "30s".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSpec {
    /// Also verify every ed25519 signature (`--verify-signatures`).
    #[serde(default)]
    pub verify_signatures: bool,
    /// Verify the witness cosignatures and RFC 3161 tokens, and require at least one of each.
    #[serde(default)]
    pub receipts: bool,
}

/// `90ms`, `3s`, `2m`: the durations the file uses.
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .ok_or_else(|| format!("duration {s:?}: no unit (ms, s or m)"))?;
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration {s:?}: not a whole number"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("duration {s:?}: unit must be ms, s or m")),
    }
}

impl SdfFile {
    pub fn load(path: &Path) -> Result<SdfFile, SpecError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&p, &text)
    }

    /// Parses and checks what serde cannot: an `expect` only on steps with acks, valid
    /// durations, names that are unique.
    pub fn parse(path: &str, text: &str) -> Result<SdfFile, SpecError> {
        let f: SdfFile = serde_yaml_ng::from_str(text).map_err(|source| SpecError::Parse {
            path: path.into(),
            source,
        })?;
        let mut seen = std::collections::HashSet::new();
        for sc in &f.scenarios {
            let bad = |step: usize, why: String| SpecError::Invalid {
                path: path.into(),
                scenario: sc.name.clone(),
                step,
                why,
            };
            if !seen.insert(sc.name.as_str()) {
                return Err(bad(0, "a second scenario with this name".into()));
            }
            if sc.steps.is_empty() {
                return Err(bad(0, "no steps".into()));
            }
            for (i, st) in sc.steps.iter().enumerate() {
                let n = i + 1;
                if st.expect.is_some() && !st.action.acks() {
                    return Err(bad(
                        n,
                        format!("{} has no acks to expect anything of", st.action.name()),
                    ));
                }
                if st.action.acks() && st.expect.is_none() {
                    return Err(bad(
                        n,
                        format!("{} needs an `expect` (at least `ack`)", st.action.name()),
                    ));
                }
                match &st.action {
                    Action::Sleep(d) => {
                        duration(d).map_err(|e| bad(n, e))?;
                    }
                    Action::Anchored(a) => {
                        duration(&a.within).map_err(|e| bad(n, e))?;
                    }
                    Action::RotateKey(r) => {
                        duration(&r.overlap).map_err(|e| bad(n, e))?;
                    }
                    Action::Publish(p) => {
                        if p.count == 0 {
                            return Err(bad(n, "count must be at least 1".into()));
                        }
                        if p.raw.is_some() && (p.statement.is_some() || p.payload.is_some()) {
                            return Err(bad(n, "raw excludes statement and payload".into()));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_file_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/sdf.yml");
        let f = SdfFile::load(Path::new(path)).expect("sdf.yml");
        assert!(f.scenarios.len() >= 20, "{}", f.scenarios.len());
    }

    #[test]
    fn unknown_fields_and_misplaced_expectations_are_refused() {
        let typo = "stack: {}\nscenarios:\n  - name: a\n    steps:\n      - publish: {as: acme}\n        expect: {akc: accepted}\n";
        let e = SdfFile::parse("t.yml", typo).expect_err("refused");
        assert!(e.to_string().contains("akc"), "{e}");
        let misplaced = "stack: {}\nscenarios:\n  - name: a\n    steps:\n      - sleep: 1s\n        expect: {ack: accepted}\n";
        let e = SdfFile::parse("t.yml", misplaced).expect_err("refused");
        assert!(e.to_string().contains("sleep has no acks"), "{e}");
        let missing =
            "stack: {}\nscenarios:\n  - name: a\n    steps:\n      - publish: {as: acme}\n";
        let e = SdfFile::parse("t.yml", missing).expect_err("refused");
        assert!(e.to_string().contains("needs an `expect`"), "{e}");
        let unit = "stack: {}\nscenarios:\n  - name: a\n    steps:\n      - sleep: 3 seconds\n";
        let e = SdfFile::parse("t.yml", unit).expect_err("refused");
        assert!(e.to_string().contains("step 1"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert!(duration("3").is_err() && duration("s").is_err() && duration("3h").is_err());
    }
}
