//! Admission policy, evaluated by the writer on every verified envelope before anything
//! is persisted.
//!
//! A policy is a list of rules, each with an id, a kind and a mode: a violated `deny` rule
//! sends the envelope to the DLQ as `policy_denied` naming the rule; a violated `warn` rule
//! admits it with a warning carried in its ack and stored with its entry. Producers may
//! replace, add or disable rules. The file format lives in [`spec`], the per-producer rate
//! limit's state in [`rate`]. A policy's version is the SHA-256 of its file, and every
//! entry records the version that admitted it.

pub mod rate;
pub mod spec;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use globset::GlobSet;
use sha2::{Digest, Sha256};

use crate::rejection::{Rejection, RejectionCode};
use crate::statement::Statement;

pub use rate::RateLimiter;
pub use spec::{PolicyError, Problem};

/// The policy in force when no policy file is configured. Written in the file format so
/// that it has a version like any other policy.
pub const BUILTIN_POLICY: &str = r#"# ACE Ledger built-in policy (no ACE_POLICY_FILE configured).
[[rule]]
id = "max-subjects"
kind = "max_subjects"
mode = "deny"
max = 1024
"#;

/// Whether the producer may publish at all (suspension is an operator's decision
/// recorded in the producers table, not a policy rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerStatus {
    Active,
    Suspended,
}

/// A suspended producer's envelopes are denied whatever the policy says.
pub fn check_producer_active(producer: &str, status: ProducerStatus) -> Result<(), Rejection> {
    match status {
        ProducerStatus::Active => Ok(()),
        ProducerStatus::Suspended => Err(Rejection::new(
            RejectionCode::PolicyDenied,
            format!("rule producer_active: producer {producer} is suspended"),
        )
        .with_field("subject")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Deny,
    Warn,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Deny => "deny",
            Mode::Warn => "warn",
        }
    }
}

/// Exact strings, or prefixes written with a trailing `*`.
#[derive(Debug, Clone, Default)]
pub struct Patterns {
    exact: Vec<String>,
    prefixes: Vec<String>,
    written: Vec<String>,
}

impl Patterns {
    pub fn new(written: &[String]) -> Patterns {
        let mut p = Patterns {
            written: written.to_vec(),
            ..Patterns::default()
        };
        for w in written {
            match w.strip_suffix('*') {
                Some(prefix) => p.prefixes.push(prefix.to_string()),
                None => p.exact.push(w.clone()),
            }
        }
        p
    }

    pub fn matches(&self, s: &str) -> bool {
        self.exact.iter().any(|e| e == s) || self.prefixes.iter().any(|p| s.starts_with(p))
    }

    fn list(&self) -> String {
        self.written.join(", ")
    }
}

/// What a rule checks, compiled from its file form.
#[derive(Debug, Clone)]
pub enum Check {
    PayloadTypes(Patterns),
    PredicateTypes(Patterns),
    SubjectNames {
        set: GlobSet,
        written: Vec<String>,
    },
    DigestAlgorithms {
        require: Vec<String>,
        forbid: Vec<String>,
    },
    MaxSubjects(usize),
    MaxEnvelopeBytes(usize),
    MinSignatures(usize),
    PredicateSchema {
        predicate_types: Patterns,
        validator: Arc<jsonschema::Validator>,
    },
    /// Token bucket per producer: `rate` envelopes per second, bursts up to `burst`.
    RateLimit {
        rate: f64,
        burst: f64,
    },
}

impl Check {
    pub fn kind(&self) -> &'static str {
        match self {
            Check::PayloadTypes(_) => "payload_types",
            Check::PredicateTypes(_) => "predicate_types",
            Check::SubjectNames { .. } => "subject_names",
            Check::DigestAlgorithms { .. } => "digest_algorithms",
            Check::MaxSubjects(_) => "max_subjects",
            Check::MaxEnvelopeBytes(_) => "max_envelope_bytes",
            Check::MinSignatures(_) => "min_signatures",
            Check::PredicateSchema { .. } => "predicate_schema",
            Check::RateLimit { .. } => "rate_limit",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub mode: Mode,
    pub check: Check,
    /// Where the rule is written in the policy file (1-based), for messages.
    pub line: usize,
    /// The producer section that defines this rule, if it is an override.
    pub producer: Option<String>,
}

/// What one rule says of one envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// The rule does not look at this kind of envelope (e.g. a predicate rule and an
    /// opaque payload).
    NotApplicable,
    Violated(String),
    /// A rate limit: settled in message order by [`RateLimiter`], not in parallel.
    Pending,
}

/// Everything the rules look at, for one verified envelope.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub producer: &'a str,
    pub payload_type: &'a str,
    /// Size of the envelope as received.
    pub envelope_bytes: usize,
    pub statement: Option<&'a Statement>,
    /// Distinct keys of this producer, in validity, whose signatures verify.
    pub valid_signatures: usize,
}

/// Every applicable rule's outcome for one envelope, in the policy's rule order.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub verdicts: Vec<(usize, Outcome)>,
}

