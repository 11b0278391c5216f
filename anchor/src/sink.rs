//! Sinks: where checkpoints are anchored, from the TOML file `ACE_ANCHOR_SINKS_FILE`.
//!
//! ```toml
//! [[sink]]
//! name = "mirror"            # receipts' `sink`; letters, digits, `-`, `_`
//! kind = "nats"              # nats | webhook | rfc3161 | witness
//! schedule = "every_block"   # or "latest": the latest block at most every interval_secs
//!
//! [[sink]]
//! name = "audit-hook"
//! kind = "webhook"
//! url = "https://hooks.example/ace"
//! secret_file = "/etc/ace/webhook.secret"
//! schedule = "latest"
//! interval_secs = 60
//! ```
//! Each kind's sending lives in its own file; this one compiles the file and dispatches.

pub mod nats;
pub mod tsa;
pub mod webhook;
pub mod witness;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ace_core::config::Secret;
use ace_core::merkle::Hash;
use serde::Deserialize;

/// When a sink anchors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Each new block in turn; after a failure, or when more than `ACE_ANCHOR_MAX_BACKLOG`
    /// behind, only the latest (it covers the skipped ones by consistency).
    EveryBlock,
    /// The latest block, at most once per interval.
    Latest(Duration),
}

#[derive(Debug, Clone)]
pub enum Target {
    /// Publish the signed checkpoint on `<prefix>.checkpoint` (JetStream, acknowledged).
    Nats,
    /// POST JSON signed with HMAC-SHA256 (see [`webhook`]).
    Webhook { url: reqwest::Url, secret: Secret },
    /// RFC 3161 time-stamping (see [`tsa`]).
    Rfc3161 {
        url: reqwest::Url,
        trust: std::sync::Arc<ace_core::tsa::TsaTrust>,
    },
    /// C2SP tlog-witness `add-checkpoint` (see [`witness`]); `url` is the submission prefix.
    Witness {
        url: reqwest::Url,
        key: ace_core::witness::CosignatureVerifier,
    },
}

