//! The admission policy through the running writer, on the real NATS and Postgres: every
//! rule kind in deny and in warn mode, and hot reload (file change and SIGHUP).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ace_core::ack::{Ack, AckStatus};
use ace_core::envelope::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use ace_core::policy::version_of;
use ace_core::rejection::RejectionCode;
use ed25519_dalek::SigningKey;
use rand::Rng;
use sha2::{Digest, Sha256};

use super::support::*;

/// Nine rules, one of each kind. Every envelope of [`cases`] breaks exactly one of them;
/// `MODE` is replaced by "deny" or "warn".
const POLICY: &str = r#"
[[rule]]
id = "types"
kind = "payload_types"
mode = "MODE"
allow = ["application/vnd.in-toto+json"]

[[rule]]
id = "predicates"
kind = "predicate_types"
mode = "MODE"
allow = ["https://slsa.dev/*"]

[[rule]]
id = "names"
kind = "subject_names"
mode = "MODE"
allow = ["artifact-*"]

[[rule]]
id = "digests"
kind = "digest_algorithms"
mode = "MODE"
require = ["sha256"]
forbid = ["md5", "sha1"]

[[rule]]
id = "subjects"
kind = "max_subjects"
mode = "MODE"
max = 2

[[rule]]
id = "size"
kind = "max_envelope_bytes"
mode = "MODE"
max = 2000

[[rule]]
id = "slsa-shape"
kind = "predicate_schema"
mode = "MODE"
predicate_types = ["https://slsa.dev/provenance/v1"]
schema = '{"type": "object", "required": ["buildDefinition"]}'

[[producers.pair.rule]]
id = "two-signers"
kind = "min_signatures"
mode = "MODE"
min = 2

[[producers.flood.rule]]
id = "flood-rate"
kind = "rate_limit"
mode = "MODE"
rate = 0.001
burst = 1
"#;

fn hex_digest(tag: &str) -> String {
    hex::encode(Sha256::digest(tag.as_bytes()))
}

fn stmt(
    subjects: serde_json::Value,
    predicate_type: &str,
    predicate: serde_json::Value,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subjects,
        "predicateType": predicate_type,
        "predicate": predicate,
    }))
    .unwrap()
}

fn subject(name: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "digest": {"sha256": hex_digest(name)}})
}

const SLSA: &str = "https://slsa.dev/provenance/v1";

fn good_predicate() -> serde_json::Value {
    serde_json::json!({"buildDefinition": {"buildType": "https://example.com/build@v1"}})
}

struct Case {
    producer: &'static str,
    raw: Vec<u8>,
    /// The one rule it breaks; None = passes every rule.
    rule: Option<&'static str>,
}

async fn ledger_with_producers() -> (Ledger, SigningKey) {
    let mut l = Ledger::new().await;
    for p in ["acme", "pair", "flood"] {
        l.add_producer(p).await;
    }
    let second = SigningKey::from_bytes(&rand::thread_rng().gen());
    register_key(
        &l.db.admin().await,
        "pair",
        &second,
        "now() - interval '1 hour'",
        "NULL",
    )
    .await;
    (l, second)
}

