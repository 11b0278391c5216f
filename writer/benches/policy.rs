//! What the admission policy costs the writer, with the built-in one-rule policy against a
//! 20-rule policy touching every rule kind, in two measures:
//! - the writer's batch as it runs it, minus NATS: parse, verify signatures in parallel,
//!   evaluate the policy, settle rate limits, decide, then dedupe, plan and write the block
//!   in one Postgres transaction and commit (a fresh test database on the local server);
//! - the CPU stage alone (up to the decisions), where the policy's share is largest.
//!
//! `cargo bench -p ace-writer --bench policy` prints medians and ratios. Every batch is
//! 1000 fresh envelopes, as the writer sees them.
//!
//! Rounds alternate the two policies (and which runs first) so both see the same noise.

use std::time::{Duration, Instant};

use ace_core::checkpoint::NoteSigner;
use ace_core::envelope::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use ace_core::keys::RegisteredKey;
use ace_core::nats::Names;
use ace_core::policy::{Candidate, Decision, Policy, ProducerStatus, RateLimiter};
use ace_core::statement::Statement;
use ace_writer::batch::{self, LogState};
use ace_writer::store;
use ace_writer::verify::{self, Incoming, Registry, Verdict};
use ed25519_dalek::SigningKey;

/// As in the writer's binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 1000;
const PRODUCERS: usize = 8;
const ROUNDS: usize = 41;

const POLICY_20: &str = r#"
[[rule]]
id = "in-toto-only"
kind = "payload_types"
mode = "deny"
allow = ["application/vnd.in-toto+json"]

[[rule]]
id = "known-predicates"
kind = "predicate_types"
mode = "deny"
allow = ["https://slsa.dev/provenance/v1", "https://spdx.dev/*", "https://cyclonedx.org/bom/*"]

[[rule]]
id = "slsa-preferred"
kind = "predicate_types"
mode = "warn"
allow = ["https://slsa.dev/*"]

[[rule]]
id = "artifact-names"
kind = "subject_names"
mode = "deny"
allow = ["pkg:oci/*", "pkg:cargo/*", "*.tar.gz"]

[[rule]]
id = "no-tmp-names"
kind = "subject_names"
mode = "warn"
allow = ["pkg:*", "*.tar.gz", "dist/**"]

[[rule]]
id = "sha256-required"
kind = "digest_algorithms"
mode = "deny"
require = ["sha256"]

[[rule]]
id = "weak-digests"
kind = "digest_algorithms"
mode = "deny"
forbid = ["md5", "sha1"]

[[rule]]
id = "sha512-wanted"
kind = "digest_algorithms"
mode = "warn"
forbid = ["sha224"]

[[rule]]
id = "max-subjects"
kind = "max_subjects"
mode = "deny"
max = 1024

[[rule]]
id = "few-subjects"
kind = "max_subjects"
mode = "warn"
max = 64

[[rule]]
id = "envelope-size"
kind = "max_envelope_bytes"
mode = "deny"
max = 1048576

[[rule]]
id = "envelope-size-warn"
kind = "max_envelope_bytes"
mode = "warn"
max = 65536

[[rule]]
id = "one-signer"
kind = "min_signatures"
mode = "deny"
min = 1

[[rule]]
id = "slsa-shape"
kind = "predicate_schema"
mode = "deny"
predicate_types = ["https://slsa.dev/provenance/v1"]
schema = '''
{"type": "object", "required": ["buildDefinition", "runDetails"],
 "properties": {
   "buildDefinition": {"type": "object", "required": ["buildType", "externalParameters"],
     "properties": {"buildType": {"type": "string", "minLength": 1}}},
   "runDetails": {"type": "object", "required": ["builder"],
     "properties": {"builder": {"type": "object", "required": ["id"],
       "properties": {"id": {"type": "string", "pattern": "^https://"}}}}}}}
'''

[[rule]]
id = "slsa-metadata"
kind = "predicate_schema"
mode = "warn"
predicate_types = ["https://slsa.dev/provenance/v1"]
schema = '{"type": "object", "properties": {"runDetails": {"type": "object", "required": ["metadata"]}}}'