/// The policy's answer for one envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Warn(Vec<String>),
    Deny(Rejection),
}

impl Decision {
    pub fn outcome(&self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Warn(_) => "warn",
            Decision::Deny(_) => "deny",
        }
    }
}

/// A compiled policy: its rules and which of them apply to whom.
#[derive(Debug, Clone)]
pub struct Policy {
    version: String,
    source: Arc<str>,
    rules: Vec<Rule>,
    /// Rule indexes (into `rules`) for producers with overrides…
    overrides: HashMap<String, Vec<usize>>,
    /// …and for everyone else.
    global: Vec<usize>,
}

impl Policy {
    /// The policy used when none is configured.
    pub fn builtin() -> Policy {
        // The constant is tested to compile; a failure here is a bug in this crate.
        Policy::parse(BUILTIN_POLICY).expect("the built-in policy compiles")
    }

    /// Compile a policy file's text. Every problem is reported with its line.
    pub fn parse(source: &str) -> Result<Policy, PolicyError> {
        let (rules, global, overrides) = spec::compile(source)?;
        Ok(Policy {
            version: version_of(source.as_bytes()),
            source: source.into(),
            rules,
            overrides,
            global,
        })
    }

    /// Read and compile a policy file.
    pub fn load(path: &std::path::Path) -> Result<Policy, PolicyError> {
        let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| PolicyError::Read {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        Policy::parse(&text).map_err(|e| e.in_file(path))
    }

    /// `sha256:<hex>` of the policy file's bytes.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, i: usize) -> &Rule {
        &self.rules[i]
    }

    /// Indexes of the rules that apply to `producer`, in order.
    pub fn rules_for(&self, producer: &str) -> &[usize] {
        self.overrides
            .get(producer)
            .map(Vec::as_slice)
            .unwrap_or(&self.global)
    }

    /// Producers with a section of their own.
    pub fn producers_with_overrides(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.overrides.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Every stateless rule's outcome; rate limits stay [`Outcome::Pending`].
    pub fn evaluate(&self, c: &Candidate<'_>) -> Evaluation {
        let verdicts = self
            .rules_for(c.producer)
            .iter()
            .map(|&i| (i, check(&self.rules[i].check, c)))
            .collect();
        Evaluation { verdicts }
    }

    /// The decision once every rate limit is settled. A deny names the first denying
    /// rule (and how many others also deny); warnings are `<rule id>: <why>`.
    pub fn decide(&self, e: &Evaluation) -> Decision {
        let mut warnings = Vec::new();
        let mut denied: Vec<(&Rule, &str)> = Vec::new();
        for (i, outcome) in &e.verdicts {
            if let Outcome::Violated(why) = outcome {
                let rule = &self.rules[*i];
                match rule.mode {
                    Mode::Deny => denied.push((rule, why)),
                    Mode::Warn => warnings.push(format!("{}: {why}", rule.id)),
                }
            }
        }
        if let Some((rule, why)) = denied.first() {
            let mut detail = format!("rule {} ({}): {why}", rule.id, rule.check.kind());
            if denied.len() > 1 {
                let others: Vec<&str> = denied[1..].iter().map(|(r, _)| r.id.as_str()).collect();
                detail.push_str(&format!("; also denied by {}", others.join(", ")));
            }
            let field = field_of(&rule.check);
            return Decision::Deny(
                Rejection::new(RejectionCode::PolicyDenied, detail).with_field(field),
            );
        }
        if warnings.is_empty() {
            Decision::Allow
        } else {
            Decision::Warn(warnings)
        }
    }
}

/// The policy version of a file's bytes.
pub fn version_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn field_of(check: &Check) -> &'static str {
    match check {
        Check::PayloadTypes(_) => "payloadType",
        Check::PredicateTypes(_) => "predicateType",
        Check::SubjectNames { .. } | Check::DigestAlgorithms { .. } | Check::MaxSubjects(_) => {
            "subject"
        }
        Check::MaxEnvelopeBytes(_) => "envelope",
        Check::MinSignatures(_) => "signatures",
        Check::PredicateSchema { .. } => "predicate",
        Check::RateLimit { .. } => "producer",
    }
}

