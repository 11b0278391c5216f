//! Intake throughput on the real NATS and Postgres (issue 8), in one run:
//! 1. the bare reference pipeline drains a stream of N pre-signed envelopes: pull 500,
//!    verify their signatures (all cores), insert them in one transaction with one
//!    multi-row insert, ack;
//! 2. the real writer (`ace-writer`, a release process with its default settings) drains
//!    an identical stream, from its start to the last envelope committed and acked;
//! 3. live: publishing at a fixed offered rate while the writer runs, publish → ack
//!    latency.
//!
//! Prints envelopes/s, the ratio, the writer's peak memory (getrusage of the child), and
//! for both drains and the live run the CPU time per envelope of the pipeline's own
//! process, of Postgres and of nats-server (from /proc), and the time the hypervisor
//! stole: where each envelope's cost goes, and how slow the machine was. The writer's drain is
//! timed from its first fetch (it logs "log state loaded" just before).
//! `cargo bench -p ace-writer --bench drain`; `ACE_BENCH_ENVELOPES` (default 20000),
//! `ACE_BENCH_ROUNDS` (3: reference then writer, each round on fresh streams and
//! databases; medians and each round's ratio are printed), `ACE_BENCH_LIVE_RATE` (5000/s),
//! `ACE_BENCH_LIVE_SECS` (10),
//! `ACE_BENCH_WRITER_LOG` (the writer's ACE_LOG, default warn); `ACE_BATCH_MAX_ENTRIES` and
//! `ACE_BATCH_MAX_DELAY_MS` are passed to the writer when set; `ACE_BENCH_WRITER_BIN` runs
//! another writer binary (an A/B against an older commit).
//!
//! 4. With `ACE_BENCH_PREFILL=N` (default 0: skipped): the log is grown by N synthetic
//!    entries (`ace_testkit::synth`, as `ace-synth` does), then a fresh stream of the same
//!    size is drained again, and the ratio to the drain at the empty log is printed: no
//!    path of the writer's may grow with the log.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ace_core::checkpoint::NoteSigner;
use ace_core::envelope::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use ace_core::ids::KeyId;
use ace_testkit::{free_port, TestDb, TestNats};
use async_nats::jetstream::{self, consumer::pull};
use ed25519_dalek::{SigningKey, Verifier};
use futures::StreamExt;
use rayon::prelude::*;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PRODUCERS: usize = 8;

fn env_or(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn keys() -> Vec<SigningKey> {
    (0..PRODUCERS)
        .map(|i| SigningKey::from_bytes(&[i as u8 + 11; 32]))
        .collect()
}

/// `n` signed in-toto envelopes (producer, bytes), distinct per `salt`.
fn envelopes(keys: &[SigningKey], n: usize, salt: &str) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .into_par_iter()
        .map(|i| {
            let p = i % PRODUCERS;
            let st = serde_json::json!({
                "_type": "https://in-toto.io/Statement/v1",
                "subject": [{"name": format!("pkg:oci/app-{p}/build-{salt}-{i}"),
                             "digest": {"sha256": format!("{:064x}", i)}}],
                "predicateType": "https://slsa.dev/provenance/v1",
                "predicate": {"buildDefinition": {"buildType": "https://example.com/b", "externalParameters": {"n": i}},
                              "runDetails": {"builder": {"id": "https://ci.example.com"}}}
            });
            let payload = serde_json::to_vec(&st).expect("json");
            let env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &payload, &keys[p]);
            (format!("p{p}"), env.to_json())
        })
        .collect()
}

/// Publish with pipelined confirmations, 1000 in flight.
async fn fill(nats: &TestNats, items: &[(String, Vec<u8>)]) {
    for chunk in items.chunks(1000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for (producer, raw) in chunk {
            acks.push(
                nats.js
                    .publish(nats.names.intake_subject(producer), raw.clone().into())
                    .await
                    .expect("publish"),
            );
        }
        for a in acks {
            a.await.expect("stored");
        }
    }
}

async fn register(db: &TestDb, keys: &[SigningKey]) {
    let c = db.admin().await;
    for (i, k) in keys.iter().enumerate() {
        let producer = format!("p{i}");
        c.execute("INSERT INTO producers (producer) VALUES ($1)", &[&producer])
            .await
            .expect("producer");
        let keyid = KeyId::from_public_key(&k.verifying_key());
        c.execute(
            "INSERT INTO producer_keys (keyid, producer, public_key, valid_from) VALUES ($1, $2, $3, now() - interval '1 hour')",
            &[&keyid.as_str(), &producer, &k.verifying_key().as_bytes().as_slice()],
        )
        .await
        .expect("key");
    }
}

