//! The reader on the real Postgres, over ledgers built by the synthetic loader through core's
//! own tile code: every route, every bad parameter, proofs for every entry at several tree
//! sizes, consistency between every pair of checkpoints, and the role's privileges.

use std::sync::Arc;
use std::time::Duration;

use ace_core::checkpoint::{open_checkpoint, NoteSigner, NoteVerifier};
use ace_core::envelope::{envelope_sha256, Envelope};
use ace_core::leaf::LeafRecord;
use ace_core::merkle::{
    leaf_hash, verify_consistency_proof, verify_inclusion_proof, Hash, MemoryTree,
};
use ace_core::tiles::{entries_path, partial_tile_ids, tile_from_bytes, TileId};
use ace_reader::api::Shared;
use ace_reader::config::Config;
use ace_testkit::{SynthOptions, TestDb};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use base64::Engine;
use serde_json::Value;
use tower::ServiceExt;

const ORIGIN: &str = "reader.test/log";

/// Checkpointed tree sizes of the test ledger: around tile edges, and a dozen of them.
const SIZES: [u64; 12] = [1, 2, 255, 256, 257, 511, 1000, 1024, 1500, 2048, 2049, 3001];

struct Fixture {
    db: TestDb,
    signer: NoteSigner,
    app: Router,
    state: Shared,
}

fn config(db: &TestDb, keys: Vec<NoteVerifier>) -> Config {
    Config {
        pool_size: 4,
        tile_cache_bytes: 8 << 20,
        head_max_age: Duration::ZERO,
        ..Config::with_defaults(ace_core::config::Secret::new(db.url("ace_reader")), keys)
    }
}

/// Appends entries so that a block (and checkpoint) ends at each of `sizes`.
async fn grow(db: &TestDb, signer: &NoteSigner, from: u64, sizes: &[u64]) {
    let mut admin = db.admin().await;
    let mut at = from;
    for &size in sizes {
        let n = size - at;
        let opts = SynthOptions {
            entries: n,
            block_size: n,
            producers: 3,
            seed: 7,
            entries_per_transaction: n,
            // Entries addressed by position: the registrations' key events stay pending.
            key_events: false,
            ..Default::default()
        };
        ace_testkit::load(&mut admin, signer, &opts).await.unwrap();
        at = size;
    }
}

async fn fixture(sizes: &[u64]) -> Fixture {
    let db = TestDb::new().await;
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    grow(&db, &signer, 0, sizes).await;
    let state = ace_reader::prepare(&config(&db, vec![signer.verifier()]))
        .await
        .unwrap();
    Fixture {
        app: ace_reader::router(Arc::clone(&state)),
        state,
        db,
        signer,
    }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    cache_control: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

async fn get(app: &Router, uri: &str) -> Answer {
    let r = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    // In a block, so that the closure is not held across the await (the future stays Send).
    let (status, content_type, cache_control) = {
        let header = |h| {
            r.headers()
                .get(h)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        (
            r.status(),
            header(axum::http::header::CONTENT_TYPE),
            header(axum::http::header::CACHE_CONTROL),
        )
    };
    let body = axum::body::to_bytes(r.into_body(), 64 << 20)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        content_type,
        cache_control,
        body,
    }
}

async fn ok_json(app: &Router, uri: &str) -> Value {
    let a = get(app, uri).await;
    assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.text());
    assert_eq!(a.content_type, "application/json", "{uri}");
    a.json()
}

