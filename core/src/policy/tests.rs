use super::*;
use crate::envelope::IN_TOTO_PAYLOAD_TYPE;

const H: &str = "abababababababababababababababababababababababababababababababab";

fn statement(json: serde_json::Value) -> Statement {
    Statement::parse(&serde_json::to_vec(&json).unwrap()).unwrap()
}

fn slsa(subjects: serde_json::Value, predicate: serde_json::Value) -> Statement {
    statement(serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subjects,
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": predicate,
    }))
}

fn one_subject(name: &str) -> serde_json::Value {
    serde_json::json!([{"name": name, "digest": {"sha256": "ab".repeat(32)}}])
}

fn candidate<'a>(producer: &'a str, st: Option<&'a Statement>) -> Candidate<'a> {
    Candidate {
        producer,
        payload_type: IN_TOTO_PAYLOAD_TYPE,
        envelope_bytes: 500,
        statement: st,
        valid_signatures: 1,
    }
}

fn rule(kind_and_settings: &str, mode: &str) -> Policy {
    Policy::parse(&format!(
        "[[rule]]\nid = \"r\"\nmode = \"{mode}\"\n{kind_and_settings}\n"
    ))
    .unwrap()
}

fn decide(p: &Policy, c: &Candidate<'_>) -> Decision {
    let mut e = p.evaluate(c);
    RateLimiter::new().settle(p, c.producer, &mut e, 0);
    p.decide(&e)
}

fn denied_detail(d: Decision) -> String {
    match d {
        Decision::Deny(r) => {
            assert_eq!(r.code, RejectionCode::PolicyDenied);
            r.detail
        }
        other => panic!("expected a deny, got {other:?}"),
    }
}

#[test]
fn builtin_policy_compiles_and_has_a_version() {
    let p = Policy::builtin();
    assert_eq!(p.version(), version_of(BUILTIN_POLICY.as_bytes()));
    assert!(p.version().starts_with("sha256:") && p.version().len() == 7 + 64);
    assert_eq!(p.rules().len(), 1);
}

#[test]
fn every_kind_in_deny_and_warn_mode() {
    let ok = slsa(
        one_subject("pkg:oci/app"),
        serde_json::json!({"builder": "x"}),
    );
    let many = slsa(
        serde_json::json!([
            {"name": "a", "digest": {"sha256": H}},
            {"name": "b", "digest": {"sha256": H}},
            {"name": "c", "digest": {"sha256": H}}
        ]),
        serde_json::json!({}),
    );
    let sha1 = slsa(
        serde_json::json!([{"name": "pkg:oci/app", "digest": {"sha256": H, "sha1": "cd".repeat(20)}}]),
        serde_json::json!({}),
    );
    let spdx = statement(serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": one_subject("pkg:oci/app"),
        "predicateType": "https://spdx.dev/Document",
        "predicate": {},
    }));
    let cases: Vec<(&str, Candidate<'_>, Candidate<'_>)> = vec![
        (
            "kind = \"payload_types\"\nallow = [\"application/vnd.in-toto+json\"]",
            candidate("p", Some(&ok)),
            Candidate {
                payload_type: "text/plain",
                statement: None,
                ..candidate("p", None)
            },
        ),
        (
            "kind = \"predicate_types\"\nallow = [\"https://slsa.dev/*\"]",
            candidate("p", Some(&ok)),
            candidate("p", Some(&spdx)),
        ),
        (
            "kind = \"subject_names\"\nallow = [\"pkg:oci/*\"]",
            candidate("p", Some(&ok)),
            candidate("p", Some(&many)),
        ),
        (
            "kind = \"digest_algorithms\"\nrequire = [\"sha256\"]\nforbid = [\"sha1\", \"md5\"]",
            candidate("p", Some(&ok)),
            candidate("p", Some(&sha1)),
        ),
        (
            "kind = \"max_subjects\"\nmax = 2",
            candidate("p", Some(&ok)),
            candidate("p", Some(&many)),
        ),
        (
            "kind = \"max_envelope_bytes\"\nmax = 1000",
            candidate("p", Some(&ok)),
            Candidate {
                envelope_bytes: 1001,
                ..candidate("p", Some(&ok))
            },
        ),
        (
            "kind = \"min_signatures\"\nmin = 2",
            Candidate {
                valid_signatures: 2,
                ..candidate("p", Some(&ok))
            },
            candidate("p", Some(&ok)),
        ),
        (
            "kind = \"predicate_schema\"\npredicate_types = [\"https://slsa.dev/provenance/v1\"]\nschema = '{\"type\": \"object\", \"required\": [\"builder\"]}'",
            candidate("p", Some(&ok)),
            candidate("p", Some(&many)),
        ),
    ];
    for (settings, pass, fail) in cases {
        let deny = rule(settings, "deny");
        assert_eq!(decide(&deny, &pass), Decision::Allow, "{settings}");
        let detail = denied_detail(decide(&deny, &fail));
        assert!(detail.starts_with("rule r ("), "{settings}: {detail}");
        let warn = rule(settings, "warn");
        match decide(&warn, &fail) {
            Decision::Warn(w) => assert!(w.len() == 1 && w[0].starts_with("r: "), "{w:?}"),
            other => panic!("{settings}: expected a warning, got {other:?}"),
        }
    }
}