[[rule]]
id = "spdx-shape"
kind = "predicate_schema"
mode = "deny"
predicate_types = ["https://spdx.dev/Document"]
schema = '{"type": "object", "required": ["spdxVersion"]}'

[[rule]]
id = "rate"
kind = "rate_limit"
mode = "deny"
rate = 1000000.0
burst = 1000000

[[rule]]
id = "rate-warn"
kind = "rate_limit"
mode = "warn"
rate = 500000.0
burst = 500000

[[rule]]
id = "cyclonedx-shape"
kind = "predicate_schema"
mode = "deny"
predicate_types = ["https://cyclonedx.org/bom/*"]
schema = '{"type": "object", "required": ["bomFormat"]}'

[[rule]]
id = "oci-digests"
kind = "digest_algorithms"
mode = "warn"
forbid = ["sha384"]

[producers.p0]
disable = ["few-subjects"]
"#;

struct Fixture {
    names: Names,
    allowed: Vec<String>,
    /// `batches` batches of fresh envelopes (the database would dedupe a repeat).
    batches: Vec<Vec<Incoming>>,
    registry: Registry,
    keys: Vec<SigningKey>,
}

fn fixture(batches: usize) -> Fixture {
    let names = Names::new("bench").expect("prefix");
    let mut registry = Registry::default();
    let keys: Vec<SigningKey> = (0..PRODUCERS)
        .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        let producer = format!("p{i}");
        registry
            .producers
            .insert(producer.clone(), ProducerStatus::Active);
        let key = RegisteredKey::new(producer, k.verifying_key(), 0);
        registry.keys.insert(key.keyid.as_str().to_string(), key);
    }
    let make = |b: usize| -> Vec<Incoming> {
        (0..BATCH)
        .map(|i| {
            let n = b * BATCH + i;
            let p = n % PRODUCERS;
            let statement = serde_json::json!({
                "_type": "https://in-toto.io/Statement/v1",
                "subject": (0..3).map(|s| serde_json::json!({
                    "name": format!("pkg:oci/service-{p}/image-{n}-{s}"),
                    "digest": {"sha256": format!("{:064x}", n * 3 + s), "sha512": format!("{:0128x}", n)}
                })).collect::<Vec<_>>(),
                "predicateType": "https://slsa.dev/provenance/v1",
                "predicate": {
                    "buildDefinition": {
                        "buildType": "https://example.com/build/v1",
                        "externalParameters": {"ref": format!("refs/tags/v{n}"), "repo": "https://git.example.com/x"},
                        "resolvedDependencies": [{"uri": "git+https://git.example.com/x", "digest": {"sha1": "ab".repeat(20)}}]
                    },
                    "runDetails": {
                        "builder": {"id": "https://ci.example.com/builder"},
                        "metadata": {"invocationId": format!("run-{n}")}
                    }
                }
            });
            let payload = serde_json::to_vec(&statement).expect("json");
            let env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &payload, &keys[p]);
            Incoming {
                subject: names.intake_subject(&format!("p{p}")),
                payload: env.to_json().into(),
                stream_seq: n as u64 + 1,
                stored_at: chrono::DateTime::UNIX_EPOCH,
                delivered: 1,
                published_at_ms: None,
                headers: serde_json::Value::Null,
            }
        })
        .collect()
    };
    let batches = {
        use rayon::prelude::*;
        (0..batches).into_par_iter().map(make).collect()
    };
    Fixture {
        names,
        allowed: vec![IN_TOTO_PAYLOAD_TYPE.to_string()],
        batches,
        registry,
        keys,
    }
}

/// The writer's CPU stage for one batch, as the sequencer runs it: the verdicts, and how
/// long it took.
fn cpu_stage(
    f: &Fixture,
    msgs: &[Incoming],
    policy: &Policy,
    limiter: &mut RateLimiter,
    now: i64,
) -> (Duration, Vec<Verdict>) {
    let started = Instant::now();
    let parsed: Vec<_> = {
        use rayon::prelude::*;
        msgs.par_iter()
            .map(|m| verify::parse(&f.names, &f.allowed, 1 << 20, m))
            .collect()
    };
    let decided = verify::decide_all(parsed, &f.registry, policy, now);
    let (verdicts, tally) = verify::settle(decided, policy, limiter, now);
    let _ = tally.rules(policy);
    (started.elapsed(), verdicts)
}

