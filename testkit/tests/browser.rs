//! The browser harness against a real page: a tiny axum app on 127.0.0.1 with a form that
//! POSTs a text field and shows it back. Chromium fills it, submits it, reads the echo and
//! takes a screenshot; the harness's processes are gone after drop. Each test has its own
//! chromedriver and profile, so they run in parallel.

use std::collections::HashMap;
use std::path::Path;

use ace_testkit::browser::descendants;
use ace_testkit::Browser;
use axum::response::Html;
use axum::routing::get;
use axum::{Form, Router};
use fantoccini::Locator;

const FORM: &str = r#"<!doctype html>
<html><head><title>echo</title></head><body>
<form method="post" action="/">
  <label>Value <input type="text" name="value" id="value"></label>
  <button type="submit" id="send">Send</button>
</form>
</body></html>"#;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn echo(Form(form): Form<HashMap<String, String>>) -> Html<String> {
    let value = form.get("value").map_or("", String::as_str);
    Html(format!(
        "<!doctype html><html><head><title>echoed</title></head><body>\
         <p>You sent: <span id=\"echo\">{}</span></p></body></html>",
        escape(value)
    ))
}

/// Serves the form on a free loopback port; returns its URL.
async fn serve() -> String {
    let app = Router::new().route("/", get(|| async { Html(FORM) }).post(echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_is_filled_submitted_echoed_and_screenshotted() {
    let url = serve().await;
    let b = Browser::start("a_form_is_filled_submitted_echoed_and_screenshotted")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    b.goto(&url).await.unwrap_or_else(|e| panic!("{e}"));
    let c = b.client();
    // Markup and a quote: what comes back must be the text typed, escaped and unescaped.
    let sent = "ACE <ledger> \"42\"";
    c.find(Locator::Id("value"))
        .await
        .unwrap()
        .send_keys(sent)
        .await
        .unwrap();
    c.find(Locator::Id("send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let echoed = c
        .wait()
        .for_element(Locator::Id("echo"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(echoed, sent);
    assert_eq!(c.title().await.unwrap(), "echoed");

    let path = b
        .screenshot("echoed")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    assert_eq!(
        path,
        workspace.join(
            "target/test-artifacts/a_form_is_filled_submitted_echoed_and_screenshotted/echoed.png"
        )
    );
    let png = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        png.starts_with(PNG_SIGNATURE) && png.len() > 1000,
        "{} is not a PNG screenshot ({} bytes)",
        path.display(),
        png.len()
    );
    b.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// Whether `pid` still runs (a zombie waiting for its reaper does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_are_separate_and_dropping_one_kills_its_processes() {
    let url = serve().await;
    let (a, b) = tokio::join!(Browser::start("separate_a"), Browser::start("separate_b"));
    let (a, b) = (
        a.unwrap_or_else(|e| panic!("{e}")),
        b.unwrap_or_else(|e| panic!("{e}")),
    );
    assert_ne!(a.driver_url(), b.driver_url());
    assert_ne!(a.profile_dir(), b.profile_dir());
    a.goto(&url).await.unwrap_or_else(|e| panic!("{e}"));
    b.goto(&url).await.unwrap_or_else(|e| panic!("{e}"));

    let driver = a.driver_pid();
    let tree = descendants(driver);
    assert!(
        !tree.is_empty(),
        "chromedriver {driver} has no Chromium processes under it"
    );
    let profile = a.profile_dir();
    assert!(profile.is_dir());
    drop(a);
    // SIGKILL is delivered asynchronously: give the processes a moment to die.
    let all: Vec<u32> = std::iter::once(driver).chain(tree).collect();
    let mut left = all.clone();
    for _ in 0..50 {
        left.retain(|p| running(*p));
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        left.is_empty(),
        "still running 5 s after drop: {left:?} of {all:?}"
    );
    assert!(!profile.exists(), "{} was not removed", profile.display());

    // The other browser is untouched.
    assert_eq!(b.client().title().await.unwrap(), "echo");
    b.close().await.unwrap_or_else(|e| panic!("{e}"));
}