#[test]
fn statement_rules_do_not_apply_to_opaque_payloads() {
    let p = rule("kind = \"max_subjects\"\nmax = 1", "deny");
    let c = Candidate {
        payload_type: "text/plain",
        ..candidate("p", None)
    };
    assert_eq!(p.evaluate(&c).verdicts, vec![(0, Outcome::NotApplicable)]);
    assert_eq!(decide(&p, &c), Decision::Allow);
}

#[test]
fn schema_violation_names_the_path() {
    let p = rule(
        "kind = \"predicate_schema\"\npredicate_types = [\"https://slsa.dev/*\"]\nschema = '{\"type\": \"object\", \"properties\": {\"n\": {\"type\": \"integer\"}}}'",
        "deny",
    );
    let st = slsa(one_subject("x"), serde_json::json!({"n": "seven"}));
    let detail = denied_detail(decide(&p, &candidate("p", Some(&st))));
    assert!(detail.contains("/n"), "{detail}");
}

#[test]
fn producers_replace_add_and_disable_rules() {
    let p = Policy::parse(
        r#"
[[rule]]
id = "subjects"
kind = "max_subjects"
mode = "deny"
max = 1

[[rule]]
id = "sigs"
kind = "min_signatures"
mode = "deny"
min = 2

[producers.legacy]
disable = ["sigs"]

[[producers.legacy.rule]]
id = "subjects"
kind = "max_subjects"
mode = "warn"
max = 1

[[producers.legacy.rule]]
id = "size"
kind = "max_envelope_bytes"
mode = "deny"
max = 10
"#,
    )
    .unwrap();
    let st = slsa(
        serde_json::json!([{"name": "a", "digest": {"sha256": H}}, {"name": "b", "digest": {"sha256": H}}]),
        serde_json::json!({}),
    );
    // Everyone else: both global rules deny; the first is named, the other counted.
    let detail = denied_detail(decide(&p, &candidate("other", Some(&st))));
    assert!(
        detail.starts_with("rule subjects (max_subjects)"),
        "{detail}"
    );
    assert!(detail.ends_with("also denied by sigs"), "{detail}");
    // legacy: subjects only warns, sigs is off, size is added.
    let ids: Vec<&str> = p
        .rules_for("legacy")
        .iter()
        .map(|&i| p.rule(i).id.as_str())
        .collect();
    assert_eq!(ids, ["subjects", "size"]);
    let small = Candidate {
        envelope_bytes: 10,
        ..candidate("legacy", Some(&st))
    };
    assert!(matches!(decide(&p, &small), Decision::Warn(_)));
    let big = Candidate {
        envelope_bytes: 11,
        ..candidate("legacy", Some(&st))
    };
    assert!(denied_detail(decide(&p, &big)).starts_with("rule size"));
    assert_eq!(p.producers_with_overrides(), ["legacy"]);
}