impl Target {
    /// The `anchor_receipts.kind` of this target.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Nats => "nats",
            Target::Webhook { .. } => "webhook",
            Target::Witness { .. } => "witness",
            Target::Rfc3161 { .. } => "rfc3161",
        }
    }

    /// Where it sends, for logs and errors (never a secret).
    pub fn destination(&self, subject: &str) -> String {
        match self {
            Target::Nats => subject.to_string(),
            Target::Webhook { url, .. }
            | Target::Witness { url, .. }
            | Target::Rfc3161 { url, .. } => url.to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SinkSpec {
    pub name: String,
    pub schedule: Schedule,
    pub target: Target,
}

/// One checkpoint to anchor.
#[derive(Debug, Clone)]
pub struct Anchoring {
    pub origin: String,
    pub height: u64,
    pub tree_size: u64,
    pub root_hash: Hash,
    pub sealed_at_ms: i64,
    /// The signed checkpoint note, exactly as stored.
    pub checkpoint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SinksFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: {}", .problems.join("; "))]
    Invalid { path: String, problems: Vec<String> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    sink: Vec<EntrySpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntrySpec {
    name: String,
    kind: String,
    schedule: Option<String>,
    interval_secs: Option<u64>,
    url: Option<String>,
    secret_file: Option<PathBuf>,
    vkey: Option<String>,
    trust_file: Option<PathBuf>,
}

/// Read and compile the sinks file; every problem is reported, each naming its sink.
pub fn load(path: &Path) -> Result<Vec<SinkSpec>, SinksFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| SinksFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, path)
}

/// Compile a sinks file's text; `path` names it in errors and anchors relative file paths.
pub fn parse(text: &str, path: &Path) -> Result<Vec<SinkSpec>, SinksFileError> {
    let file: FileSpec = toml::from_str(text).map_err(|e| SinksFileError::Syntax {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut problems = Vec::new();
    let mut names = HashSet::new();
    let mut sinks = Vec::new();
    for e in file.sink {
        let who = format!("sink {:?}", e.name);
        let name_ok = !e.name.is_empty()
            && e.name.len() <= 64
            && e.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            problems.push(format!(
                "{who}: a name is 1 to 64 letters, digits, '-' or '_'"
            ));
        }
        if !names.insert(e.name.clone()) {
            problems.push(format!("{who}: the name is used twice"));
        }
        let schedule = match (e.schedule.as_deref(), e.interval_secs) {
            (None | Some("every_block"), None) => Some(Schedule::EveryBlock),
            (None | Some("every_block"), Some(_)) => {
                problems.push(format!(
                    "{who}: interval_secs applies only to schedule = \"latest\""
                ));
                None
            }
            (Some("latest"), Some(s)) if s >= 1 => Some(Schedule::Latest(Duration::from_secs(s))),
            (Some("latest"), _) => {
                problems.push(format!(
                    "{who}: schedule = \"latest\" needs interval_secs of at least 1"
                ));
                None
            }
            (Some(other), _) => {
                problems.push(format!(
                    "{who}: unknown schedule {other:?} (every_block or latest)"
                ));
                None
            }
        };
        let mut unused = |field: &str, set: bool| {
            if set {
                problems.push(format!("{who}: kind {} takes no {field}", e.kind));
            }
        };
        let target = match e.kind.as_str() {
            "nats" => {
                unused("url", e.url.is_some());
                unused("secret_file", e.secret_file.is_some());
                unused("vkey", e.vkey.is_some());
                unused("trust_file", e.trust_file.is_some());
                Some(Target::Nats)
            }
            "rfc3161" => {
                unused("secret_file", e.secret_file.is_some());
                unused("vkey", e.vkey.is_some());
                let url = url_of(&who, e.url.as_deref(), &mut problems);
                let trust = match &e.trust_file {
                    None => {
                        problems.push(format!(
                            "{who}: kind rfc3161 needs trust_file (PEM: the TSA's certificate or its CA)"
                        ));
                        None
                    }
                    Some(f) => {
                        let path = base.join(f);
                        match std::fs::read_to_string(&path) {
                            Err(err) => {
                                problems.push(format!(
                                    "{who}: cannot read trust_file {}: {err}",
                                    path.display()
                                ));
                                None
                            }
                            Ok(pem) => match ace_core::tsa::TsaTrust::from_pem(&pem) {
                                Ok(t) => Some(std::sync::Arc::new(t)),
                                Err(err) => {
                                    problems.push(format!(
                                        "{who}: trust_file {}: {err}",
                                        path.display()
                                    ));
                                    None
                                }
                            },
                        }
                    }
                };
                url.zip(trust)
                    .map(|(url, trust)| Target::Rfc3161 { url, trust })
            }
            "witness" => {
                unused("secret_file", e.secret_file.is_some());
                unused("trust_file", e.trust_file.is_some());
                let url = url_of(&who, e.url.as_deref(), &mut problems);
                let key = match e.vkey.as_deref() {
                    None => {
                        problems.push(format!(
                            "{who}: kind witness needs vkey (the witness's cosignature/v1 verifier key)"
                        ));
                        None
                    }
                    Some(v) => match ace_core::witness::CosignatureVerifier::parse(v) {
                        Ok(k) => Some(k),
                        Err(err) => {
                            problems.push(format!("{who}: vkey: {err}"));
                            None
                        }
                    },
                };
                url.zip(key).map(|(url, key)| Target::Witness { url, key })
            }
            "webhook" => {
                unused("vkey", e.vkey.is_some());
                unused("trust_file", e.trust_file.is_some());
                let url = url_of(&who, e.url.as_deref(), &mut problems);
                let secret = match &e.secret_file {
                    None => {
                        problems.push(format!(
                            "{who}: kind webhook needs secret_file (the HMAC key)"
                        ));
                        None
                    }
                    Some(f) => read_secret(&who, &base.join(f), &mut problems),
                };
                url.zip(secret)
                    .map(|(url, secret)| Target::Webhook { url, secret })
            }
            other => {
                problems.push(format!(
                    "{who}: unknown kind {other:?} (nats, webhook, rfc3161, witness)"
                ));
                None
            }
        };
        if let (Some(schedule), Some(target)) = (schedule, target) {
            sinks.push(SinkSpec {
                name: e.name,
                schedule,
                target,
            });
        }
    }
    if problems.is_empty() {
        Ok(sinks)
    } else {
        Err(SinksFileError::Invalid {
            path: path.display().to_string(),
            problems,
        })
    }
}

fn url_of(who: &str, url: Option<&str>, problems: &mut Vec<String>) -> Option<reqwest::Url> {
    let Some(url) = url else {
        problems.push(format!("{who}: needs url"));
        return None;
    };
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Some(u),
        Ok(u) => {
            problems.push(format!(
                "{who}: url {url:?} has scheme {:?}; http or https",
                u.scheme()
            ));
            None
        }
        Err(e) => {
            problems.push(format!("{who}: url {url:?}: {e}"));
            None
        }
    }
}

fn read_secret(who: &str, path: &Path, problems: &mut Vec<String>) -> Option<Secret> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Some(Secret::new(s.trim())),
        Ok(_) => {
            problems.push(format!("{who}: secret_file {} is empty", path.display()));
            None
        }
        Err(e) => {
            problems.push(format!(
                "{who}: cannot read secret_file {}: {e}",
                path.display()
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in(dir: &Path, text: &str) -> Result<Vec<SinkSpec>, SinksFileError> {
        parse(text, &dir.join("sinks.toml"))
    }

    #[test]
    fn kinds_and_schedules_compile() {
        let dir = std::env::temp_dir().join(format!("ace-sinks-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hook.secret"), "s3cret\n").unwrap();
        let sinks = parse_in(
            &dir,
            r#"
[[sink]]
name = "mirror"
kind = "nats"

[[sink]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:1/x"
secret_file = "hook.secret"
schedule = "latest"
interval_secs = 30
"#,
        )
        .unwrap();
        assert_eq!(sinks.len(), 2);
        assert_eq!(sinks[0].schedule, Schedule::EveryBlock);
        assert_eq!(sinks[1].schedule, Schedule::Latest(Duration::from_secs(30)));
        match &sinks[1].target {
            Target::Webhook { secret, .. } => assert_eq!(secret.expose(), "s3cret"),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_problem_names_its_sink() {
        let dir = std::env::temp_dir();
        let e = parse_in(
            &dir,
            r#"
[[sink]]
name = "a"
kind = "webhook"
url = "ftp://x"

[[sink]]
name = "a"
kind = "carrier-pigeon"
schedule = "latest"
"#,
        )
        .unwrap_err()
        .to_string();
        for want in [
            "sink \"a\": url \"ftp://x\" has scheme \"ftp\"",
            "sink \"a\": kind webhook needs secret_file",
            "sink \"a\": the name is used twice",
            "unknown kind \"carrier-pigeon\"",
            "schedule = \"latest\" needs interval_secs",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
        let e = parse_in(
            &dir,
            "[[sink]]\nname = \"x\"\nkind = \"nats\"\ncolour = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("colour"), "{e}");
    }
}