fn check(check: &Check, c: &Candidate<'_>) -> Outcome {
    use Outcome::*;
    let violated = |cond: bool, why: &dyn Fn() -> String| if cond { Violated(why()) } else { Pass };
    match check {
        Check::PayloadTypes(allowed) => violated(!allowed.matches(c.payload_type), &|| {
            format!(
                "payload type {:?} is not one of {}",
                c.payload_type,
                allowed.list()
            )
        }),
        Check::PredicateTypes(allowed) => match c.statement {
            None => NotApplicable,
            Some(st) => violated(!allowed.matches(&st.predicate_type), &|| {
                format!(
                    "predicate type {:?} matches none of {}",
                    st.predicate_type,
                    allowed.list()
                )
            }),
        },
        Check::SubjectNames { set, written } => match c.statement {
            None => NotApplicable,
            Some(st) => match st.subject.iter().position(|s| !set.is_match(&s.name)) {
                None => Pass,
                Some(i) => Violated(format!(
                    "subject[{i}] name {:?} matches none of {}",
                    st.subject[i].name,
                    written.join(", ")
                )),
            },
        },
        Check::DigestAlgorithms { require, forbid } => match c.statement {
            None => NotApplicable,
            Some(st) => {
                for (i, s) in st.subject.iter().enumerate() {
                    if let Some(alg) = require.iter().find(|a| !s.digest.contains_key(*a)) {
                        return Violated(format!(
                            "subject[{i}] {:?} has no {alg} digest (required: {})",
                            s.name,
                            require.join(", ")
                        ));
                    }
                    if let Some(alg) = forbid.iter().find(|a| s.digest.contains_key(*a)) {
                        return Violated(format!(
                            "subject[{i}] {:?} carries a {alg} digest (forbidden: {})",
                            s.name,
                            forbid.join(", ")
                        ));
                    }
                }
                Pass
            }
        },
        Check::MaxSubjects(max) => match c.statement {
            None => NotApplicable,
            Some(st) => violated(st.subject.len() > *max, &|| {
                format!(
                    "statement has {} subjects, at most {max} are admitted",
                    st.subject.len()
                )
            }),
        },
        Check::MaxEnvelopeBytes(max) => violated(c.envelope_bytes > *max, &|| {
            format!(
                "envelope is {} bytes, at most {max} are admitted",
                c.envelope_bytes
            )
        }),
        Check::MinSignatures(min) => violated(c.valid_signatures < *min, &|| {
            format!(
                "{} valid signature(s) by distinct keys of producer {}, at least {min} required",
                c.valid_signatures, c.producer
            )
        }),
        Check::PredicateSchema {
            predicate_types,
            validator,
        } => match c.statement {
            Some(st) if predicate_types.matches(&st.predicate_type) => {
                let null = serde_json::Value::Null;
                let predicate = st.predicate.as_ref().unwrap_or(&null);
                // is_valid stops at the first failure and builds no error: the common,
                // passing case pays least. The error is built only for the message.
                if validator.is_valid(predicate) {
                    return Pass;
                }
                match validator.validate(predicate) {
                    Ok(()) => Pass,
                    Err(e) => {
                        let at = e.instance_path().to_string();
                        let at = if at.is_empty() { "/".to_string() } else { at };
                        Violated(format!(
                            "predicate at {at} does not match the schema for {}: {e}",
                            st.predicate_type
                        ))
                    }
                }
            }
            _ => NotApplicable,
        },
        Check::RateLimit { .. } => Pending,
    }
}

/// Per-rule, per-outcome counts over a batch, added to the metrics once it commits.
/// Counted by rule index so the hot path allocates nothing; ids are looked up once per
/// batch in [`Tally::rules`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Per rule index: [pass, warn, deny].
    counts: Vec<[u64; 3]>,
    /// [allow, warn, deny].
    decisions: [u64; 3],
}

const VERDICTS: [&str; 3] = ["pass", "warn", "deny"];
const DECISIONS: [&str; 3] = ["allow", "warn", "deny"];

impl Tally {
    pub fn add(&mut self, policy: &Policy, e: &Evaluation, decision: &Decision) {
        if self.counts.len() < policy.rules.len() {
            self.counts.resize(policy.rules.len(), [0; 3]);
        }
        for (i, outcome) in &e.verdicts {
            let slot = match outcome {
                Outcome::Pass => 0,
                Outcome::Violated(_) => match policy.rules[*i].mode {
                    Mode::Warn => 1,
                    Mode::Deny => 2,
                },
                Outcome::NotApplicable | Outcome::Pending => continue,
            };
            self.counts[*i][slot] += 1;
        }
        let d = match decision {
            Decision::Allow => 0,
            Decision::Warn(_) => 1,
            Decision::Deny(_) => 2,
        };
        self.decisions[d] += 1;
    }

    /// (rule id, `pass`|`warn`|`deny`, count) for every non-zero count. `policy` must be
    /// the one the tally was taken with.
    pub fn rules<'p>(&self, policy: &'p Policy) -> Vec<(&'p str, &'static str, u64)> {
        let mut out = Vec::new();
        for (i, counts) in self.counts.iter().enumerate() {
            for (slot, n) in counts.iter().enumerate() {
                if *n > 0 {
                    out.push((policy.rules[i].id.as_str(), VERDICTS[slot], *n));
                }
            }
        }
        out
    }

    /// (`allow`|`warn`|`deny`, count) for every non-zero count.
    pub fn decisions(&self) -> Vec<(&'static str, u64)> {
        DECISIONS
            .iter()
            .zip(self.decisions)
            .filter(|(_, n)| *n > 0)
            .map(|(d, n)| (*d, n))
            .collect()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Pass => f.write_str("pass"),
            Outcome::NotApplicable => f.write_str("not applicable"),
            Outcome::Violated(why) => write!(f, "violated: {why}"),
            Outcome::Pending => f.write_str("pending"),
        }
    }
}

#[cfg(test)]
mod tests;