#[test]
fn problems_are_reported_with_their_lines() {
    let text = r#"[[rule]]
id = "a"
kind = "max_subjects"
mode = "deny"
max = 0

[[rule]]
id = "b"
kind = "no_such_kind"
mode = "deny"

[[rule]]
id = "c"
kind = "min_signatures"
mode = "block"
min = 1
allow = ["x"]

[[rule]]
id = "a"
kind = "max_subjects"
mode = "deny"
max = 3

[[rule]]
id = "d"
kind = "predicate_schema"
mode = "deny"
predicate_types = ["x"]
schema = '{"type": '

[producers.legacy]
disable = ["zzz"]
"#;
    let err = Policy::parse(text).unwrap_err();
    let PolicyError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [1, 7, 12, 12, 19, 25, 32], "{err}");
    let text = err.to_string();
    for needle in [
        "`max` must be at least 1",
        "unknown kind \"no_such_kind\"",
        "mode \"block\"",
        "`allow` does not apply to kind min_signatures",
        "already used on line 1",
        "schema: not JSON",
        "disables rule \"zzz\"",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn toml_errors_and_unknown_fields_carry_line_and_column() {
    let err = Policy::parse(
        "[[rule]]\nid = \"a\"\nkind = \"max_subjects\"\nmode = \"deny\"\nmax = 1\nmaximum = 2\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 6"), "{err}");
    assert!(err.contains("maximum"), "{err}");
    let err = Policy::parse("[[rule]\n").unwrap_err().to_string();
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn rate_limit_is_a_token_bucket_per_producer() {
    let p = rule("kind = \"rate_limit\"\nrate = 10.0\nburst = 3", "deny");
    let st = slsa(one_subject("x"), serde_json::json!({}));
    let mut limiter = RateLimiter::new();
    let mut at = |producer: &str, now: i64| {
        let c = candidate(producer, Some(&st));
        let mut e = p.evaluate(&c);
        limiter.settle(&p, producer, &mut e, now);
        p.decide(&e)
    };
    for _ in 0..3 {
        assert_eq!(at("a", 0), Decision::Allow);
    }
    assert!(denied_detail(at("a", 0)).contains("rate limit of 10 envelopes/s"));
    // Another producer has its own bucket.
    assert_eq!(at("b", 0), Decision::Allow);
    // 100 ms at 10/s refills one token.
    assert_eq!(at("a", 100), Decision::Allow);
    assert!(matches!(at("a", 100), Decision::Deny(_)));
}

#[test]
fn a_denied_envelope_takes_no_token() {
    let p = Policy::parse(
        "[[rule]]\nid = \"size\"\nkind = \"max_envelope_bytes\"\nmode = \"deny\"\nmax = 10\n\n[[rule]]\nid = \"rate\"\nkind = \"rate_limit\"\nmode = \"deny\"\nrate = 1.0\nburst = 1\n",
    )
    .unwrap();
    let mut limiter = RateLimiter::new();
    let big = Candidate {
        envelope_bytes: 11,
        ..candidate("a", None)
    };
    let mut e = p.evaluate(&big);
    limiter.settle(&p, "a", &mut e, 0);
    assert!(denied_detail(p.decide(&e)).starts_with("rule size"));
    let small = Candidate {
        envelope_bytes: 5,
        ..candidate("a", None)
    };
    let mut e = p.evaluate(&small);
    limiter.settle(&p, "a", &mut e, 0);
    assert_eq!(p.decide(&e), Decision::Allow);
}

#[test]
fn tally_counts_rules_and_decisions() {
    let p = rule("kind = \"max_envelope_bytes\"\nmax = 10", "warn");
    let mut t = Tally::default();
    for size in [5, 50, 50] {
        let c = Candidate {
            envelope_bytes: size,
            ..candidate("a", None)
        };
        let e = p.evaluate(&c);
        t.add(&p, &e, &p.decide(&e));
    }
    assert_eq!(t.rules(&p), vec![("r", "pass", 1), ("r", "warn", 2)]);
    assert_eq!(t.decisions(), vec![("allow", 1), ("warn", 2)]);
}