/// The denominator: pull 500, verify, one multi-row insert, commit, ack.
async fn reference(nats: &TestNats, db: &TestDb, keys: &[SigningKey], n: usize) -> Duration {
    let mut c = db.admin().await;
    c.batch_execute(
        "CREATE TABLE ref_entries (digest text PRIMARY KEY, producer text NOT NULL, envelope bytea NOT NULL)",
    )
    .await
    .expect("table");
    let by_keyid: HashMap<String, ed25519_dalek::VerifyingKey> = keys
        .iter()
        .map(|k| {
            (
                KeyId::from_public_key(&k.verifying_key())
                    .as_str()
                    .to_string(),
                k.verifying_key(),
            )
        })
        .collect();
    let stream = nats
        .js
        .get_stream(nats.names.intake_stream())
        .await
        .expect("stream");
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("REF".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_millis(200))
            .messages()
            .await
            .expect("fetch");
        let mut msgs = Vec::new();
        while let Some(m) = batch.next().await {
            msgs.push(m.expect("message"));
        }
        if msgs.is_empty() {
            continue;
        }
        let rows: Vec<(String, String, Vec<u8>)> = msgs
            .par_iter()
            .map(|m| {
                let env = Envelope::parse(&m.payload).expect("envelope");
                let pae = env.pae();
                for s in &env.signatures {
                    let key = &by_keyid[&s.keyid];
                    let sig = ed25519_dalek::Signature::from_slice(&s.sig).expect("sig");
                    key.verify(&pae, &sig).expect("verifies");
                }
                let producer = m.subject.rsplit('.').next().unwrap_or_default().to_string();
                (
                    env.digest().as_str().to_string(),
                    producer,
                    m.payload.to_vec(),
                )
            })
            .collect();
        let (d, p, e): (Vec<&str>, Vec<&str>, Vec<&[u8]>) = rows
            .iter()
            .map(|(d, p, e)| (d.as_str(), p.as_str(), e.as_slice()))
            .fold((vec![], vec![], vec![]), |mut acc, (d, p, e)| {
                acc.0.push(d);
                acc.1.push(p);
                acc.2.push(e);
                acc
            });
        let tx = c.transaction().await.expect("tx");
        tx.execute(
            "INSERT INTO ref_entries SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])",
            &[&d, &p, &e],
        )
        .await
        .expect("insert");
        tx.commit().await.expect("commit");
        let acks = futures::future::join_all(msgs.iter().map(|m| m.ack())).await;
        assert!(acks.iter().all(|a| a.is_ok()));
        done += msgs.len();
    }
    started.elapsed()
}

struct Writer {
    child: Child,
    listen: String,
    /// When the writer logged that it leads with the log's state loaded: its next step is
    /// the first fetch. The drain is timed from here, as the issue asks ("from the first
    /// fetch"); the process start and connections before it are reported apart.
    leading: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
}

fn spawn_writer(db: &TestDb, nats: &TestNats, key_file: &std::path::Path, port: u16) -> Writer {
    let listen = format!("127.0.0.1:{port}");
    // ACE_BENCH_WRITER_BIN runs another build of the writer (an A/B against an older
    // commit with the same bench, streams and machine).
    let bin = std::env::var("ACE_BENCH_WRITER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ace-writer").to_string());
    let mut child = Command::new(bin)
        .env_clear()
        .env("ACE_NATS_URL", &nats.url)
        .env("ACE_DATABASE_URL", db.url("ace_writer"))
        .env("ACE_PREFIX", nats.names.prefix())
        .env("ACE_LEDGER_KEY_FILE", key_file)
        .env("ACE_WRITER_LISTEN", &listen)
        // The writer's batch settings pass through, for trying them.
        .envs(
            ["ACE_BATCH_MAX_ENTRIES", "ACE_BATCH_MAX_DELAY_MS"]
                .into_iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k, v))),
        )
        // ACE_BENCH_WRITER_LOG=ace_writer=debug shows each block's stage timings. The
        // sequencer's info lines stay on whatever the filter: "log state loaded" starts
        // the clock.
        .env(
            "ACE_LOG",
            match std::env::var("ACE_BENCH_WRITER_LOG") {
                Ok(filter) if filter.contains("ace_writer") => filter,
                Ok(filter) => format!("{filter},ace_writer::sequencer=info"),
                Err(_) => "warn,ace_writer::sequencer=info".into(),
            },
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning ace-writer");
    let leading = std::sync::Arc::new(std::sync::Mutex::new(None));
    let show = std::env::var("ACE_BENCH_WRITER_LOG").is_ok();
    if let Some(out) = child.stdout.take() {
        let leading = leading.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains("log state loaded") {
                    if let Ok(mut l) = leading.lock() {
                        l.get_or_insert_with(Instant::now);
                    }
                }
                if show {
                    println!("{line}");
                }
            }
        });
    }
    Writer {
        child,
        listen,
        leading,
    }
}