fn hash(v: &Value) -> Hash {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array().unwrap().iter().map(hash).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_in_the_design_shapes() {
    let f = fixture(&[300, 700]).await;
    let app = &f.app;
    let verifier = f.signer.verifier();

    // Checkpoints: both routes, signed, at the latest size.
    for uri in ["/v1/checkpoint", "/checkpoint"] {
        let a = get(app, uri).await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(
            a.content_type.starts_with("text/plain"),
            "{}",
            a.content_type
        );
        let cp = open_checkpoint(&a.text(), std::slice::from_ref(&verifier)).unwrap();
        assert_eq!((cp.origin.as_str(), cp.tree_size), (ORIGIN, 700));
    }

    let keys = ok_json(app, "/v1/keys").await;
    assert_eq!(keys["ledger"], serde_json::json!([verifier.to_vkey()]));
    let producers = keys["producers"].as_array().unwrap();
    assert_eq!(producers.len(), 3);
    for k in producers {
        for field in ["producer", "keyid", "public_key", "valid_from"] {
            assert!(k[field].is_string(), "{field}: {k}");
        }
        assert!(k["valid_until"].is_null() && k["revoked_at"].is_null());
        assert!(k["valid_from"].as_str().unwrap().ends_with('Z'));
    }

    // An entry: the leaf is recomputable from the envelope bytes and the fields.
    let e = ok_json(app, "/v1/entries/299").await;
    assert_eq!(e["index"], 299);
    assert_eq!(e["block"], 1);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(e["envelope"].as_str().unwrap())
        .unwrap();
    let env = Envelope::parse(&raw).unwrap();
    assert_eq!(e["digest"], env.digest().as_str());
    let leaf = LeafRecord {
        digest: env.digest().as_str().to_owned(),
        envelope_sha256: envelope_sha256(&raw),
        index: 299,
        integrated_time: e["integrated_time"].as_i64().unwrap(),
        producer: e["producer"].as_str().unwrap().to_owned(),
    };
    assert_eq!(e["leaf"].as_str().unwrap().as_bytes(), leaf.to_bytes());
    let subjects = e["subjects"].as_array().unwrap();
    assert!(!subjects.is_empty());
    assert!(subjects[0]["digest"]["sha256"].is_string());
    assert_eq!(e["warnings"], serde_json::json!([]));
    // Loaded without a writer: no policy version recorded, and the field says so.
    assert!(e["policy_version"].is_null(), "{e}");

    // A kept policy version: its exact text, cacheable for good.
    let text = "[[rule]]\nid = \"m\"\nkind = \"max_subjects\"\nmode = \"deny\"\nmax = 8\n";
    let version = ace_core::policy::version_of(text.as_bytes());
    f.db.admin()
        .await
        .execute(
            "INSERT INTO ledger_policies (version, source) VALUES ($1, $2)",
            &[&version, &text],
        )
        .await
        .unwrap();
    let a = get(app, &format!("/v1/policies/{version}")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.cache_control.contains("immutable"), "{}", a.cache_control);
    let p = a.json();
    assert_eq!(
        (p["version"].as_str(), p["source"].as_str()),
        (Some(version.as_str()), Some(text))
    );
    assert!(p["first_used_at"].as_str().unwrap().ends_with('Z'), "{p}");

    // Its proof, against the latest and an earlier checkpoint.
    for (uri, size) in [
        ("/v1/entries/299/proof", 700),
        ("/v1/entries/299/proof?tree_size=300", 300),
    ] {
        let p = ok_json(app, uri).await;
        assert_eq!(p["index"], 299);
        assert_eq!(p["tree_size"], size);
        let cp = open_checkpoint(
            p["checkpoint"].as_str().unwrap(),
            std::slice::from_ref(&verifier),
        )
        .unwrap();
        assert_eq!(cp.tree_size, size);
        assert_eq!(hash(&p["root_hash"]), cp.root_hash);
        assert_eq!(hash(&p["leaf_hash"]), leaf.leaf_hash());
        verify_inclusion_proof(
            &leaf.leaf_hash(),
            299,
            size,
            &hashes(&p["hashes"]),
            &cp.root_hash,
        )
        .unwrap();
    }
    let c = ok_json(app, "/v1/consistency?from=300&to=700").await;
    assert_eq!(
        (c["from"].as_u64(), c["to"].as_u64()),
        (Some(300), Some(700))
    );
    assert!(!c["hashes"].as_array().unwrap().is_empty());
    let same = ok_json(app, "/v1/consistency?from=700&to=700").await;
    assert_eq!(same["hashes"], serde_json::json!([]));

    // Envelopes: accepted, rejected (from the DLQ), unknown.
    let digest = e["digest"].as_str().unwrap();
    let st = ok_json(app, &format!("/v1/envelopes/{digest}")).await;
    assert_eq!(
        st,
        serde_json::json!({"digest": digest, "status": "accepted", "index": 299})
    );
    let rejected = format!("sha256:{}", "ab".repeat(32));
    f.db.admin()
        .await
        .execute(
            "INSERT INTO dlq_items (stream_seq, stored_at, subject, producer, digest, code, detail, field, envelope) \
             VALUES (1, now(), 'ace.intake.synth-0', 'synth-0', $1, 'bad_signature', 'signature 0 does not verify', 'signatures[0].sig', '\\x00')",
            &[&rejected],
        )
        .await
        .unwrap();
    let st = ok_json(app, &format!("/v1/envelopes/{rejected}")).await;
    assert_eq!(st["status"], "rejected");
    assert_eq!(st["reason"]["code"], "bad_signature");
    assert_eq!(st["reason"]["field"], "signatures[0].sig");
    assert!(st.get("index").is_none());
    let unknown = format!("sha256:{}", "cd".repeat(32));
    let a = get(app, &format!("/v1/envelopes/{unknown}")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(
        a.json(),
        serde_json::json!({"digest": unknown, "status": "unknown"})
    );

    // Blocks, one and paged, with anchor receipts.
    f.db.admin()
        .await
        .execute(
            "INSERT INTO anchor_receipts (height, tree_size, sink, kind, receipt) \
             VALUES (1, 300, 'tsa-main', 'rfc3161', '{\"token\": \"MIIB\"}')",
            &[],
        )
        .await
        .unwrap();
    let b = ok_json(app, "/v1/blocks/1").await;
    for field in ["height", "first_index", "tree_size", "sealed_at"] {
        assert!(b[field].is_u64(), "{field}: {b}");
    }
    assert_eq!(
        (b["first_index"].as_u64(), b["tree_size"].as_u64()),
        (Some(0), Some(300))
    );
    for field in ["root_hash", "block_hash", "prev_block_hash"] {
        assert_eq!(b[field].as_str().unwrap().len(), 64, "{field}");
    }
    assert_eq!(b["anchors"][0]["sink"], "tsa-main");
    assert_eq!(b["anchors"][0]["kind"], "rfc3161");
    assert_eq!(b["anchors"][0]["receipt"]["token"], "MIIB");
    let genesis = ok_json(app, "/v1/blocks/0").await;
    assert_eq!(b["prev_block_hash"], genesis["block_hash"]);

    // The block's checkpoint with a witness's cosignature line appended; still opens with
    // the ledger's key.
    let line = "\u{2014} witness.example/w1 AQIDBAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";
    f.db.admin()
        .await
        .execute(
            "INSERT INTO anchor_receipts (height, tree_size, sink, kind, receipt) \
             VALUES (1, 300, 'w1', 'witness', jsonb_build_object('cosignatures', jsonb_build_array($1::text)))",
            &[&line],
        )
        .await
        .unwrap();
    let a = get(app, "/v1/blocks/1/checkpoint").await;
    assert_eq!(a.status, StatusCode::OK);
    let note = a.text();
    assert_eq!(
        note,
        format!("{}{line}\n", b["checkpoint"].as_str().unwrap())
    );
    let cp = open_checkpoint(&note, std::slice::from_ref(&verifier)).unwrap();
    assert_eq!(cp.tree_size, 300);
    assert_eq!(
        get(app, "/v1/blocks/9/checkpoint").await.status,
        StatusCode::NOT_FOUND
    );
    let page = ok_json(app, "/v1/blocks?limit=2").await;
    assert_eq!(page["blocks"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], "1");
    let page = ok_json(app, "/v1/blocks?after=1&limit=2").await;
    assert_eq!(page["blocks"][0]["height"], 2);
    assert_eq!(page["next"], Value::Null);

    // Search: by producer, by subject digest, by predicate type, all paged in index order.
    let mut seen = Vec::new();
    let mut uri = "/v1/entries?producer=synth-1&limit=40".to_string();
    loop {
        let p = ok_json(app, &uri).await;
        for e in p["entries"].as_array().unwrap() {
            assert_eq!(e["producer"], "synth-1");
            assert!(e.get("envelope").is_none());
            seen.push(e["index"].as_u64().unwrap());
        }
        match p["next"].as_str() {
            Some(n) => uri = format!("/v1/entries?producer=synth-1&limit=40&after={n}"),
            None => break,
        }
    }
    let all: i64 =
        f.db.admin()
            .await
            .query_one(
                "SELECT count(*) FROM ledger_entries WHERE producer = 'synth-1'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(seen.len() as i64, all);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let subject = subjects[0]["digest"]["sha256"].as_str().unwrap();
    let p = ok_json(app, &format!("/v1/entries?subject_digest=sha256:{subject}")).await;
    assert_eq!(p["entries"].as_array().unwrap().len(), 1);
    assert_eq!(p["entries"][0]["index"], 299);
    let pt = e_predicate(&f.db, 299).await;
    let p = ok_json(
        app,
        &format!(
            "/v1/entries?predicate_type={}&producer={}&limit=100",
            urlencode(&pt),
            e["producer"].as_str().unwrap()
        ),
    )
    .await;
    assert!(p["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["index"] == 299));
    let first = ok_json(app, "/v1/entries?limit=3").await;
    let idx: Vec<u64> = first["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, vec![0, 1, 2]);
    assert_eq!(first["next"], "2");

    // Tiles: full and partial, and entry bundles whose leaves hash to the level-0 tile.
    let full = get(app, "/tile/0/000").await;
    assert_eq!(full.status, StatusCode::OK);
    assert_eq!(full.body.len(), 256 * 32);
    assert_eq!(full.content_type, "application/octet-stream");
    assert!(
        full.cache_control.contains("immutable"),
        "{}",
        full.cache_control
    );
    let partial = get(app, "/tile/0/002.p/188").await;
    assert_eq!(partial.status, StatusCode::OK, "{}", partial.text());
    assert_eq!(partial.body.len(), 188 * 32);
    assert!(!partial.cache_control.contains("immutable"));
    let bundle = get(app, "/tile/entries/000").await;
    assert_eq!(bundle.status, StatusCode::OK);
    let leaves = split_bundle(&bundle.body);
    assert_eq!(leaves.len(), 256);
    let from_bundle: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l)).collect();
    assert_eq!(from_bundle, tile_from_bytes(&full.body).unwrap());
    assert_eq!(
        split_bundle(&get(app, "/tile/entries/002.p/188").await.body).len(),
        188
    );
    // A narrower copy of a tile that was partial at an older checkpoint: a prefix.
    let old = get(app, "/tile/0/001.p/44").await;
    assert_eq!(old.status, StatusCode::OK);
    assert_eq!(old.body[..], get(app, "/tile/0/001").await.body[..44 * 32]);

    // OpenAPI and the docs page, served locally.
    let doc = ok_json(app, "/openapi.json").await;
    for path in [
        "/v1/checkpoint",
        "/v1/keys",
        "/v1/entries",
        "/v1/entries/{index}",
        "/v1/entries/{index}/proof",
        "/v1/consistency",
        "/v1/envelopes/{digest}",
        "/v1/blocks",
        "/v1/blocks/{height}",
        "/v1/blocks/{height}/checkpoint",
        "/v1/policies/{version}",
        "/checkpoint",
        "/tile/{path}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    let docs = get(app, "/docs/").await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.text().contains("swagger-ui"), "{}", docs.text());
    assert!(
        !docs.text().contains("cdn"),
        "the docs page must not load from a CDN"
    );
    assert_eq!(
        get(app, "/docs/swagger-ui-bundle.js").await.status,
        StatusCode::OK
    );

    // Health, readiness and real metrics.
    assert_eq!(get(app, "/healthz").await.status, StatusCode::OK);
    assert_eq!(get(app, "/readyz").await.status, StatusCode::OK);
    let m = get(app, "/metrics").await.text();
    assert!(
        m.contains(
            r#"ace_reader_http_requests_total{route="/v1/entries/{index}/proof",status="200"} 2"#
        ),
        "{m}"
    );
    assert!(m.contains(
        r#"ace_reader_http_requests_total{route="/v1/envelopes/{digest}",status="404"} 1"#
    ));
    assert!(m.contains("ace_reader_http_request_duration_seconds_bucket{route=\"/v1/keys\""));
    assert!(m.contains("ace_reader_tile_cache_total{outcome=\"hit\"}"));
}

async fn e_predicate(db: &TestDb, index: i64) -> String {
    db.admin()
        .await
        .query_one(
            "SELECT predicate_type FROM ledger_entries WHERE idx = $1",
            &[&index],
        )
        .await
        .unwrap()
        .get(0)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn split_bundle(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let n = u16::from_be_bytes([b[0], b[1]]) as usize;
        out.push(b[2..2 + n].to_vec());
        b = &b[2 + n..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_and_unknown_ids_are_problems_naming_the_parameter() {
    let f = fixture(&[300, 700]).await;
    let cases: &[(&str, StatusCode, &str)] = &[
        ("/v1/entries/abc", StatusCode::BAD_REQUEST, "index"),
        ("/v1/entries/-1", StatusCode::BAD_REQUEST, "index"),
        (
            "/v1/entries/9223372036854775808",
            StatusCode::BAD_REQUEST,
            "index",
        ),
        ("/v1/entries/700", StatusCode::NOT_FOUND, "index"),
        ("/v1/policies/sha256:AB", StatusCode::BAD_REQUEST, "version"),
        (
            "/v1/policies/sha256:0000000000000000000000000000000000000000000000000000000000000000",
            StatusCode::NOT_FOUND,
            "version",
        ),
        ("/v1/entries/12?x=1", StatusCode::BAD_REQUEST, "query"),
        ("/v1/entries/700/proof", StatusCode::NOT_FOUND, "index"),
        (
            "/v1/entries/5/proof?tree_size=5",
            StatusCode::BAD_REQUEST,
            "tree_size",
        ),
        (
            "/v1/entries/5/proof?tree_size=301",
            StatusCode::BAD_REQUEST,
            "tree_size",
        ),
        (
            "/v1/entries/5/proof?tree_size=x",
            StatusCode::BAD_REQUEST,
            "tree_size",
        ),
        (
            "/v1/entries/5/proof?treesize=300",
            StatusCode::BAD_REQUEST,
            "query",
        ),
        ("/v1/consistency?from=300", StatusCode::BAD_REQUEST, "to"),
        ("/v1/consistency?to=300", StatusCode::BAD_REQUEST, "from"),
        (
            "/v1/consistency?from=0&to=300",
            StatusCode::BAD_REQUEST,
            "from",
        ),
        (
            "/v1/consistency?from=700&to=300",
            StatusCode::BAD_REQUEST,
            "from",
        ),
        (
            "/v1/consistency?from=299&to=700",
            StatusCode::BAD_REQUEST,
            "from",
        ),
        (
            "/v1/consistency?from=300&to=701",
            StatusCode::BAD_REQUEST,
            "to",
        ),
        ("/v1/envelopes/abc", StatusCode::BAD_REQUEST, "digest"),
        ("/v1/envelopes/%FF", StatusCode::BAD_REQUEST, "digest"),
        ("/v1/blocks/%C3%28", StatusCode::BAD_REQUEST, "height"),
        (
            "/v1/envelopes/sha256:ABCD",
            StatusCode::BAD_REQUEST,
            "digest",
        ),
        (
            "/v1/entries?producer=Not_Valid",
            StatusCode::BAD_REQUEST,
            "producer",
        ),
        (
            "/v1/entries?subject_digest=sha256:xyz",
            StatusCode::BAD_REQUEST,
            "subject_digest",
        ),
        (
            "/v1/entries?subject_digest=sha256:abcd",
            StatusCode::BAD_REQUEST,
            "subject_digest",
        ),
        (
            "/v1/entries?predicate_type=",
            StatusCode::BAD_REQUEST,
            "predicate_type",
        ),
        ("/v1/entries?limit=0", StatusCode::BAD_REQUEST, "limit"),
        ("/v1/entries?limit=-5", StatusCode::BAD_REQUEST, "limit"),
        ("/v1/entries?after=x", StatusCode::BAD_REQUEST, "after"),
        (
            "/v1/entries?subject=sha256:ab",
            StatusCode::BAD_REQUEST,
            "query",
        ),
        ("/v1/blocks/3", StatusCode::NOT_FOUND, "height"),
        ("/v1/blocks/x", StatusCode::BAD_REQUEST, "height"),
        ("/v1/blocks?limit=0", StatusCode::BAD_REQUEST, "limit"),
        ("/tile/0/003", StatusCode::NOT_FOUND, "path"),
        ("/tile/0/002.p/189", StatusCode::NOT_FOUND, "path"),
        ("/tile/1/000", StatusCode::NOT_FOUND, "path"),
        ("/tile/0/2", StatusCode::BAD_REQUEST, "path"),
        ("/tile/0/000.p/0", StatusCode::BAD_REQUEST, "path"),
        ("/tile/9/000", StatusCode::BAD_REQUEST, "path"),
        ("/tile/entries/003", StatusCode::NOT_FOUND, "path"),
        ("/tile/entries/x", StatusCode::BAD_REQUEST, "path"),
        ("/v2/nothing", StatusCode::NOT_FOUND, "path"),
    ];
    for (uri, status, parameter) in cases {
        let a = get(&f.app, uri).await;
        assert_eq!(a.status, *status, "{uri}: {}", a.text());
        assert_eq!(a.content_type, "application/problem+json", "{uri}");
        let p = a.json();
        assert_eq!(p["status"], status.as_u16(), "{uri}");
        assert_eq!(p["parameter"], *parameter, "{uri}: {p}");
        assert!(p["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:ace-ledger:problem:"));
        assert!(!p["detail"].as_str().unwrap().is_empty());
    }
    // Writes are refused as problems too.
    let r = f
        .app
        .clone()
        .oneshot(Request::post("/v1/keys").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "GET,HEAD");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // Oversized values are refused before any query.
    let long = format!("/v1/entries?predicate_type={}", "a".repeat(600));
    let a = get(&f.app, &long).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json()["parameter"], "predicate_type");
    // A limit above the cap is capped, not refused.
    let p = ok_json(&f.app, "/v1/entries?limit=100000").await;
    assert_eq!(p["entries"].as_array().unwrap().len(), 100);
    let m = get(&f.app, "/metrics").await.text();
    assert!(
        m.contains(r#"route="/v1/entries/{index}",status="400"} 4"#),
        "{m}"
    );
    assert!(
        m.contains(r#"route="/v1/blocks/{height}",status="404"} 1"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inclusion_proofs_for_every_entry_verify_against_several_checkpoints() {
    let f = fixture(&SIZES).await;
    let verifier = f.signer.verifier();
    // The expected tree, from the leaves the entry bundles serve.
    let mut mem = MemoryTree::new();
    let last = *SIZES.last().unwrap();
    for n in 0..last.div_ceil(256) {
        let width = (last - n * 256).min(256) as u16;
        let a = get(&f.app, &format!("/{}", entries_path(n, width))).await;
        assert_eq!(a.status, StatusCode::OK);
        for leaf in split_bundle(&a.body) {
            mem.push(leaf_hash(&leaf));
        }
    }
    assert_eq!(mem.size(), last);
    let mut roots = std::collections::HashMap::new();
    for size in SIZES {
        let b = ok_json(&f.app, &format!("/v1/entries/0/proof?tree_size={size}")).await;
        let cp = open_checkpoint(
            b["checkpoint"].as_str().unwrap(),
            std::slice::from_ref(&verifier),
        )
        .unwrap();
        assert_eq!(cp.tree_size, size);
        assert_eq!(cp.root_hash, mem.root_at(size).unwrap(), "size {size}");
        roots.insert(size, cp.root_hash);
    }
    let mut proofs = 0;
    for index in 0..last {
        // The latest, the smallest checkpoint holding the entry, and one in between.
        let holding: Vec<u64> = SIZES.iter().copied().filter(|s| *s > index).collect();
        let mut sizes = vec![None, Some(holding[0]), Some(holding[holding.len() / 2])];
        sizes.dedup();
        for size in sizes {
            let uri = match size {
                Some(s) => format!("/v1/entries/{index}/proof?tree_size={s}"),
                None => format!("/v1/entries/{index}/proof"),
            };
            let p = ok_json(&f.app, &uri).await;
            let n = p["tree_size"].as_u64().unwrap();
            assert_eq!(n, size.unwrap_or(last));
            let leaf = hash(&p["leaf_hash"]);
            assert_eq!(leaf, mem.read_leaf(index), "{uri}");
            verify_inclusion_proof(&leaf, index, n, &hashes(&p["hashes"]), &roots[&n])
                .unwrap_or_else(|e| panic!("{uri}: {e}"));
            proofs += 1;
        }
    }
    assert!(proofs > 2 * last as usize, "{proofs}");
}

trait ReadLeaf {
    fn read_leaf(&self, index: u64) -> Hash;
}

impl ReadLeaf for MemoryTree {
    fn read_leaf(&self, index: u64) -> Hash {
        use ace_core::merkle::{HashReader, NodeId};
        self.read_hashes(&[NodeId { level: 0, index }]).unwrap()[0]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_proofs_between_every_pair_of_checkpoints_verify() {
    let f = fixture(&SIZES).await;
    let verifier = f.signer.verifier();
    let mut roots = std::collections::HashMap::new();
    for size in SIZES {
        let p = ok_json(&f.app, &format!("/v1/entries/0/proof?tree_size={size}")).await;
        let cp = open_checkpoint(
            p["checkpoint"].as_str().unwrap(),
            std::slice::from_ref(&verifier),
        )
        .unwrap();
        roots.insert(size, cp.root_hash);
    }
    let mut pairs = 0;
    for (i, &from) in SIZES.iter().enumerate() {
        for &to in &SIZES[i..] {
            let c = ok_json(&f.app, &format!("/v1/consistency?from={from}&to={to}")).await;
            verify_consistency_proof(from, to, &hashes(&c["hashes"]), &roots[&from], &roots[&to])
                .unwrap_or_else(|e| panic!("{from} → {to}: {e}"));
            pairs += 1;
        }
    }
    assert_eq!(pairs, 12 * 13 / 2);
    // A wrong root must not verify: the test can fail.
    let c = ok_json(&f.app, "/v1/consistency?from=256&to=3001").await;
    assert!(verify_consistency_proof(
        256,
        3001,
        &hashes(&c["hashes"]),
        &roots[&255],
        &roots[&3001]
    )
    .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_served_as_tiles_reproduces_every_checkpoint() {
    let f = fixture(&[257, 70_000]).await;
    let verifier = f.signer.verifier();
    let cp = open_checkpoint(&get(&f.app, "/checkpoint").await.text(), &[verifier]).unwrap();
    assert_eq!(cp.tree_size, 70_000);
    // What a C2SP client does: fetch the right edge's partial tiles and every tile under
    // them, and recompute the root.
    let mut set = ace_core::tiles::TileSet::new();
    let mut ids: Vec<TileId> = partial_tile_ids(70_000);
    ids.extend((0..273).map(|n| TileId::new(0, n, 256).unwrap()));
    ids.push(TileId::new(1, 0, 256).unwrap());
    for id in ids {
        let a = get(&f.app, &format!("/{}", id.path())).await;
        assert_eq!(a.status, StatusCode::OK, "{}", id.path());
        set.insert(id, tile_from_bytes(&a.body).unwrap()).unwrap();
    }
    assert_eq!(
        ace_core::merkle::tree_root(70_000, &set).unwrap(),
        cp.root_hash
    );
    // The reader served proofs from the cache after the first reads.
    for i in [0u64, 69_999, 35_000] {
        ok_json(&f.app, &format!("/v1/entries/{i}/proof")).await;
    }
    let m = get(&f.app, "/metrics").await.text();
    assert!(
        m.contains("ace_reader_tile_cache_total{outcome=\"hit\"}"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_blocks_are_served_as_they_are_sealed() {
    let f = fixture(&[10]).await;
    assert_eq!(
        open_checkpoint(
            &get(&f.app, "/v1/checkpoint").await.text(),
            &[f.signer.verifier()]
        )
        .unwrap()
        .tree_size,
        10
    );
    grow(&f.db, &f.signer, 10, &[20]).await;
    let p = ok_json(&f.app, "/v1/entries/15/proof").await;
    assert_eq!(p["tree_size"], 20);
    ok_json(&f.app, "/v1/consistency?from=10&to=20").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_ledger_answers_404_until_genesis() {
    let db = TestDb::new().await;
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    let state = ace_reader::prepare(&config(&db, vec![signer.verifier()]))
        .await
        .unwrap();
    let app = ace_reader::router(state);
    for uri in [
        "/v1/checkpoint",
        "/checkpoint",
        "/v1/entries/0/proof",
        "/tile/0/000.p/1",
    ] {
        let a = get(&app, uri).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(
            a.json()["type"],
            "urn:ace-ledger:problem:no-checkpoint",
            "{uri}"
        );
    }
    let page = ok_json(&app, "/v1/blocks").await;
    assert_eq!(page["blocks"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_role_writes_nothing_and_the_reader_refuses_more() {
    let f = fixture(&[5]).await;
    let reader = ace_core::db::connect(&f.db.url("ace_reader"))
        .await
        .unwrap();
    for table in ace_core::db::ALL_TABLES {
        for stmt in [
            format!("INSERT INTO {table} DEFAULT VALUES"),
            format!("UPDATE {table} SET {c} = {c}", c = first_column(table)),
            format!("DELETE FROM {table}"),
            format!("TRUNCATE {table}"),
        ] {
            let e = reader
                .batch_execute(&stmt)
                .await
                .err()
                .unwrap_or_else(|| panic!("ace_reader: {stmt} succeeded"));
            let msg = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_default();
            assert!(msg.contains("permission denied"), "{stmt}: {msg}");
        }
    }
    assert!(reader
        .batch_execute("CREATE TABLE x (a int)")
        .await
        .is_err());
    assert!(reader
        .batch_execute("SELECT nextval('dlq_items_id_seq')")
        .await
        .is_err());

    // Start-up refuses a role that can write, a superuser, and a foreign ledger key.
    let admin = f.db.admin().await;
    admin
        .batch_execute("GRANT INSERT ON dlq_items TO ace_reader")
        .await
        .unwrap();
    let e = ace_reader::prepare(&config(&f.db, vec![f.signer.verifier()]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("ace_reader") && e.contains("INSERT on dlq_items"),
        "{e}"
    );
    admin.batch_execute("REVOKE INSERT ON dlq_items FROM ace_reader; GRANT CREATE ON SCHEMA public TO ace_reader").await.unwrap();
    let e = ace_reader::prepare(&config(&f.db, vec![f.signer.verifier()]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("CREATE on schema public"), "{e}");
    admin
        .batch_execute("REVOKE CREATE ON SCHEMA public FROM ace_reader")
        .await
        .unwrap();
    let mut super_cfg = config(&f.db, vec![f.signer.verifier()]);
    super_cfg.database_url = ace_core::config::Secret::new(f.db.url("postgres"));
    let e = ace_reader::prepare(&super_cfg)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("superuser"), "{e}");
    let other = NoteSigner::generate(ORIGIN).unwrap().verifier();
    let e = ace_reader::prepare(&config(&f.db, vec![other]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("does not verify with ACE_LEDGER_VKEYS") && e.contains("tree size 5"),
        "{e}"
    );
    ace_reader::prepare(&config(&f.db, vec![f.signer.verifier()]))
        .await
        .unwrap();
}

fn first_column(table: &str) -> &'static str {
    match table {
        "producers" => "producer",
        "producer_keys" => "keyid",
        "ledger_tiles" => "level",
        "ledger_blocks" => "height",
        "dlq_items" | "anchor_receipts" | "key_events" => "id",
        "ledger_policies" => "version",
        "key_event_entries" => "event_id",
        _ => "idx",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_serves_over_tcp_and_stops_on_request() {
    let f = fixture(&[3]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(ace_reader::serve(Arc::clone(&f.state), listener, rx));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /v1/checkpoint HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains(ORIGIN));
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the reader stops when told")
        .unwrap()
        .unwrap();
}

/// Postgres (a private instance) stops under the reader and comes back: meanwhile every
/// answer is a 200 (from what the reader holds) or a 503 problem naming the database,
/// /readyz says why it is not ready, and once Postgres is back the reader answers again
/// without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_answers_503_with_a_reason_while_postgres_restarts_and_recovers() {
    let pg = Arc::new(
        tokio::task::spawn_blocking(ace_testkit::PgServer::start)
            .await
            .unwrap(),
    );
    let db = TestDb::on("127.0.0.1", pg.port).await;
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    grow(&db, &signer, 0, &[40]).await;
    let state = ace_reader::prepare(&config(&db, vec![signer.verifier()]))
        .await
        .unwrap();
    let app = ace_reader::router(state);
    let routes = ["/v1/entries/3", "/v1/blocks/1", "/v1/checkpoint"];
    for uri in routes {
        let a = get(&app, uri).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.text());
    }

    // The loader commits with synchronous_commit off; make its rows durable before the
    // crash-like stop, which would otherwise take the last of them away.
    db.admin().await.batch_execute("CHECKPOINT").await.unwrap();
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.stop("immediate"))
        .await
        .unwrap();
    let mut unavailable = 0;
    for uri in routes.iter().chain(["/v1/entries/7"].iter()) {
        let a = get(&app, uri).await;
        match a.status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                unavailable += 1;
                assert_eq!(a.content_type, "application/problem+json", "{uri}");
                let p = a.json();
                assert_eq!(p["type"], "urn:ace-ledger:problem:database-unavailable");
                assert!(p["detail"].as_str().unwrap().contains("database"), "{p}");
            }
            other => panic!(
                "{uri} answered {other} while Postgres was down: {}",
                a.text()
            ),
        }
    }
    assert!(
        unavailable > 0,
        "an entry never read before needs the database"
    );
    let ready = get(&app, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.text().contains("Postgres"), "{}", ready.text());

    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.resume())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a = get(&app, "/v1/entries/7").await;
        if a.status == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reader did not recover: {} {}",
            a.status,
            a.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for uri in routes {
        let a = get(&app, uri).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.text());
    }
    assert_eq!(get(&app, "/readyz").await.status, StatusCode::OK);
}

/// An entry row gone from under a checkpoint that covers it (damage, or a restore that
/// lost rows) is a 500 inconsistent-data problem naming the entry, not a 404: the log
/// says the entry exists.
#[tokio::test]
async fn a_missing_entry_under_its_checkpoint_is_inconsistent_data_not_absent() {
    let f = fixture(&[10]).await;
    let admin = f.db.admin().await;
    admin
        .batch_execute(
            "ALTER TABLE ledger_subjects DISABLE TRIGGER USER; \
             ALTER TABLE ledger_entries DISABLE TRIGGER USER; \
             DELETE FROM ledger_subjects WHERE idx = 4; \
             DELETE FROM ledger_entries WHERE idx = 4",
        )
        .await
        .unwrap();
    let a = get(&f.app, "/v1/entries/4").await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", a.text());
    assert_eq!(a.content_type, "application/problem+json");
    let p = a.json();
    assert_eq!(p["type"], "urn:ace-ledger:problem:inconsistent-data");
    assert!(p["detail"].as_str().unwrap().contains("entry 4"), "{p}");
    // Beyond the log: absent, as before.
    assert_eq!(
        get(&f.app, "/v1/entries/10").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&f.app, "/v1/entries/3").await.status, StatusCode::OK);
}

/// Through a transaction-pooling pgbouncer 1.18 (no named prepared statements across server
/// connections): the reader starts (its role check included) and answers many requests at
/// once, its 8 client connections sharing 4 server connections, with verifiable proofs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_serves_proofs_through_a_transaction_pooling_pgbouncer() {
    let db = TestDb::new().await;
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    grow(&db, &signer, 0, &[6, 13]).await;
    let bouncer = ace_testkit::PgBouncer::start(
        ace_testkit::PG_HOST,
        ace_testkit::PG_PORT,
        "transaction",
        &["ace_reader"],
    );
    let cfg = Config {
        pool_size: 8,
        database_url: ace_core::config::Secret::new(bouncer.url("ace_reader", &db.name)),
        ..config(&db, vec![signer.verifier()])
    };
    let state = ace_reader::prepare(&cfg)
        .await
        .unwrap_or_else(|e| panic!("{e}\npgbouncer log:\n{}", bouncer.log()));
    let app = ace_reader::router(state);

    let a = get(&app, "/v1/checkpoint").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let cp = open_checkpoint(&a.text(), &[signer.verifier()]).unwrap();
    assert_eq!(cp.tree_size, 13);

    // Every entry and its proof, several rounds of them at once.
    let mut tasks = Vec::new();
    for round in 0..4 {
        for index in 0..13u64 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let uri = if round % 2 == 0 {
                    format!("/v1/entries/{index}")
                } else {
                    format!("/v1/entries/{index}/proof")
                };
                (index, uri.clone(), get(&app, &uri).await)
            }));
        }
    }
    let mut leaves = std::collections::HashMap::new();
    let mut proofs = Vec::new();
    for t in tasks {
        let (index, uri, a) = t.await.unwrap();
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{uri}: {}\npgbouncer log:\n{}",
            a.text(),
            bouncer.log()
        );
        let v = a.json();
        if uri.ends_with("/proof") {
            proofs.push((index, v));
        } else {
            leaves.insert(index, leaf_hash(v["leaf"].as_str().unwrap().as_bytes()));
        }
    }
    assert_eq!(proofs.len(), 26);
    for (index, p) in proofs {
        assert_eq!(hash(&p["leaf_hash"]), leaves[&index]);
        verify_inclusion_proof(
            &leaves[&index],
            index,
            13,
            &hashes(&p["hashes"]),
            &cp.root_hash,
        )
        .unwrap_or_else(|e| panic!("entry {index}: {e}"));
    }
    let c = get(&app, "/v1/consistency?from=6&to=13").await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text());
}
