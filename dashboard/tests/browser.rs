//! The dashboard in a real browser: Debian's headless Chromium under chromedriver
//! (ace_testkit::browser), against a running writer on the real Postgres and NATS.
//! Screenshots of every page land in target/test-artifacts/dashboard_in_a_browser/.

mod common;

use std::time::{Duration, Instant};

use ace_testkit::browser::Browser;
use common::{sign, statement, Opts, Stack, OPERATOR, VIEWER};
use fantoccini::Locator;

/// The element's text; retried for a moment, since a page being replaced by a form's
/// answer can hand out elements that go stale before they are read.
async fn text(b: &Browser, css: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = match b.client().find(Locator::Css(css)).await {
            Ok(e) => e.text().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match got {
            Ok(t) => return t,
            Err(e) if Instant::now() >= deadline => panic!("text of {css}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Clicks, then waits until the browser is at a URL containing `lands_on`: the next
/// reads are then of the new page, not the one being left.
async fn click_to(b: &Browser, css: &str, lands_on: &str) {
    click(b, css).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let url = b
            .client()
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        if url.contains(lands_on) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after clicking {css}: at {url}, not {lands_on}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click(b: &Browser, css: &str) {
    b.client()
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} not on the page: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

async fn fill(b: &Browser, css: &str, value: &str) {
    b.client()
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} not on the page: {e}"))
        .send_keys(value)
        .await
        .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
}

async fn source(b: &Browser) -> String {
    b.client().source().await.expect("page source")
}

async fn shot(b: &Browser, name: &str) {
    let path = b.screenshot(name).await.expect("screenshot");
    let png = std::fs::read(&path).expect("screenshot file");
    assert!(
        png.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        path.display()
    );
}

async fn login(b: &Browser, base: &str, (user, pw): (&str, &str)) {
    b.goto(&format!("{base}/login")).await.expect("login page");
    fill(b, "#username", user).await;
    fill(b, "#password", pw).await;
    click_to(b, "#login", "/").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while b
        .client()
        .current_url()
        .await
        .map(|u| u.path().ends_with("/login"))
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "still on the login page");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        text(b, "#who").await,
        format!(
            "{user} ({})",
            if user == OPERATOR.0 {
                "operator"
            } else {
                "viewer"
            }
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_browser() {
    // No self-reload while the test reads the overview: it would swap elements under it.
    let mut stack = Stack::start(Opts {
        tweak: Box::new(|c| c.refresh = Duration::from_secs(600)),
        ..Opts::default()
    })
    .await;
    let acme = stack.add_producer("acme", true).await;
    let beta = stack.add_producer("beta", false).await;
    for n in 0..3 {
        stack
            .publish("acme", sign(&statement(n, "acme"), &acme).0)
            .await;
    }
    let (beta_raw, beta_digest) = sign(&statement(9, "beta"), &beta);
    stack.publish("beta", beta_raw).await;
    stack.publish("beta", b"not an envelope".to_vec()).await;
    stack
        .wait_count(
            "SELECT count(*) FROM ledger_entries WHERE producer <> '_ledger'",
            3,
        )
        .await;
    stack.wait_count("SELECT count(*) FROM dlq_items", 2).await;
    let beta_item = stack
        .scalar(&format!(
            "SELECT id FROM dlq_items WHERE digest = '{beta_digest}'"
        ))
        .await;
    let junk_item = stack
        .scalar("SELECT id FROM dlq_items WHERE code = 'malformed_envelope'")
        .await;
    let base = stack.dashboard.clone();

    let b = Browser::start("dashboard_in_a_browser")
        .await
        .expect("browser");
    b.goto(&format!("{base}/")).await.expect("overview");
    assert!(b
        .client()
        .current_url()
        .await
        .expect("url")
        .path()
        .ends_with("/login"));
    shot(&b, "01-login").await;

    // Log in; the overview's figures are the database's.
    login(&b, &base, OPERATOR).await;
    let tree = stack
        .scalar("SELECT max(tree_size) FROM ledger_blocks")
        .await;
    assert_eq!(text(&b, "#tree-size").await, tree.to_string());
    assert_eq!(text(&b, "#dlq-open").await, "2");
    assert_eq!(text(&b, "#hour-accepted").await, "3");
    assert_eq!(text(&b, "#hour-rejected").await, "2");
    let height = stack.scalar("SELECT max(height) FROM ledger_blocks").await;
    assert_eq!(text(&b, "#last-block").await, height.to_string());
    // The writers' counters are scraped (and reused for 2 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    while text(&b, "#accepted").await != "3" {
        assert!(
            Instant::now() < deadline,
            "the overview never showed 3 accepted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.client().refresh().await.expect("reload");
    }
    assert_eq!(text(&b, "#leaders").await, "1");
    assert!(
        source(&b).await.contains("<rect"),
        "the intake chart is drawn"
    );
    shot(&b, "02-overview").await;

    // Filter the DLQ by reason, open the item.
    click_to(&b, "header nav a[href='/dlq']", "/dlq").await;
    b.client()
        .find(Locator::Css("#f-code"))
        .await
        .expect("reason filter")
        .select_by_value("unknown_key")
        .await
        .expect("choose unknown_key");
    click_to(&b, "#f-apply", "code=unknown_key").await;
    assert_eq!(text(&b, "#total").await, "1");
    let page = source(&b).await;
    assert!(
        page.contains(&format!("href=\"/dlq/{beta_item}\"")),
        "{page}"
    );
    assert!(!page.contains(&format!("href=\"/dlq/{junk_item}\"")));
    shot(&b, "03-dlq-filtered").await;
    click_to(
        &b,
        &format!("a[href='/dlq/{beta_item}']"),
        &format!("/dlq/{beta_item}"),
    )
    .await;
    assert_eq!(text(&b, "#code").await, "unknown_key");
    assert_eq!(text(&b, "#status").await, "open");
    assert!(text(&b, "#statement")
        .await
        .contains("artifact-beta-9.tar.gz"));
    assert!(text(&b, "#signatures").await.contains("not registered"));
    shot(&b, "04-dlq-item").await;

    // A POST whose CSRF token was tampered with is refused.
    b.client()
        .execute(
            "for (const i of document.querySelectorAll('input[name=csrf]')) { i.value = 'forged'; }",
            vec![],
        )
        .await
        .expect("tamper with the form");
    click_to(&b, "#retry", &format!("/dlq/{beta_item}/retry")).await;
    assert!(text(&b, "#error").await.contains("CSRF"));
    assert!(source(&b).await.contains("403"));
    shot(&b, "05-csrf-refused").await;

    // Register the missing key, retry: accepted.
    stack.register("beta", &beta).await;
    b.goto(&format!("{base}/dlq/{beta_item}"))
        .await
        .expect("item");
    click_to(&b, "#retry", "done=retry").await;
    assert_eq!(text(&b, "#status").await, "retried");
    assert!(text(&b, "#notice").await.contains("Re-submitted"));
    stack
        .wait_count(
            "SELECT count(*) FROM ledger_entries WHERE producer <> '_ledger'",
            4,
        )
        .await;
    shot(&b, "06-retried").await;

    // Its history, from the item's digest link: every step in order.
    click_to(&b, "#digest", "/history?digest=").await;
    let steps = b
        .client()
        .find_all(Locator::Css("#timeline td.step"))
        .await
        .expect("timeline");
    let mut kinds = Vec::new();
    for s in steps {
        kinds.push(s.text().await.expect("step"));
    }
    assert_eq!(kinds, vec!["rejected", "retried", "accepted"]);
    let index = stack
        .scalar(&format!(
            "SELECT idx FROM ledger_entries WHERE digest = '{beta_digest}'"
        ))
        .await;
    assert_eq!(text(&b, "#index").await, index.to_string());
    shot(&b, "07-history").await;

    // Discard the junk with a note.
    b.goto(&format!("{base}/dlq/{junk_item}"))
        .await
        .expect("junk item");
    fill(
        &b,
        "#note",
        "not an envelope at all; the producer's team is told",
    )
    .await;
    click_to(&b, "#discard", "done=discard").await;
    assert_eq!(text(&b, "#status").await, "discarded");
    assert!(text(&b, "#actions")
        .await
        .contains("the producer's team is told"));
    shot(&b, "08-discarded").await;

    b.goto(&format!("{base}/producers"))
        .await
        .expect("producers");
    assert!(text(&b, "#producer-beta").await.contains("valid"));
    shot(&b, "09-producers").await;
    b.goto(&format!("{base}/anchors")).await.expect("anchors");
    shot(&b, "10-anchors").await;

    // A viewer sees the item but has nothing to act with.
    click_to(&b, "#logout", "/login").await;
    login(&b, &base, VIEWER).await;
    b.goto(&format!("{base}/dlq/{junk_item}"))
        .await
        .expect("item as viewer");
    assert!(text(&b, "#viewer-note").await.contains("only operators"));
    assert!(b.client().find(Locator::Css("#retry")).await.is_err());
    assert!(b.client().find(Locator::Css("#discard")).await.is_err());
    shot(&b, "11-viewer").await;

    b.close().await.expect("close the browser");
}