impl Writer {
    /// When the writer started leading (it logs it before its first fetch), if it did.
    fn leading_since(&self) -> Option<Instant> {
        self.leading.lock().ok().and_then(|l| *l)
    }

    /// SIGTERM, wait: the largest peak RSS of the writers stopped so far, in KiB
    /// (getrusage of children; their CPU is read from /proc while they run).
    fn stop(mut self) -> u64 {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        // SAFETY: getrusage writes into the struct it is given and nothing else.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
        ru.ru_maxrss as u64
    }
}

async fn tree_size(c: &tokio_postgres::Client) -> u64 {
    c.query_one("SELECT coalesce(max(tree_size), 0) FROM ledger_blocks", &[])
        .await
        .map(|r| r.get::<_, i64>(0) as u64)
        .unwrap_or(0)
}

async fn unacked(nats: &TestNats) -> u64 {
    let mut consumer: jetstream::consumer::Consumer<pull::Config> = nats
        .js
        .get_consumer_from_stream(ace_core::nats::WRITER_CONSUMER, nats.names.intake_stream())
        .await
        .expect("writer consumer");
    consumer
        .info()
        .await
        .map(|i| i.num_pending + i.num_ack_pending as u64)
        .unwrap_or(u64::MAX)
}

/// JetStream's answer to a publish: the stored message's sequence, or an error.
#[derive(serde::Deserialize)]
struct PubAck {
    seq: Option<u64>,
    error: Option<serde_json::Value>,
}

/// The one member of an ack the latency needs.
#[derive(serde::Deserialize)]
struct AckDigest {
    digest: String,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(bench());
}