fn cases(l: &Ledger, pair_second: &SigningKey, tag: &str) -> Vec<Case> {
    let acme = l.key("acme");
    let ok = |n: &str| {
        stmt(
            serde_json::json!([subject(&format!("artifact-{tag}-{n}"))]),
            SLSA,
            good_predicate(),
        )
    };
    let mut two_signed = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &ok("pair-2"), l.key("pair"));
    two_signed.add_signature(pair_second);
    vec![
        Case {
            producer: "acme",
            raw: sign(&ok("plain"), acme),
            rule: None,
        },
        Case {
            producer: "acme",
            raw: Envelope::sign("text/plain", format!("opaque {tag}").as_bytes(), acme).to_json(),
            rule: Some("types"),
        },
        Case {
            producer: "acme",
            raw: sign(
                &stmt(
                    serde_json::json!([subject(&format!("artifact-{tag}-p"))]),
                    "https://example.com/unvetted/v1",
                    serde_json::json!({}),
                ),
                acme,
            ),
            rule: Some("predicates"),
        },
        Case {
            producer: "acme",
            raw: sign(
                &stmt(
                    serde_json::json!([subject(&format!("other-{tag}"))]),
                    SLSA,
                    good_predicate(),
                ),
                acme,
            ),
            rule: Some("names"),
        },
        Case {
            producer: "acme",
            raw: sign(
                &stmt(
                    serde_json::json!([{"name": format!("artifact-{tag}-d"), "digest": {"sha256": hex_digest(tag), "sha1": hex_digest(tag)[..40].to_string()}}]),
                    SLSA,
                    good_predicate(),
                ),
                acme,
            ),
            rule: Some("digests"),
        },
        Case {
            producer: "acme",
            raw: sign(
                &stmt(
                    serde_json::json!([
                        subject(&format!("artifact-{tag}-1")),
                        subject(&format!("artifact-{tag}-2")),
                        subject(&format!("artifact-{tag}-3"))
                    ]),
                    SLSA,
                    good_predicate(),
                ),
                acme,
            ),
            rule: Some("subjects"),
        },
        Case {
            producer: "acme",
            raw: sign(
                &stmt(
                    serde_json::json!([subject(&format!("artifact-{tag}-big"))]),
                    SLSA,
                    serde_json::json!({"buildDefinition": {}, "pad": "z".repeat(2000)}),
                ),
                acme,
            ),
            rule: Some("size"),
        },
        Case {
            producer: "acme",
            raw: sign(
                &stmt(
                    serde_json::json!([subject(&format!("artifact-{tag}-s"))]),
                    SLSA,
                    serde_json::json!({"builder": "x"}),
                ),
                acme,
            ),
            rule: Some("slsa-shape"),
        },
        Case {
            producer: "pair",
            raw: sign(&ok("pair-1"), l.key("pair")),
            rule: Some("two-signers"),
        },
        Case {
            producer: "pair",
            raw: two_signed.to_json(),
            rule: None,
        },
        // The first of flood's two envelopes takes its bucket's only token.
        Case {
            producer: "flood",
            raw: sign(&ok("flood-1"), l.key("flood")),
            rule: None,
        },
        Case {
            producer: "flood",
            raw: sign(&ok("flood-2"), l.key("flood")),
            rule: Some("flood-rate"),
        },
    ]
}

/// Publish every case, in order, and return each one's ack.
async fn publish_cases(l: &Ledger, cases: &[Case]) -> Vec<Ack> {
    let mut acks = l.ack_stream().await;
    let mut order = HashMap::new();
    for (i, c) in cases.iter().enumerate() {
        order.insert(l.publish_raw(c.producer, c.raw.clone(), None).await, i);
    }
    let mut got = collect_acks(&mut acks, cases.len(), Duration::from_secs(30)).await;
    got.sort_by_key(|a| order[&a.stream_seq]);
    got
}