/// The rest of the writer's batch: one transaction that checks the head, dedupes, appends
/// entries, subjects, tiles and the block with its checkpoint, and commits.
async fn write(
    c: &mut tokio_postgres::Client,
    state: &mut LogState,
    msgs: &[Incoming],
    verdicts: Vec<Verdict>,
    policy: &Policy,
    signer: &NoteSigner,
) -> Duration {
    let started = Instant::now();
    let digests: Vec<String> = verdicts
        .iter()
        .filter_map(|v| match v {
            Verdict::Admit(a) => Some(a.digest.as_str().to_string()),
            Verdict::Reject { .. } => None,
        })
        .collect();
    let tx = c.transaction().await.expect("transaction");
    let latest = store::latest_block(&tx).await.expect("latest block");
    assert_eq!(latest.as_ref(), Some(&state.last_block));
    let existing = store::existing(&tx, &digests).await.expect("dedupe");
    let now = chrono::Utc::now().timestamp_millis();
    let plan =
        batch::plan(state, msgs, verdicts, &existing, now, &[signer], Vec::new()).expect("plan");
    assert_eq!(plan.entries.len(), BATCH, "every envelope appended");
    store::write_plan(
        &tx,
        &plan,
        &store::PolicyRecord {
            version: policy.version(),
            source: Some(policy.source()),
        },
    )
    .await
    .expect("write");
    tx.commit().await.expect("commit");
    *state = plan.state;
    started.elapsed()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Median of the per-round ratios b/a: the two runs of a round share the machine's state,
/// so their ratio is steadier than the ratio of two medians when the noise drifts.
fn paired(a: &[Duration], b: &[Duration]) -> f64 {
    let mut r: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(a, b)| b.as_secs_f64() / a.as_secs_f64())
        .collect();
    r.sort_by(f64::total_cmp);
    r[r.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let f = fixture(2 + 2 * ROUNDS);
    let builtin = Policy::builtin();
    let twenty = Policy::parse(POLICY_20).expect("the 20-rule policy compiles");
    assert_eq!(twenty.rules().len(), 20);

    let db = ace_testkit::TestDb::new().await;
    let mut c = db.admin().await;
    for (i, k) in f.keys.iter().enumerate() {
        let key = RegisteredKey::new(format!("p{i}"), k.verifying_key(), 0);
        c.execute(
            "INSERT INTO producers (producer) VALUES ($1)",
            &[&key.producer],
        )
        .await
        .expect("producer");
        c.execute(
            "INSERT INTO producer_keys (keyid, producer, public_key, valid_from) VALUES ($1, $2, $3, to_timestamp(0))",
            &[&key.keyid.as_str(), &key.producer, &k.verifying_key().as_bytes().as_slice()],
        )
        .await
        .expect("key");
    }
    let signer = NoteSigner::generate("bench.example/policy").expect("ledger key");
    let genesis =
        batch::genesis(chrono::Utc::now().timestamp_millis(), &[&signer]).expect("genesis");
    store::ensure_genesis(&mut c, &genesis)
        .await
        .expect("genesis");
    let mut state = store::load_state(&c)
        .await
        .expect("state")
        .expect("genesis state");

    // Warm-up, and the rules must really run and pass: every envelope admitted by both.
    let mut limiter = RateLimiter::new();
    let mut batches = f.batches.iter();
    for p in [&builtin, &twenty] {
        let msgs = batches.next().expect("batch");
        let now = chrono::Utc::now().timestamp_millis();
        let (_, verdicts) = cpu_stage(&f, msgs, p, &mut limiter, now);
        write(&mut c, &mut state, msgs, verdicts, p, &signer).await;
    }

    let (mut stage_a, mut stage_b, mut total_a, mut total_b) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        // Which goes first alternates, so neither always inherits the other's leftovers.
        let order: [(&Policy, bool); 2] = if round % 2 == 0 {
            [(&builtin, false), (&twenty, true)]
        } else {
            [(&twenty, true), (&builtin, false)]
        };
        for (policy, is_twenty) in order {
            let msgs = batches.next().expect("batch");
            let now = chrono::Utc::now().timestamp_millis();
            let (stage, verdicts) = cpu_stage(&f, msgs, policy, &mut limiter, now);
            let rest = write(&mut c, &mut state, msgs, verdicts, policy, &signer).await;
            let (s, t) = if is_twenty {
                (&mut stage_b, &mut total_b)
            } else {
                (&mut stage_a, &mut total_a)
            };
            s.push(stage);
            t.push(stage + rest);
        }
    }
    let (ps, pt) = (paired(&stage_a, &stage_b), paired(&total_a, &total_b));

    // The policy alone, single-threaded: evaluate + settle + decide per envelope.
    let statements: Vec<(usize, Statement, String)> = f.batches[0]
        .iter()
        .map(|m| {
            let env = Envelope::parse(&m.payload).expect("envelope");
            let st = Statement::parse(&env.payload).expect("statement");
            let producer = f
                .names
                .producer_of(&m.subject)
                .expect("subject")
                .to_string();
            (m.payload.len(), st, producer)
        })
        .collect();
    let mut policy_only = Vec::new();
    for _ in 0..ROUNDS {
        let now = chrono::Utc::now().timestamp_millis();
        let started = Instant::now();
        let mut denied = 0;
        for (size, st, producer) in &statements {
            let mut e = twenty.evaluate(&Candidate {
                producer,
                payload_type: IN_TOTO_PAYLOAD_TYPE,
                envelope_bytes: *size,
                statement: Some(st),
                valid_signatures: 1,
            });
            limiter.settle(&twenty, producer, &mut e, now);
            if matches!(twenty.decide(&e), Decision::Deny(_)) {
                denied += 1;
            }
        }
        assert_eq!(denied, 0);
        policy_only.push(started.elapsed());
    }
    let mp = median(&mut policy_only);

    let per_s = |d: Duration| BATCH as f64 / d.as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "policy overhead ({BATCH}-envelope batches of fresh envelopes, {PRODUCERS} producers, {ROUNDS} rounds alternating which policy goes first, {} verification threads)",
        rayon::current_num_threads()
    );
    let (ta, tb, sa, sb) = (
        median(&mut total_a),
        median(&mut total_b),
        median(&mut stage_a),
        median(&mut stage_b),
    );
    println!("  writer batch without NATS (verify + policy + transaction + commit):");
    println!(
        "    built-in policy (1 rule): median {:>7.2} ms/batch  {:>7.0} envelopes/s",
        ms(ta),
        per_s(ta)
    );
    println!(
        "    20-rule policy:           median {:>7.2} ms/batch  {:>7.0} envelopes/s",
        ms(tb),
        per_s(tb)
    );
    println!(
        "    overhead: {:+.1}% (median of per-round ratios {pt:.3}; ratio of medians {:.3})",
        (pt - 1.0) * 100.0,
        tb.as_secs_f64() / ta.as_secs_f64()
    );
    println!("  CPU stage only (parse, verify, policy, decide):");
    println!(
        "    built-in policy (1 rule): median {:>7.2} ms/batch  {:>7.0} envelopes/s",
        ms(sa),
        per_s(sa)
    );
    println!(
        "    20-rule policy:           median {:>7.2} ms/batch  {:>7.0} envelopes/s",
        ms(sb),
        per_s(sb)
    );
    println!(
        "    overhead: {:+.1}% (median of per-round ratios {ps:.3}; ratio of medians {:.3})",
        (ps - 1.0) * 100.0,
        sb.as_secs_f64() / sa.as_secs_f64()
    );
    println!(
        "  20-rule policy alone, one thread: median {:.2} µs/envelope",
        mp.as_secs_f64() * 1e6 / BATCH as f64
    );
}