async fn bench() {
    let n = env_or("ACE_BENCH_ENVELOPES", 20_000) as usize;
    let rate = env_or("ACE_BENCH_LIVE_RATE", 5000);
    let live_secs = env_or("ACE_BENCH_LIVE_SECS", 10);
    let keys = keys();
    let t = Instant::now();
    let items = envelopes(&keys, n, "drain");
    println!(
        "signed {n} envelopes in {:.1} s (not measured)",
        t.elapsed().as_secs_f64()
    );

    // 1 and 2, in rounds: the reference then the writer, each on a fresh database and
    // stream, so that every round's ratio compares neighbours in time on a noisy machine.
    let rounds = env_or("ACE_BENCH_ROUNDS", 3).max(1) as usize;
    let dir = std::env::temp_dir().join(ace_testkit::unique("ace-drain-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let key_file = dir.join("ledger.key");
    let signer = NoteSigner::generate("bench.example/drain").expect("key");
    std::fs::write(&key_file, signer.to_key_file()).expect("key file");
    let (mut ref_rates, mut w_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ref_splits, mut w_splits) = (Vec::new(), Vec::new());
    let mut peak_rss_kb = 0;
    let mut last = None;
    for round in 1..=rounds {
        let (db, nats) = (TestDb::new().await, TestNats::new().await);
        fill(&nats, &items).await;
        let before = cpu_now(None);
        let r = reference(&nats, &db, &keys, n).await;
        let after = cpu_now(None);
        let ref_rate = n as f64 / r.as_secs_f64();
        let ref_split = split(before, after, n, false);
        println!(
            "round {round}: reference pipeline {n} envelopes in {:.2} s = {ref_rate:.0} envelopes/s",
            r.as_secs_f64()
        );
        println!("  {}", ref_split.line("reference", "pipeline"));
        drop((db, nats));

        let (db, nats) = (TestDb::new().await, TestNats::new().await);
        register(&db, &keys).await;
        fill(&nats, &items).await;
        let admin = db.admin().await;
        let before = cpu_now(None);
        let started = Instant::now();
        let w = spawn_writer(&db, &nats, &key_file, free_port());
        while tree_size(&admin).await < n as u64 || unacked(&nats).await > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let done = Instant::now();
        let after = cpu_now(Some(w.child.id()));
        let from_start = done - started;
        let d = w.leading_since().map_or(from_start, |t| done - t);
        peak_rss_kb = peak_rss_kb.max(w.stop());
        let w_rate = n as f64 / d.as_secs_f64();
        let w_split = split(before, after, n, true);
        println!(
            "round {round}: writer drain {n} envelopes in {:.2} s = {w_rate:.0} envelopes/s (from the first fetch; {:.0} envelopes/s from the process start, {:.0} ms before the first fetch); ratio {:.2}",
            d.as_secs_f64(),
            n as f64 / from_start.as_secs_f64(),
            (from_start - d).as_secs_f64() * 1e3,
            w_rate / ref_rate
        );
        println!(
            "  {}; writer {:.0}% of one core",
            w_split.line("writer", "writer"),
            w_split.own * n as f64 / 1e6 / d.as_secs_f64() * 100.0
        );
        ref_rates.push(ref_rate);
        w_rates.push(w_rate);
        ratios.push(w_rate / ref_rate);
        ref_splits.push(ref_split);
        w_splits.push(w_split);
        last = Some((db, nats, admin, w_rate));
    }
    println!(
        "medians of {rounds} rounds: reference {:.0} envelopes/s, writer {:.0} envelopes/s, ratio writer / reference {:.2} (rounds: {}); writer peak RSS {} MiB",
        median(&ref_rates),
        median(&w_rates),
        median(&ratios),
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        peak_rss_kb / 1024
    );
    println!(
        "  {}",
        Split::median(&ref_splits).line("reference", "pipeline")
    );
    println!("  {}", Split::median(&w_splits).line("writer", "writer"));
    let Some((db, nats, admin, w_rate)) = last else {
        return;
    };

    // 3. Live: offered load, publish → ack latency.
    let port = free_port();
    let w = spawn_writer(&db, &nats, &key_file, port);
    wait_ready(&w.listen).await;
    let live_n = (rate * live_secs) as usize;
    // Digests computed with the signing, before the clock: the producer side of this
    // machine's two cores should cost what a producer's publishing costs, no more.
    let live: Vec<(String, Vec<u8>, String)> = envelopes(&keys, live_n, "live")
        .into_par_iter()
        .map(|(producer, raw)| {
            let digest = Envelope::parse(&raw)
                .expect("envelope")
                .digest()
                .as_str()
                .to_string();
            (producer, raw, digest)
        })
        .collect();
    let mut acks = nats
        .client
        .subscribe(format!("{}.ack.>", nats.names.prefix()))
        .await
        .expect("ack subscription");
    let collector = tokio::spawn(async move {
        let mut got: HashMap<String, Instant> = HashMap::with_capacity(live_n);
        while got.len() < live_n {
            match tokio::time::timeout(Duration::from_secs(30), acks.next()).await {
                Ok(Some(m)) => {
                    if let Ok(a) = serde_json::from_slice::<AckDigest>(&m.payload) {
                        got.insert(a.digest, Instant::now());
                    }
                }
                _ => break,
            }
        }
        got
    });
    let mut sent: HashMap<String, Instant> = HashMap::with_capacity(live_n);
    let tick = Duration::from_millis(10);
    let per_tick = (rate as usize / 100).max(1);
    // Every publish is confirmed by JetStream, counted by another task on one inbox
    // subscription (as the writer confirms its acks): a future, a channel and a timer
    // per message cost this producer a third more CPU on the cores the writer needs.
    let inbox = nats.client.new_inbox();
    let mut confirmations = nats
        .client
        .subscribe(format!("{inbox}.*"))
        .await
        .expect("confirmation subscription");
    let confirmer = tokio::spawn(async move {
        let mut stored = 0;
        while stored < live_n {
            match tokio::time::timeout(Duration::from_secs(30), confirmations.next()).await {
                Ok(Some(m)) => {
                    let ack = serde_json::from_slice::<PubAck>(&m.payload);
                    assert!(
                        m.status.is_none()
                            && ack.is_ok_and(|a| a.seq.is_some() && a.error.is_none()),
                        "an intake publish was not stored: {:?} {:?}",
                        m.status,
                        String::from_utf8_lossy(&m.payload)
                    );
                    stored += 1;
                }
                _ => panic!("{stored} of {live_n} intake publishes confirmed within 30 s"),
            }
        }
    });
    // Resident memory once a second through the live run: flat, or not.
    let pid = w.child.id();
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        while let Some(kib) = rss_kib(pid) {
            samples.push(kib);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        samples
    });
    let before = cpu_now(Some(pid));
    let t0 = Instant::now();
    for (i, chunk) in live.chunks(per_tick).enumerate() {
        tokio::time::sleep_until((t0 + tick * i as u32).into()).await;
        for (j, (producer, raw, digest)) in chunk.iter().enumerate() {
            sent.insert(digest.clone(), Instant::now());
            nats.client
                .publish_with_reply(
                    nats.names.intake_subject(producer),
                    format!("{inbox}.{}", i * per_tick + j),
                    raw.clone().into(),
                )
                .await
                .expect("publish");
        }
    }
    let offered = live_n as f64 / t0.elapsed().as_secs_f64();
    confirmer.await.expect("confirmations");
    let got = collector.await.expect("collector");
    let after = cpu_now(Some(pid));
    let _ = w.stop();
    let rss = sampler.await.unwrap_or_default();
    if let Some(max) = rss.iter().max() {
        let every_10s: Vec<String> = rss
            .iter()
            .step_by(10)
            .map(|kib| format!("{}", kib / 1024))
            .collect();
        println!(
            "live RSS (MiB) every 10 s from the writer's start: {}; last {}, max {}",
            every_10s.join(" "),
            rss.last().copied().unwrap_or_default() / 1024,
            max / 1024
        );
    }
    let mut lat: Vec<Duration> = sent
        .iter()
        .filter_map(|(d, s)| got.get(d).map(|a| a.saturating_duration_since(*s)))
        .collect();
    lat.sort_unstable();
    if lat.is_empty() {
        println!("live: no acks received");
        return;
    }
    println!(
        "live at {offered:.0} envelopes/s offered for {live_secs} s: {} of {live_n} acked; publish → ack p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        lat.len(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3
    );
    // Where the live run's CPU went: on one machine the producer (this bench) shares the
    // two cores with the writer, Postgres and nats-server.
    let w_live = split(before, after, live_n, true);
    let producer = split(before, after, live_n, false).own;
    println!(
        "  {}; of the elsewhere, the producer (this bench) {producer:.0}",
        w_live.line("live", "writer")
    );

    // 4. The same drain at a deep log.
    let prefill = env_or("ACE_BENCH_PREFILL", 0);
    if prefill > 0 {
        let t = Instant::now();
        let mut clients = vec![db.admin().await, db.admin().await];
        let report = ace_testkit::synth::load_with_progress(
            &mut clients,
            &signer,
            &ace_testkit::synth::SynthOptions {
                entries: prefill,
                skip_foreign_key_checks: true,
                ..Default::default()
            },
            |_| {},
        )
        .await
        .expect("synthetic prefill");
        println!(
            "prefill: {} synthetic entries in {:.0} s (not measured); tree size {}",
            report.entries,
            t.elapsed().as_secs_f64(),
            report.tree_size
        );
        // A bulk load leaves work behind (autovacuum of 10M fresh rows, a checkpoint of
        // gigabytes of dirty pages) that a log grown over months would not have; do it
        // now, unmeasured, so the drain below sees a deep log, not a just-loaded one.
        let t = Instant::now();
        // One statement per call: VACUUM refuses to run inside the implicit transaction
        // of a multi-statement query.
        for sql in [
            "VACUUM (ANALYZE) ledger_entries, ledger_subjects, ledger_tiles, ledger_blocks",
            "CHECKPOINT",
        ] {
            admin.batch_execute(sql).await.expect(sql);
        }
        let size: String = admin
            .query_one(
                "SELECT pg_size_pretty(pg_database_size(current_database()))",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or_default();
        println!(
            "vacuum, analyze and checkpoint after the prefill: {:.0} s (not measured); database {size}",
            t.elapsed().as_secs_f64()
        );
        let deep = envelopes(&keys, n, "deep");
        fill(&nats, &deep).await;
        let target = tree_size(&admin).await + n as u64;
        let started = Instant::now();
        let w = spawn_writer(&db, &nats, &key_file, free_port());
        while tree_size(&admin).await < target || unacked(&nats).await > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let done = Instant::now();
        let d = w.leading_since().map_or(done - started, |t| done - t);
        let _ = w.stop();
        let deep_rate = n as f64 / d.as_secs_f64();
        println!(
            "writer drain at a log of {target} entries: {n} envelopes in {:.2} s = {deep_rate:.0} envelopes/s; ratio to the empty log {:.2}",
            d.as_secs_f64(),
            deep_rate / w_rate
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The writer's resident memory now (VmRSS), in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Wait until the writer at `listen` answers /readyz 200 (it leads).
async fn wait_ready(listen: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut s) = tokio::net::TcpStream::connect(listen).await {
            let _ = s
                .write_all(b"GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n")
                .await;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            if buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the writer at {listen} did not become ready");
}

/// CPU time used so far (user + system), for one process or all processes of a name, and
/// the whole machine's busy and total time: taken before and after a drain, the
/// difference says where each envelope's CPU went.
#[derive(Clone, Copy, Default)]
struct Cpu {
    bench: f64,
    writer: f64,
    postgres: f64,
    nats: f64,
    machine_busy: f64,
    machine_total: f64,
    /// Time the hypervisor ran something else while this machine wanted to run: counted
    /// as busy (the work waited), shown apart because no process here spent it.
    steal: f64,
}

fn ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (comm, utime + stime in seconds) of `/proc/<pid>/stat`.
fn proc_cpu(pid: &str) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let rest: Vec<&str> = stat[close + 2..].split(' ').collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / ticks()))
}

fn cpu_now(writer: Option<u32>) -> Cpu {
    let mut c = Cpu::default();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Some((comm, secs)) = proc_cpu(&name) {
                match comm.as_str() {
                    "postgres" => c.postgres += secs,
                    "nats-server" => c.nats += secs,
                    _ => {}
                }
            }
        }
    }
    c.bench = proc_cpu("self").map_or(0.0, |(_, s)| s);
    c.writer = writer
        .and_then(|p| proc_cpu(&p.to_string()))
        .map_or(0.0, |(_, s)| s);
    if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
        if let Some(line) = stat.lines().next() {
            let v: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal
            let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
            let total: f64 = v.iter().take(8).sum();
            c.machine_busy = (total - idle) / ticks();
            c.machine_total = total / ticks();
            c.steal = v.get(7).copied().unwrap_or(0.0) / ticks();
        }
    }
    c
}

