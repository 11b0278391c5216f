//! The dashboard over HTTP against a running writer, on the real Postgres and NATS:
//! accounts and CSRF, DLQ triage end to end (retry once the key is registered, discard
//! with a note, bulk retry), the status history, the audit chain, the figures, alert
//! hooks, and what the dashboard's role may not do.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ace_core::operator_audit::{AuditRecord, ChainVerifier};
use common::{sign, statement, Browser, Opts, Stack, OPERATOR, VIEWER};

async fn dlq_id(stack: &Stack, digest: &str) -> i64 {
    stack
        .db
        .admin()
        .await
        .query_one(
            "SELECT id FROM dlq_items WHERE digest = $1 ORDER BY id LIMIT 1",
            &[&digest],
        )
        .await
        .expect("DLQ row")
        .get(0)
}

async fn verify_audit_chain(stack: &Stack) -> Vec<String> {
    let rows = stack
        .db
        .admin()
        .await
        .query(
            "SELECT seq, at, actor, role, action, target, detail, prev_hash, hash FROM operator_audit ORDER BY seq",
            &[],
        )
        .await
        .expect("audit rows");
    let mut v = ChainVerifier::default();
    let mut actions = Vec::new();
    for r in &rows {
        let rec = AuditRecord {
            seq: r.get(0),
            at: r.get(1),
            actor: r.get(2),
            role: r.get(3),
            action: r.get(4),
            target: r.get(5),
            detail: r.get(6),
        };
        v.push(&rec, r.get::<_, &[u8]>(7), r.get::<_, &[u8]>(8))
            .expect("the audit chain verifies");
        actions.push(format!("{} {} {}", rec.actor, rec.action, rec.target));
    }
    actions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_end_to_end() {
    let mut stack = Stack::start(Opts::default()).await;
    let acme = stack.add_producer("acme", true).await;
    // beta's key is not registered yet: its envelope lands in the DLQ as unknown_key.
    let beta = stack.add_producer("beta", false).await;
    let (ok_raw, _) = sign(&statement(1, "acme"), &acme);
    let (beta_raw, beta_digest) = sign(&statement(2, "beta"), &beta);
    stack.publish("acme", ok_raw).await;
    stack.publish("beta", beta_raw).await;
    stack.publish("beta", b"{\"payloadType\":".to_vec()).await;
    stack.wait_count("SELECT count(*) FROM dlq_items", 2).await;
    stack
        .wait_count(
            "SELECT count(*) FROM ledger_entries WHERE producer <> '_ledger'",
            1,
        )
        .await;
    let beta_item = dlq_id(&stack, &beta_digest).await;
    let malformed: i64 = stack
        .scalar("SELECT id FROM dlq_items WHERE code = 'malformed_envelope'")
        .await;

    // Not logged in: every page sends to the login page.
    let mut anon = Browser::new(&stack.dashboard);
    for path in ["/", "/dlq", "/dlq/1", "/history", "/producers", "/anchors"] {
        let p = anon.get(path).await;
        assert_eq!(
            (p.status, p.location.as_deref()),
            (303, Some("/login")),
            "{path}"
        );
    }
    // A login without the form's CSRF token is refused; a wrong password too.
    let p = anon
        .post(
            "/login",
            &[("username", OPERATOR.0), ("password", OPERATOR.1)],
        )
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    let p = anon.login((OPERATOR.0, "wrong")).await;
    assert_eq!(p.status, 401);
    assert!(p.body.contains("Wrong user name or password"));

    let mut op = Browser::new(&stack.dashboard);
    let p = op.login(OPERATOR).await;
    assert_eq!(
        (p.status, p.location.as_deref()),
        (303, Some("/")),
        "{}",
        p.body
    );

    // The overview's figures are the database's.
    let p = op.get("/").await;
    assert_eq!(p.status, 200, "{}", p.body);
    let tree: i64 = stack
        .scalar("SELECT max(tree_size) FROM ledger_blocks")
        .await;
    assert!(
        p.body.contains(&format!("id=\"tree-size\">{tree}<")),
        "{}",
        p.body
    );
    assert!(p.body.contains("id=\"dlq-open\">2<"), "{}", p.body);
    assert!(
        p.body.contains(">leader<"),
        "the writer is shown as leader: {}",
        p.body
    );
    assert!(
        p.body.contains("id=\"hour-accepted\">1<") && p.body.contains("id=\"hour-rejected\">2<"),
        "{}",
        p.body
    );

    // The explorer filters by reason; the item page decodes the envelope.
    let p = op.get("/dlq?code=unknown_key").await;
    assert_eq!(p.status, 200);
    assert!(
        p.body.contains(&format!("href=\"/dlq/{beta_item}\"")),
        "{}",
        p.body
    );
    assert!(!p.body.contains(&format!("href=\"/dlq/{malformed}\"")));
    let p = op.get("/dlq?code=no_such_code").await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("bad code"), "{}", p.body);
    let p = op.get(&format!("/dlq/{beta_item}")).await;
    assert!(
        p.body.contains("unknown_key") && p.body.contains("not registered"),
        "{}",
        p.body
    );
    assert!(p.body.contains("https://slsa.dev/provenance/v1"));
    assert!(p.body.contains("id=\"delivered\">1<"), "{}", p.body);
    // The message's identity in JetStream: its sequence and when the server stored it.
    let stored: String = stack
        .db
        .admin()
        .await
        .query_one(
            "SELECT to_char(stored_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM dlq_items WHERE id = $1",
            &[&beta_item],
        )
        .await
        .expect("the item's stored_at")
        .get(0);
    assert!(
        p.body.contains(&format!("id=\"stored-at\">{stored}<")),
        "{}",
        p.body
    );
    let csrf = Browser::csrf(&p.body);

    // A POST without the CSRF token is refused; a viewer cannot act.
    let p = op.post(&format!("/dlq/{beta_item}/retry"), &[]).await;
    assert_eq!(p.status, 403);
    let p = op
        .post(
            &format!("/dlq/{beta_item}/retry"),
            &[("csrf", "0".repeat(64).as_str())],
        )
        .await;
    assert_eq!(p.status, 403);
    let mut viewer = Browser::new(&stack.dashboard);
    assert_eq!(viewer.login(VIEWER).await.status, 303);
    let vp = viewer.get(&format!("/dlq/{beta_item}")).await;
    assert!(vp.body.contains("id=\"viewer-note\""), "{}", vp.body);
    let vcsrf = Browser::csrf(&vp.body);
    let p = viewer
        .post(&format!("/dlq/{beta_item}/retry"), &[("csrf", &vcsrf)])
        .await;
    assert_eq!(p.status, 403);
    assert!(p.body.contains("viewer"), "{}", p.body);
    let p = viewer
        .post(
            &format!("/dlq/{malformed}/discard"),
            &[("csrf", &vcsrf), ("note", "x")],
        )
        .await;
    assert_eq!(p.status, 403);

    // Register beta's key, retry: the same bytes are accepted.
    stack.register("beta", &beta).await;
    let p = op
        .post(&format!("/dlq/{beta_item}/retry"), &[("csrf", &csrf)])
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    stack
        .wait_count(
            "SELECT count(*) FROM ledger_entries WHERE producer <> '_ledger'",
            2,
        )
        .await;
    let accepted: i64 = stack
        .db
        .admin()
        .await
        .query_one(
            "SELECT count(*) FROM ledger_entries WHERE digest = $1",
            &[&beta_digest],
        )
        .await
        .expect("entry")
        .get(0);
    assert_eq!(accepted, 1);
    let p = op.get(&format!("/dlq/{beta_item}?done=retry")).await;
    assert!(
        p.body
            .contains("id=\"status\" class=\"status-retried\">retried<"),
        "{}",
        p.body
    );

    // The status history shows every step, in order.
    let p = op.get(&format!("/history?digest={beta_digest}")).await;
    assert_eq!(p.status, 200);
    let steps: Vec<&str> = p
        .body
        .match_indices("<td class=\"step\">")
        .map(|(i, m)| {
            let rest = &p.body[i + m.len()..];
            &rest[..rest.find('<').unwrap_or(0)]
        })
        .collect();
    assert_eq!(steps, vec!["rejected", "retried", "accepted"], "{}", p.body);
    assert!(p.body.contains(OPERATOR.0));

    // The producers page: beta's key is valid now; its hour: one entry, two rejections.
    let p = op.get("/producers").await;
    let beta_section = &p.body[p.body.find("id=\"producer-beta\"").expect("beta's section")..];
    let beta_section = &beta_section[..beta_section.find("</section>").expect("end")];
    assert!(beta_section.contains("<td>valid</td>"), "{beta_section}");
    assert!(
        beta_section.contains("class=\"hour-accepted\">1<")
            && beta_section.contains("class=\"hour-rejected\">2<"),
        "{beta_section}"
    );
    assert!(beta_section.contains("unknown_key</a> 1"), "{beta_section}");

    // Discard needs a note.
    let p = op
        .post(
            &format!("/dlq/{malformed}/discard"),
            &[("csrf", &csrf), ("note", "  ")],
        )
        .await;
    assert_eq!(p.status, 400);
    let p = op
        .post(
            &format!("/dlq/{malformed}/discard"),
            &[
                ("csrf", &csrf),
                ("note", "truncated by a broken client; reported to its team"),
            ],
        )
        .await;
    assert_eq!(p.status, 303);
    let p = op.get(&format!("/dlq/{malformed}")).await;
    assert!(p.body.contains("discarded") && p.body.contains("truncated by a broken client"));
    let p = op.get("/dlq?status=open").await;
    assert!(p.body.contains("id=\"total\">0<"), "{}", p.body);

    // Bulk retry by filter: gamma's key is unknown, so its items are rejected again, as
    // new DLQ items that point back at the ones retried.
    let gamma = stack.add_producer("gamma", false).await;
    for n in 0..3 {
        stack
            .publish("gamma", sign(&statement(n, "gamma"), &gamma).0)
            .await;
    }
    stack.wait_count("SELECT count(*) FROM dlq_items", 5).await;
    let p = op
        .post(
            "/dlq/bulk-retry",
            &[
                ("csrf", &csrf),
                ("producer", "gamma"),
                ("code", "unknown_key"),
                ("from", ""),
                ("to", ""),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(
        p.location.as_deref().is_some_and(|l| l.contains("n=3")),
        "{:?}",
        p.location
    );
    stack.wait_count("SELECT count(*) FROM dlq_items", 8).await;
    let retried_again = stack
        .scalar(
            "SELECT count(*) FROM dlq_items WHERE producer = 'gamma' AND headers ? 'Ace-Retry-Of'",
        )
        .await;
    assert_eq!(retried_again, 3);
    let p = op
        .post(
            "/dlq/bulk-retry",
            &[("csrf", &csrf), ("producer", "gamma"), ("colour", "red")],
        )
        .await;
    assert_eq!(
        p.status, 400,
        "an unknown filter field must not widen a bulk retry"
    );

    // Every action is in the chained audit, which verifies.
    let actions = verify_audit_chain(&stack).await;
    assert_eq!(
        actions,
        vec![
            "alice login session".to_string(),
            "victor login session".into(),
            format!("alice dlq.retry dlq:{beta_item}"),
            format!("alice dlq.discard dlq:{malformed}"),
            "alice dlq.bulk_retry dlq:producer=gamma&code=unknown_key&status=open".into(),
        ]
    );
    assert_eq!(stack.scalar("SELECT count(*) FROM dlq_actions").await, 5);

    // Logging out ends the session.
    let p = op.get("/").await;
    let csrf = Browser::csrf(&p.body);
    assert_eq!(op.post("/logout", &[("csrf", &csrf)]).await.status, 303);
    assert_eq!(op.get("/").await.location.as_deref(), Some("/login"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_rate_limited() {
    let stack = Stack::start(Opts {
        tweak: Box::new(|c| c.login_max_failures = 3),
        ..Opts::default()
    })
    .await;
    let mut b = Browser::new(&stack.dashboard);
    for _ in 0..3 {
        assert_eq!(b.login((OPERATOR.0, "guess")).await.status, 401);
    }
    // Even the right password waits out the window now.
    let p = b.login(OPERATOR).await;
    assert_eq!(p.status, 429, "{}", p.body);
    assert!(p.body.contains("too many failed logins"));
    let mut other = Browser::new(&stack.dashboard);
    assert_eq!(other.login(VIEWER).await.status, 429, "same client address");
}

/// The dashboard's Prometheus text.
async fn metrics(stack: &Stack) -> String {
    reqwest::get(format!("{}/metrics", stack.dashboard))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_hooks_post_to_the_webhook_and_set_the_gauges() {
    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let hook = {
        let seen = Arc::clone(&seen);
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.lock().expect("lock").push(v);
                    "ok"
                }
            }),
        )
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_url = format!("http://{}/hook", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, hook).await });
    let mut stack = Stack::start(Opts {
        tweak: Box::new(move |c| {
            c.alert_webhook = Some(ace_core::config::Secret::new(hook_url));
            c.alert_interval = Duration::from_secs(1);
            c.alerts.dlq_open = 1;
            c.alerts.dlq_open_for = Duration::from_secs(1);
        }),
        ..Opts::default()
    })
    .await;
    let k = stack.add_producer("acme", false).await;
    for n in 0..2 {
        stack.publish("acme", sign(&statement(n, "a"), &k).0).await;
    }
    stack.wait_count("SELECT count(*) FROM dlq_items", 2).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = seen.lock().expect("lock").clone();
        if let Some(n) = got.iter().find(|n| n["alert"] == "AceDlqOpenItems") {
            assert_eq!(n["status"], "firing");
            assert_eq!(n["value"], 2.0);
            assert!(n["summary"]
                .as_str()
                .is_some_and(|s| s.contains("2 open DLQ items")));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no AceDlqOpenItems notice: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = metrics(&stack).await;
    for line in [
        "ace_dashboard_dlq_open_items 2",
        "ace_dashboard_writer_leaders 1",
        "ace_dashboard_alert_firing{alert=\"AceDlqOpenItems\"} 1",
        "ace_dashboard_alert_webhook_total{result=\"ok\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_writer_unreachable_no_writer_leads_and_the_alert_fires() {
    // A configured writer nobody listens for: down, so not holding the sequencer lock.
    let dead = format!("http://127.0.0.1:{}", ace_testkit::free_port());
    let stack = Stack::start(Opts {
        tweak: Box::new(move |c| {
            c.writer_urls = vec![dead];
            c.alert_interval = Duration::from_secs(1);
            c.alerts.no_leader_for = Duration::from_secs(1);
        }),
        ..Opts::default()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = metrics(&stack).await;
        if metrics.contains("ace_dashboard_alert_firing{alert=\"AceWriterWithoutLeader\"} 1") {
            assert!(
                metrics.contains("ace_dashboard_writer_leaders 0"),
                "{metrics}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "AceWriterWithoutLeader did not fire:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_role_can_change_nothing_but_append() {
    let db = ace_testkit::TestDb::new().await;
    let admin = db.admin().await;
    admin
        .batch_execute(
            "INSERT INTO producers (producer) VALUES ('acme'); \
             INSERT INTO dlq_items (stream_seq, stored_at, subject, producer, code, detail, envelope) \
               VALUES (1, now(), 'ace.intake.acme', 'acme', 'malformed_envelope', 'x', '\\x00')",
        )
        .await
        .expect("fixture");
    let c = ace_core::db::connect(&db.url("ace_dashboard"))
        .await
        .expect("connect");
    let mut tried = 0;
    for table in ace_core::db::ALL_TABLES
        .iter()
        .chain(["dlq_actions", "operator_audit"].iter())
    {
        for sql in [
            format!(
                "UPDATE {table} SET {} = {} WHERE false",
                first_column(table),
                first_column(table)
            ),
            format!("DELETE FROM {table}"),
            format!("TRUNCATE {table}"),
        ] {
            let e = c.batch_execute(&sql).await.expect_err(&sql);
            let code = e.code().map(|c| c.code().to_string());
            assert_eq!(code.as_deref(), Some("42501"), "{sql}: {e:?}");
            tried += 1;
        }
    }
    for sql in [
        "INSERT INTO producers (producer) VALUES ('evil')",
        "INSERT INTO ledger_blocks (height, first_index, tree_size, root_hash, block_hash, prev_block_hash, sealed_at, checkpoint) VALUES (9, 0, 0, '\\x00', '\\x00', '\\x00', 0, '')",
        "INSERT INTO dlq_items (stream_seq, subject, producer, code, detail, envelope) VALUES (2, 's', 'acme', 'too_large', 'x', '\\x00')",
        "CREATE TABLE sneaky (x int)",
        "SELECT nextval('dlq_items_id_seq')",
    ] {
        let e = c.batch_execute(sql).await.expect_err(sql);
        assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{sql}: {e:?}");
        tried += 1;
    }
    assert_eq!(tried, 13 * 3 + 5);
    // The audit trail refuses a row that does not chain, even from its own writer.
    let e = c
        .batch_execute(
            "INSERT INTO operator_audit (seq, at, actor, role, action, target, detail, prev_hash, hash) \
             VALUES (1, 0, 'm', 'operator', 'x', 'y', '{}', '\\x01', decode(repeat('00', 32), 'hex'))",
        )
        .await
        .expect_err("a bad prev_hash");
    assert!(
        e.to_string().contains("prev_hash") || format!("{e:?}").contains("prev_hash"),
        "{e:?}"
    );

    // Started with an over-privileged role, the dashboard refuses, naming the privilege.
    admin
        .batch_execute("GRANT UPDATE ON dlq_items TO ace_dashboard")
        .await
        .expect("grant");
    let users = std::env::temp_dir().join(ace_testkit::unique("users-"));
    std::fs::write(
        &users,
        format!(
            "[[user]]\nname = \"a\"\nrole = \"viewer\"\npassword_hash = \"{}\"\n",
            ace_dashboard::auth::hash_password("pw").expect("hash")
        ),
    )
    .expect("users");
    let cfg = ace_dashboard::Config::with_defaults(
        ace_core::config::Secret::new(db.url("ace_dashboard")),
        users,
    );
    let e = ace_dashboard::prepare(cfg)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("UPDATE on dlq_items") && e.contains("ace_dashboard"),
        "{e}"
    );
}

fn first_column(table: &str) -> &'static str {
    match table {
        "producers" => "status",
        "producer_keys" => "revoke_reason",
        "ledger_entries" => "producer",
        "ledger_subjects" => "name",
        "ledger_tiles" => "width",
        "ledger_blocks" => "checkpoint",
        "dlq_items" => "status",
        "anchor_receipts" => "sink",
        "ledger_policies" => "source",
        "dlq_actions" => "note",
        "operator_audit" => "actor",
        "key_events" => "actor",
        "key_event_entries" => "idx",
        other => panic!("no column known for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_answer_503_naming_postgres_while_it_restarts_and_recover() {
    let pg = Arc::new(
        tokio::task::spawn_blocking(ace_testkit::PgServer::start)
            .await
            .expect("private Postgres"),
    );
    let mut stack = Stack::start(Opts {
        pg_port: Some(pg.port),
        ..Opts::default()
    })
    .await;
    let k = stack.add_producer("acme", false).await;
    stack.publish("acme", sign(&statement(1, "a"), &k).0).await;
    stack.wait_count("SELECT count(*) FROM dlq_items", 1).await;
    let mut b = Browser::new(&stack.dashboard);
    assert_eq!(b.login(OPERATOR).await.status, 303);
    for path in ["/", "/dlq", "/dlq/1", "/producers", "/anchors"] {
        assert_eq!(b.get(path).await.status, 200, "{path}");
    }

    let p = Arc::clone(&pg);
    tokio::task::spawn_blocking(move || p.stop("immediate"))
        .await
        .expect("stop");
    for path in [
        "/",
        "/dlq",
        "/dlq/1",
        "/history?digest=sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "/producers",
        "/anchors",
        "/readyz",
    ] {
        let p = b.get(path).await;
        assert_eq!(p.status, 503, "{path} while Postgres is down: {}", p.body);
        assert!(
            p.body.contains("Postgres"),
            "{path}: the answer names Postgres: {}",
            p.body
        );
        assert!(
            p.body.contains(&pg.port.to_string()) || path == "/readyz",
            "{path}: and its address: {}",
            p.body
        );
    }
    assert_eq!(
        b.get("/healthz").await.status,
        200,
        "alive, though not ready"
    );

    let p = Arc::clone(&pg);
    tokio::task::spawn_blocking(move || p.resume())
        .await
        .expect("resume");
    let deadline = Instant::now() + Duration::from_secs(30);
    for path in ["/readyz", "/", "/dlq/1"] {
        loop {
            let p = b.get(path).await;
            if p.status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{path} still {} after Postgres came back: {}",
                p.status,
                p.body
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    drop(stack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_pages_through_thousands_of_items_without_gaps() {
    let stack = Stack::start(Opts::default()).await;
    stack
        .db
        .admin()
        .await
        .batch_execute(
            "INSERT INTO dlq_items (stream_seq, subject, producer, code, detail, envelope, received_at, stored_at) \
             SELECT n, 'x.intake.p' || (n % 3), 'p' || (n % 3), \
                    (ARRAY['malformed_envelope','unknown_key','bad_signature'])[1 + n % 3], 'detail ' || n, '\\x00', \
                    now() - make_interval(secs => 5000 - n), now() - make_interval(secs => 5000 - n) \
             FROM generate_series(1, 5000) n",
        )
        .await
        .expect("5,000 items");
    let mut b = Browser::new(&stack.dashboard);
    assert_eq!(b.login(VIEWER).await.status, 303);
    // Every page of one producer's items, following the "older" links.
    let mut seen = Vec::new();
    let mut path = "/dlq?producer=p1".to_string();
    loop {
        let p = b.get(&path).await;
        assert_eq!(p.status, 200, "{path}: {}", p.body);
        if seen.is_empty() {
            assert!(p.body.contains("id=\"total\">1667<"), "{}", p.body);
        }
        for (i, _) in p.body.match_indices("class=\"item-link\">") {
            let rest = &p.body[i + 18..];
            seen.push(
                rest[..rest.find('<').expect("id")]
                    .parse::<i64>()
                    .expect("id"),
            );
        }
        match p.body.find("id=\"next\"") {
            Some(_) => {
                let i = p.body.find("href=\"/dlq?").expect("next link");
                let rest = &p.body[i + 6..];
                path = rest[..rest.find('"').expect("end")].replace("&amp;", "&");
                if !path.contains("before=") {
                    // The first href on the page may be a filter link; take the next one.
                    let j = p.body.find("\" id=\"next\"").expect("next");
                    let start = p.body[..j].rfind("href=\"").expect("href") + 6;
                    path = p.body[start..j].replace("&amp;", "&");
                }
            }
            None => break,
        }
    }
    let expected: Vec<i64> = stack
        .db
        .admin()
        .await
        .query(
            "SELECT id FROM dlq_items WHERE producer = 'p1' ORDER BY id DESC",
            &[],
        )
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen.len(), 1667);
    assert_eq!(seen, expected, "every item once, newest first");
    // Time and reason filters combine with paging.
    let p = b.get("/dlq?code=bad_signature&status=open").await;
    assert!(p.body.contains("id=\"total\">1667<"), "{}", p.body);
}

/// Through pgbouncer in session mode (what pgbouncer/pgbouncer.ini gives ace_dashboard:
/// its statements are named, which pgbouncer before 1.21 cannot carry across server
/// connections in transaction mode): the dashboard starts, checks its role, and shows the
/// DLQ read through the pooler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_through_a_session_pooling_pgbouncer() {
    let bouncer = ace_testkit::PgBouncer::start(
        ace_testkit::PG_HOST,
        ace_testkit::PG_PORT,
        "session",
        &["ace_dashboard"],
    );
    let port = bouncer.port;
    let from = format!(":{}/", ace_testkit::PG_PORT);
    let stack = Stack::start(Opts {
        tweak: Box::new(move |cfg| {
            let url = cfg
                .database_url
                .expose()
                .replace(&from, &format!(":{port}/"));
            cfg.database_url = ace_core::config::Secret::new(url);
        }),
        ..Opts::default()
    })
    .await;
    stack.publish("nobody", b"{\"payloadType\":".to_vec()).await;
    stack.wait_count("SELECT count(*) FROM dlq_items", 1).await;
    let mut op = Browser::new(&stack.dashboard);
    let p = op.login(OPERATOR).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let p = op.get("/dlq").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("malformed_envelope"), "{}", p.body);
    let log = bouncer.log();
    assert!(
        log.contains(&format!("db={} user=ace_dashboard", stack.db.name)),
        "no dashboard login in pgbouncer's log:\n{log}"
    );
}
