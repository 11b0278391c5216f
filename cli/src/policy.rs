//! `acectl policy check` and `acectl policy test`: the writer's policy, off line.
//!
//! `test` runs the same core functions as the writer (envelope and statement parsing,
//! signature counting, [`Policy::evaluate`], rate-limit settling, [`Policy::decide`]) on one
//! envelope file, so a policy change can be tried before it is deployed.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ace_core::envelope::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use ace_core::keys::{verify_signers, RegisteredKey};
use ace_core::policy::{Candidate, Decision, Evaluation, Outcome, Policy, RateLimiter};
use ace_core::rejection::Rejection;
use ace_core::statement::Statement;
use clap::{Args, Subcommand};

use crate::keyfile;

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Validate a policy file. Prints its version and rules; exits 1 with every problem
    /// (and its line) when the file is refused.
    Check { file: PathBuf },
    /// Dry run: the decision the policy gives one envelope, and every rule's verdict.
    /// Exits 0 for allow or warn, 3 for deny (or an envelope the writer would reject
    /// before the policy), 1 when it cannot run.
    Test(TestArgs),
}

#[derive(Args)]
pub struct TestArgs {
    /// The policy file.
    pub file: PathBuf,
    /// The DSSE envelope file, as it would be published.
    pub envelope: PathBuf,
    /// The publishing producer: selects its `[producers.<id>]` section. Without it the
    /// global rules apply.
    #[arg(long)]
    pub producer: Option<String>,
    /// A public key (64 hex) of the producer, in validity. Repeat for several. Given any,
    /// signatures are verified and `min_signatures` counts the distinct keys that verify;
    /// given none, signatures are not checked and every distinct keyid counts.
    #[arg(long = "public-key")]
    pub public_keys: Vec<String>,
}

pub fn run(cmd: PolicyCmd) -> anyhow::Result<i32> {
    match cmd {
        PolicyCmd::Check { file } => Ok(check(&file)),
        PolicyCmd::Test(a) => test(&a),
    }
}

fn check(file: &Path) -> i32 {
    match Policy::load(file) {
        Ok(p) => {
            print!("{}", describe(&p));
            0
        }
        Err(e) => {
            eprintln!("acectl: {e}");
            1
        }
    }
}

/// A summary of an accepted policy file.
pub fn describe(p: &Policy) -> String {
    let mut s = format!("ok: version {}, {} rules\n", p.version(), p.rules().len());
    for r in p.rules() {
        let scope = match &r.producer {
            Some(producer) => format!(" [producer {producer}]"),
            None => String::new(),
        };
        let _ = writeln!(
            s,
            "  line {:>3}  {} ({}, {}){scope}",
            r.line,
            r.id,
            r.check.kind(),
            r.mode.as_str()
        );
    }
    s
}