fn policy_text(mode: &str) -> String {
    POLICY.replace("MODE", mode)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_kind_in_deny_mode_sends_its_envelope_to_the_dlq_naming_the_rule() {
    let (l, second) = ledger_with_producers().await;
    let text = policy_text("deny");
    let mut cfg = l.writer_config();
    cfg.allowed_payload_types = vec![IN_TOTO_PAYLOAD_TYPE.into(), "text/plain".into()];
    cfg.policy_file = Some(l.write_policy(&text));
    let w = l.spawn_writer(cfg);
    let cases = cases(&l, &second, "deny");
    let acks = publish_cases(&l, &cases).await;
    let admin = l.db.admin().await;
    for (c, a) in cases.iter().zip(&acks) {
        match c.rule {
            None => {
                assert_eq!(a.status, AckStatus::Accepted, "{a:?}");
                assert!(a.warnings.is_empty(), "{a:?}");
            }
            Some(rule) => {
                assert_eq!(a.status, AckStatus::Rejected, "{rule}: {a:?}");
                let r = a.reason.as_ref().unwrap();
                assert_eq!(r.code, RejectionCode::PolicyDenied, "{rule}: {r:?}");
                assert!(
                    r.detail.starts_with(&format!("rule {rule} (")),
                    "{rule}: {}",
                    r.detail
                );
                assert!(
                    !r.detail.contains("also denied"),
                    "{rule} alone: {}",
                    r.detail
                );
                let row = admin
                    .query_one(
                        "SELECT code, detail FROM dlq_items WHERE stream_seq = $1",
                        &[&(a.stream_seq as i64)],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{rule}: no DLQ row: {e}"));
                assert_eq!(row.get::<_, String>(0), "policy_denied");
                assert_eq!(row.get::<_, String>(1), r.detail);
            }
        }
    }
    // The admitted entries carry the version that admitted them, and its text is kept.
    let version = version_of(text.as_bytes());
    let rows = admin
        .query(
            "SELECT DISTINCT policy_version FROM ledger_entries WHERE producer <> '_ledger'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].get::<_, Option<String>>(0).as_deref(),
        Some(version.as_str())
    );
    let source: String = admin
        .query_one(
            "SELECT source FROM ledger_policies WHERE version = $1",
            &[&version],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(source, text);
    let report = check_log(&admin, &l.signer).await;
    assert_eq!(
        report.entries as usize,
        cases.iter().filter(|c| c.rule.is_none()).count()
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_kind_in_warn_mode_admits_with_the_warning_in_ack_and_entry() {
    let (l, second) = ledger_with_producers().await;
    let mut cfg = l.writer_config();
    cfg.allowed_payload_types = vec![IN_TOTO_PAYLOAD_TYPE.into(), "text/plain".into()];
    cfg.policy_file = Some(l.write_policy(&policy_text("warn")));
    let listen = free_port();
    cfg.listen = format!("127.0.0.1:{listen}").parse().unwrap();
    let w = l.spawn_writer(cfg);
    let cases = cases(&l, &second, "warn");
    let acks = publish_cases(&l, &cases).await;
    let admin = l.db.admin().await;
    for (c, a) in cases.iter().zip(&acks) {
        assert_eq!(a.status, AckStatus::Accepted, "{a:?}");
        let stored: serde_json::Value = admin
            .query_one(
                "SELECT warnings FROM ledger_entries WHERE idx = $1",
                &[&(a.index.unwrap() as i64)],
            )
            .await
            .unwrap()
            .get(0);
        match c.rule {
            None => {
                assert!(a.warnings.is_empty(), "{a:?}");
                assert_eq!(stored, serde_json::json!([]));
            }
            Some(rule) => {
                assert_eq!(a.warnings.len(), 1, "{rule}: {a:?}");
                assert!(a.warnings[0].starts_with(&format!("{rule}: ")), "{a:?}");
                assert_eq!(stored, serde_json::json!(a.warnings), "{rule}");
            }
        }
    }
    let dlq: i64 = admin
        .query_one("SELECT count(*) FROM dlq_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dlq, 0);
    // Decisions by rule and outcome are in /metrics.
    let metrics = scrape(listen).await;
    for rule in [
        "types",
        "predicates",
        "names",
        "digests",
        "subjects",
        "size",
        "slsa-shape",
        "two-signers",
        "flood-rate",
    ] {
        let line =
            format!("ace_writer_policy_rule_verdicts_total{{rule=\"{rule}\",verdict=\"warn\"}} 1");
        assert!(metrics.contains(&line), "missing {line}");
    }
    assert!(
        metrics.contains("ace_writer_policy_decisions_total{outcome=\"warn\"} 9"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ace_writer_policy_decisions_total{outcome=\"allow\"} 3"),
        "{metrics}"
    );
    w.stop().await;
}

/// GET /metrics from a writer's health port.
pub async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

async fn wait_for_metric(port: u16, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = scrape(port).await;
        if m.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never appeared in /metrics:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const ONLY_SLSA: &str = "[[rule]]\nid = \"slsa-only\"\nkind = \"predicate_types\"\nmode = \"deny\"\nallow = [\"https://slsa.dev/*\"]\n";
const ANY_PREDICATE: &str =
    "[[rule]]\nid = \"subjects\"\nkind = \"max_subjects\"\nmode = \"deny\"\nmax = 10\n";
/// The rule on line 1 names an unknown kind.
const BROKEN: &str = "[[rule]]\nid = \"x\"\nmode = \"deny\"\nkind = \"no_such_kind\"\n";

fn unvetted(n: u64) -> Vec<u8> {
    stmt(
        serde_json::json!([subject(&format!("artifact-unvetted-{n}"))]),
        "https://example.com/unvetted/v1",
        serde_json::json!({}),
    )
}

async fn publish_one(l: &Ledger, acks: &mut async_nats::Subscriber, raw: Vec<u8>) -> Ack {
    l.publish_raw("acme", raw, None).await;
    collect_acks(acks, 1, Duration::from_secs(30))
        .await
        .remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_policy_file_applies_to_the_next_batch_and_a_broken_one_is_refused() {
    let mut l = Ledger::new().await;
    l.add_producer("acme").await;
    let mut cfg = l.writer_config();
    let path = l.write_policy(ONLY_SLSA);
    cfg.policy_file = Some(path);
    cfg.policy_poll = Duration::from_millis(50);
    let listen = free_port();
    cfg.listen = format!("127.0.0.1:{listen}").parse().unwrap();
    let w = l.spawn_writer(cfg);
    let mut acks = l.ack_stream().await;
    let key = l.key("acme").clone();

    let a = publish_one(&l, &mut acks, sign(&unvetted(1), &key)).await;
    assert_eq!(a.status, AckStatus::Rejected, "{a:?}");

    l.write_policy(ANY_PREDICATE);
    let v2 = version_of(ANY_PREDICATE.as_bytes());
    wait_for_metric(
        listen,
        &format!("ace_writer_policy_info{{version=\"{v2}\"}} 1"),
    )
    .await;
    let a = publish_one(&l, &mut acks, sign(&unvetted(2), &key)).await;
    assert_eq!(a.status, AckStatus::Accepted, "{a:?}");

    l.write_policy(BROKEN);
    wait_for_metric(listen, "ace_writer_policy_file_refused 1").await;
    wait_for_metric(
        listen,
        "ace_writer_policy_reloads_total{result=\"refused\"} 1",
    )
    .await;
    let a3 = publish_one(&l, &mut acks, sign(&unvetted(3), &key)).await;
    assert_eq!(
        a3.status,
        AckStatus::Accepted,
        "the old policy stays in force: {a3:?}"
    );
    let admin = l.db.admin().await;
    let version: Option<String> = admin
        .query_one(
            "SELECT policy_version FROM ledger_entries WHERE idx = $1",
            &[&(a3.index.unwrap() as i64)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, Some(v2.clone()));

    // Fixed again: the refusal clears.
    l.write_policy(ONLY_SLSA);
    wait_for_metric(listen, "ace_writer_policy_file_refused 0").await;
    let a = publish_one(&l, &mut acks, sign(&unvetted(4), &key)).await;
    assert_eq!(a.status, AckStatus::Rejected, "{a:?}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_policy_and_a_refusal_is_logged_with_its_line() {
    let mut l = Ledger::new().await;
    l.add_producer("acme").await;
    let path = l.write_policy(ONLY_SLSA);
    let log = l.dir.join("writer.log");
    let port = free_port();
    let w = l.spawn_writer_process_with(
        port,
        &[
            ("ACE_POLICY_FILE", path.display().to_string()),
            // SIGHUP only: no polling.
            ("ACE_POLICY_POLL_MS", "0".into()),
            ("ACE_LOG", "info".into()),
        ],
        Some(&log),
    );
    let mut acks = l.ack_stream().await;
    let key = l.key("acme").clone();
    let a = publish_one(&l, &mut acks, sign(&unvetted(1), &key)).await;
    assert_eq!(a.status, AckStatus::Rejected, "{a:?}");

    l.write_policy(BROKEN);
    w.signal("HUP");
    wait_for_metric(port, "ace_writer_policy_file_refused 1").await;
    // The metric is set just before the line is logged.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while Instant::now() < deadline && !text.contains("policy file refused") {
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = std::fs::read_to_string(&log).unwrap();
    }
    assert!(text.contains("policy file refused"), "{text}");
    assert!(
        text.contains("line 1: rule \"x\""),
        "the refusal names the line: {text}"
    );
    assert!(text.contains("no_such_kind"), "{text}");
    let a = publish_one(&l, &mut acks, sign(&unvetted(2), &key)).await;
    assert_eq!(a.status, AckStatus::Rejected, "old policy in force: {a:?}");

    l.write_policy(ANY_PREDICATE);
    w.signal("HUP");
    let v2 = version_of(ANY_PREDICATE.as_bytes());
    wait_for_metric(
        port,
        &format!("ace_writer_policy_info{{version=\"{v2}\"}} 1"),
    )
    .await;
    let a = publish_one(&l, &mut acks, sign(&unvetted(3), &key)).await;
    assert_eq!(a.status, AckStatus::Accepted, "{a:?}");
    w.signal("TERM");
    assert!(w.wait().success());
}