/// CPU µs per envelope by process between two snapshots.
#[derive(Clone, Copy, Default)]
struct Split {
    own: f64,
    postgres: f64,
    nats: f64,
    other: f64,
    stolen: f64,
    total: f64,
    busy_pct: f64,
}

fn split(a: Cpu, b: Cpu, n: usize, writer: bool) -> Split {
    let per = |x: f64| x / n as f64 * 1e6;
    let own = if writer {
        b.writer - a.writer
    } else {
        b.bench - a.bench
    };
    let (pg, nats) = (b.postgres - a.postgres, b.nats - a.nats);
    let busy = b.machine_busy - a.machine_busy;
    let total = b.machine_total - a.machine_total;
    Split {
        own: per(own),
        postgres: per(pg),
        nats: per(nats),
        other: per(busy - own - pg - nats),
        stolen: per(b.steal - a.steal),
        total: per(busy),
        busy_pct: if total > 0.0 {
            busy / total * 100.0
        } else {
            0.0
        },
    }
}

impl Split {
    fn line(&self, what: &str, main: &str) -> String {
        format!(
            "{what} CPU per envelope: {:.0} µs = {main} {:.0} + Postgres {:.0} + nats-server {:.0} (+ {:.0} elsewhere, of it {:.0} stolen by the hypervisor); machine busy {:.0}%",
            self.total, self.own, self.postgres, self.nats, self.other, self.stolen, self.busy_pct
        )
    }

    /// Each field's median over the rounds.
    fn median(all: &[Split]) -> Split {
        let m = |f: fn(&Split) -> f64| median(&all.iter().map(f).collect::<Vec<_>>());
        Split {
            own: m(|s| s.own),
            postgres: m(|s| s.postgres),
            nats: m(|s| s.nats),
            other: m(|s| s.other),
            stolen: m(|s| s.stolen),
            total: m(|s| s.total),
            busy_pct: m(|s| s.busy_pct),
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}