fn test(a: &TestArgs) -> anyhow::Result<i32> {
    use anyhow::Context;
    let policy = Policy::load(&a.file)?;
    let bytes = std::fs::read(&a.envelope)
        .with_context(|| format!("reading envelope file {}", a.envelope.display()))?;
    let keys = a
        .public_keys
        .iter()
        .map(|h| keyfile::parse_public_key(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let producer = a.producer.as_deref().unwrap_or("");
    let result = dry_run(
        &policy,
        &bytes,
        producer,
        &keys,
        chrono::Utc::now().timestamp_millis(),
    );
    print!("{}", report(&policy, producer, &result));
    Ok(match result {
        DryRun::Decided {
            decision: Decision::Deny(_),
            ..
        }
        | DryRun::Rejected(_) => 3,
        DryRun::Decided { .. } => 0,
    })
}

/// What the writer would do with one envelope.
#[derive(Debug)]
pub enum DryRun {
    /// Refused before the policy (not an envelope, a bad statement, a bad signature).
    Rejected(Rejection),
    Decided {
        evaluation: Evaluation,
        decision: Decision,
        /// How many signatures were counted, and whether they were verified.
        signatures: usize,
        verified: bool,
    },
}

pub fn dry_run(
    policy: &Policy,
    bytes: &[u8],
    producer: &str,
    keys: &[ed25519_dalek::VerifyingKey],
    now_ms: i64,
) -> DryRun {
    let envelope = match Envelope::parse(bytes) {
        Ok(e) => e,
        Err(r) => return DryRun::Rejected(r),
    };
    let statement = if envelope.payload_type == IN_TOTO_PAYLOAD_TYPE {
        match Statement::parse(&envelope.payload) {
            Ok(s) => Some(s),
            Err(r) => return DryRun::Rejected(r),
        }
    } else {
        None
    };
    let (signatures, verified) = if keys.is_empty() {
        let mut ids: Vec<&str> = envelope
            .signatures
            .iter()
            .map(|s| s.keyid.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        (ids.len(), false)
    } else {
        let registry: HashMap<String, RegisteredKey> = keys
            .iter()
            .map(|k| {
                let key = RegisteredKey::new(producer, *k, i64::MIN);
                (key.keyid.as_str().to_string(), key)
            })
            .collect();
        match verify_signers(&envelope, &envelope.pae(), producer, &registry, now_ms) {
            Ok(s) => (s.valid_keys, true),
            Err(r) => return DryRun::Rejected(r),
        }
    };
    let mut evaluation = policy.evaluate(&Candidate {
        producer,
        payload_type: &envelope.payload_type,
        envelope_bytes: bytes.len(),
        statement: statement.as_ref(),
        valid_signatures: signatures,
    });
    // One envelope against a fresh bucket: a rate limit passes unless it is denied anyway.
    RateLimiter::new().settle(policy, producer, &mut evaluation, now_ms);
    let decision = policy.decide(&evaluation);
    DryRun::Decided {
        evaluation,
        decision,
        signatures,
        verified,
    }
}

/// The dry run as printed: the decision first, then one line per rule.
pub fn report(policy: &Policy, producer: &str, result: &DryRun) -> String {
    let mut s = format!("policy {}\n", policy.version());
    let who = if producer.is_empty() {
        "no producer given: global rules".to_string()
    } else {
        format!("producer {producer}")
    };
    let _ = writeln!(s, "{who}");
    let (evaluation, decision, signatures, verified) = match result {
        DryRun::Rejected(r) => {
            let field = r.field.as_deref().unwrap_or("envelope");
            let _ = writeln!(
                s,
                "decision: rejected before the policy: {} ({field}): {}",
                r.code.as_str(),
                r.detail
            );
            return s;
        }
        DryRun::Decided {
            evaluation,
            decision,
            signatures,
            verified,
        } => (evaluation, decision, signatures, verified),
    };
    let _ = writeln!(
        s,
        "signatures counted: {signatures} ({})",
        if *verified {
            "distinct keys that verify"
        } else {
            "distinct keyids, NOT verified: give --public-key to verify"
        }
    );
    match decision {
        Decision::Allow => s.push_str("decision: allow\n"),
        Decision::Warn(w) => {
            let _ = writeln!(s, "decision: warn");
            for line in w {
                let _ = writeln!(s, "  warning {line}");
            }
        }
        Decision::Deny(r) => {
            let _ = writeln!(s, "decision: deny: {} {}", r.code.as_str(), r.detail);
        }
    }
    s.push_str("rules:\n");
    for (i, outcome) in &evaluation.verdicts {
        let rule = policy.rule(*i);
        let verdict = match outcome {
            Outcome::Violated(why) => format!("{}: {why}", rule.mode.as_str()),
            other => other.to_string(),
        };
        let _ = writeln!(
            s,
            "  {} ({}, {}): {verdict}",
            rule.id,
            rule.check.kind(),
            rule.mode.as_str()
        );
    }
    let applied: Vec<usize> = evaluation.verdicts.iter().map(|(i, _)| *i).collect();
    for (i, rule) in policy.rules().iter().enumerate() {
        if rule.producer.is_none() && !applied.contains(&i) {
            let _ = writeln!(
                s,
                "  {} ({}, {}): not applied to {who} (disabled or replaced in its section)",
                rule.id,
                rule.check.kind(),
                rule.mode.as_str()
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    const POLICY: &str = r#"
[[rule]]
id = "small"
kind = "max_envelope_bytes"
mode = "warn"
max = 10

[[rule]]
id = "slsa"
kind = "predicate_types"
mode = "deny"
allow = ["https://slsa.dev/*"]

[producers.two]
disable = ["small"]

[[producers.two.rule]]
id = "pair"
kind = "min_signatures"
mode = "deny"
min = 2
"#;

    fn envelope(predicate: &str, keys: &[&SigningKey]) -> Vec<u8> {
        let statement = serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "a", "digest": {"sha256": "ab".repeat(32)}}],
            "predicateType": predicate,
            "predicate": {}
        });
        let payload = serde_json::to_vec(&statement).unwrap();
        let mut env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &payload, keys[0]);
        for k in &keys[1..] {
            env.add_signature(k);
        }
        env.to_json()
    }

    #[test]
    fn every_rule_has_a_verdict_and_the_decision_comes_first() {
        let p = Policy::parse(POLICY).unwrap();
        let k = SigningKey::from_bytes(&[7; 32]);
        let r = dry_run(&p, &envelope("https://x/y", &[&k]), "one", &[], 0);
        let out = report(&p, "one", &r);
        assert!(
            out.contains("decision: deny: policy_denied rule slsa (predicate_types)"),
            "{out}"
        );
        assert!(
            out.contains("  small (max_envelope_bytes, warn): warn: "),
            "{out}"
        );
        assert!(out.contains("NOT verified"), "{out}");
        let r = dry_run(&p, &envelope("https://slsa.dev/v1", &[&k]), "one", &[], 0);
        let out = report(&p, "one", &r);
        assert!(out.contains("decision: warn\n  warning small: "), "{out}");
        assert!(
            out.contains("  slsa (predicate_types, deny): pass"),
            "{out}"
        );
    }

    #[test]
    fn a_producer_section_and_verified_keys_count() {
        let p = Policy::parse(POLICY).unwrap();
        let (a, b) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        );
        let both = envelope("https://slsa.dev/v1", &[&a, &b]);
        // Only one of the two keys is the producer's: one valid signature, denied.
        let r = dry_run(&p, &both, "two", &[a.verifying_key()], 0);
        let out = report(&p, "two", &r);
        assert!(
            out.contains("signatures counted: 1 (distinct keys that verify)"),
            "{out}"
        );
        assert!(
            out.contains("decision: deny: policy_denied rule pair"),
            "{out}"
        );
        assert!(
            out.contains("small (max_envelope_bytes, warn): not applied to producer two"),
            "{out}"
        );
        let r = dry_run(&p, &both, "two", &[a.verifying_key(), b.verifying_key()], 0);
        assert!(
            matches!(
                r,
                DryRun::Decided {
                    decision: Decision::Allow,
                    ..
                }
            ),
            "{r:?}"
        );
        // A key that does not verify is the writer's bad_signature, before the policy.
        let mut tampered = Envelope::parse(&both).unwrap();
        tampered.signatures[0].sig[0] ^= 1;
        let r = dry_run(&p, &tampered.to_json(), "two", &[a.verifying_key()], 0);
        let out = report(&p, "two", &r);
        assert!(
            out.contains("rejected before the policy: bad_signature (signatures[0])"),
            "{out}"
        );
    }

    #[test]
    fn an_envelope_that_is_not_one_is_rejected_before_the_policy() {
        let p = Policy::parse(POLICY).unwrap();
        let r = dry_run(&p, b"{\"payload\": 1}", "", &[], 0);
        let out = report(&p, "", &r);
        assert!(
            out.contains("decision: rejected before the policy: "),
            "{out}"
        );
        assert!(out.contains("no producer given: global rules"), "{out}");
    }
}
