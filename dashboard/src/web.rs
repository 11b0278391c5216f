//! HTTP: routes, sessions on requests, CSRF checks, and the pages (askama templates in
//! dashboard/templates). Handlers only parse, authorise, call a domain function and
//! render; the work is in dlq, history, figures and producers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ace_core::nats::Names;
use askama::Template;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};

use crate::auth::{
    random_token, same_token, LoginLimiter, Role, Session, Sessions, Users, LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
};
use crate::config::Config;
use crate::db::Db;
use crate::dlq::{self, Filter, Intake};
use crate::error::{bad, DashError};
use crate::figures;
use crate::history;
use crate::metrics::Metrics;
use crate::producers;
use crate::scrape::{self, Scrape};

pub struct AppState {
    pub cfg: Config,
    pub db: Db,
    pub intake: Intake,
    pub names: Names,
    pub users: Users,
    pub sessions: Sessions,
    pub limiter: LoginLimiter,
    pub metrics: Metrics,
    pub http: reqwest::Client,
    writers: Mutex<Option<(Instant, Vec<Scrape>)>>,
    anchors: Mutex<Option<(Instant, Vec<Scrape>)>>,
}

pub type Shared = Arc<AppState>;

const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Scraped metrics are reused this long: several operators' pages (and the alert loop)
/// then cost the writers one scrape, while figures stay fresh.
const SCRAPE_CACHE: Duration = Duration::from_secs(2);

impl AppState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: Config,
        db: Db,
        intake: Intake,
        names: Names,
        users: Users,
        metrics: Metrics,
        http: reqwest::Client,
    ) -> AppState {
        AppState {
            sessions: Sessions::new(cfg.session_idle, cfg.session_max),
            limiter: LoginLimiter::new(cfg.login_max_failures, cfg.login_window),
            cfg,
            db,
            intake,
            names,
            users,
            metrics,
            http,
            writers: Mutex::new(None),
            anchors: Mutex::new(None),
        }
    }

    async fn cached(
        &self,
        slot: &Mutex<Option<(Instant, Vec<Scrape>)>>,
        urls: &[String],
    ) -> Vec<Scrape> {
        if let Ok(g) = slot.lock() {
            if let Some((at, v)) = g.as_ref() {
                if at.elapsed() < SCRAPE_CACHE {
                    return v.clone();
                }
            }
        }
        let v = scrape::fetch_all(&self.http, urls, SCRAPE_TIMEOUT).await;
        if let Ok(mut g) = slot.lock() {
            *g = Some((Instant::now(), v.clone()));
        }
        v
    }

    /// The writers' metrics, at most [`SCRAPE_CACHE`] old.
    pub async fn writer_scrapes(&self) -> Vec<Scrape> {
        self.cached(&self.writers, &self.cfg.writer_urls).await
    }

    pub async fn anchor_scrapes(&self) -> Vec<Scrape> {
        self.cached(&self.anchors, &self.cfg.anchor_urls).await
    }
}

// ---------------------------------------------------------------- sessions and CSRF

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(cfg: &Config, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(a) = max_age {
        c.push_str(&format!("; Max-Age={a}"));
    }
    if cfg.cookie_secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn session(s: &AppState, headers: &HeaderMap) -> Option<Session> {
    cookie(headers, SESSION_COOKIE).and_then(|t| s.sessions.get(&t))
}

/// The logged-in operator, or a redirect to the login page.
fn require(s: &AppState, headers: &HeaderMap) -> Result<Session, Box<Response>> {
    session(s, headers).ok_or_else(|| Box::new(Redirect::to("/login").into_response()))
}

fn check_csrf(sess: &Session, form: &HashMap<String, String>) -> Result<(), DashError> {
    match form.get("csrf") {
        Some(t) if same_token(t, &sess.csrf) => Ok(()),
        _ => Err(DashError::Csrf),
    }
}

/// What every page's layout shows of the operator.
pub struct UserView {
    pub name: String,
    pub role: &'static str,
    pub csrf: String,
    pub can_act: bool,
}

fn user_view(s: &Session) -> Option<UserView> {
    Some(UserView {
        name: s.user.clone(),
        role: s.role.as_str(),
        csrf: s.csrf.clone(),
        can_act: s.role == Role::Operator,
    })
}

// ---------------------------------------------------------------- errors

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    user: Option<UserView>,
    status: u16,
    title: String,
    message: String,
}

fn error_page(user: Option<&Session>, e: &DashError) -> Response {
    let status = e.status();
    if status.is_server_error() {
        tracing::warn!(error = %e, "dashboard request failed");
    }
    let page = ErrorPage {
        user: user.and_then(user_view),
        status: status.as_u16(),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        message: e.to_string(),
    };
    let mut r = match page.render() {
        Ok(html) => (status, axum::response::Html(html)).into_response(),
        Err(_) => (status, e.to_string()).into_response(),
    };
    if let DashError::RateLimited(d) = e {
        if let Ok(v) = HeaderValue::from_str(&d.as_secs().max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

fn render<T: Template>(user: &Session, page: &T) -> Response {
    match page.render() {
        Ok(html) => axum::response::Html(html).into_response(),
        Err(e) => error_page(Some(user), &DashError::Template(e)),
    }
}

// ---------------------------------------------------------------- login

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    user: Option<UserView>,
    csrf: String,
    error: Option<String>,
}

fn login_page(s: &AppState, status: StatusCode, error: Option<String>) -> Response {
    let csrf = random_token();
    let page = LoginPage {
        user: None,
        csrf: csrf.clone(),
        error,
    };
    match page.render() {
        Ok(html) => {
            let mut r = (status, axum::response::Html(html)).into_response();
            r.headers_mut().insert(
                header::SET_COOKIE,
                set_cookie(&s.cfg, LOGIN_CSRF_COOKIE, &csrf, Some(600)),
            );
            r
        }
        Err(e) => error_page(None, &DashError::Template(e)),
    }
}

async fn login_form(State(s): State<Shared>) -> Response {
    login_page(&s, StatusCode::OK, None)
}

async fn login(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    // Login CSRF: the form's token must match the cookie set with the form.
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    let given = form.get("csrf").cloned().unwrap_or_default();
    if expected.is_empty() || !same_token(&expected, &given) {
        return error_page(None, &DashError::Csrf);
    }
    let name = form
        .get("username")
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    if name.is_empty() || name.len() > 64 || password.is_empty() || password.len() > 1024 {
        return login_page(
            &s,
            StatusCode::BAD_REQUEST,
            Some("Enter a user name (at most 64 characters) and a password.".into()),
        );
    }
    let ip_key = format!("ip:{}", peer.ip());
    let user_key = format!("user:{name}");
    let keys = [ip_key.as_str(), user_key.as_str()];
    if let Some(wait) = s.limiter.blocked(&keys) {
        s.metrics.logins.with_label_values(&["rate_limited"]).inc();
        tracing::warn!(user = %name, peer = %peer.ip(), "login refused: too many failures");
        return error_page(None, &DashError::RateLimited(wait));
    }
    let st = Arc::clone(&s);
    let (n2, p2) = (name.clone(), password);
    // argon2 is slow by design: off the async workers.
    let role = tokio::task::spawn_blocking(move || st.users.check(&n2, &p2))
        .await
        .ok()
        .flatten();
    let Some(role) = role else {
        s.limiter.fail(&keys);
        s.metrics.logins.with_label_values(&["failed"]).inc();
        tracing::warn!(user = %name, peer = %peer.ip(), "login failed");
        return login_page(
            &s,
            StatusCode::UNAUTHORIZED,
            Some("Wrong user name or password.".into()),
        );
    };
    s.limiter.succeed(&[user_key.as_str()]);
    let (token, sess) = s.sessions.create(&name, role);
    if let Err(e) = record(
        &s,
        &sess,
        "login",
        "session",
        serde_json::json!({"peer": peer.ip().to_string()}),
    )
    .await
    {
        // An action that cannot be audited does not happen: no session.
        s.sessions.remove(&token);
        return error_page(None, &e);
    }
    s.metrics.logins.with_label_values(&["ok"]).inc();
    tracing::info!(user = %name, role = role.as_str(), "logged in");
    let mut r = Redirect::to("/").into_response();
    let h = r.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(&s.cfg, SESSION_COOKIE, &token, None),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(&s.cfg, LOGIN_CSRF_COOKIE, "", Some(0)),
    );
    r
}

/// An audit row on its own (login, logout).
async fn record(
    s: &AppState,
    who: &Session,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), DashError> {
    let mut c = s.db.client().await?;
    let tx = c.transaction().await.map_err(ace_core::db::DbError::query(
        "starting an audit transaction",
    ))?;
    crate::audit::append(&tx, who, action, target, &detail).await?;
    tx.commit()
        .await
        .map_err(ace_core::db::DbError::query("committing an audit row"))?;
    s.metrics.actions.with_label_values(&[action]).inc();
    Ok(())
}

async fn logout(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(sess) = session(&s, &headers) else {
        return Redirect::to("/login").into_response();
    };
    if let Err(e) = check_csrf(&sess, &form) {
        return error_page(Some(&sess), &e);
    }
    if let Some(t) = cookie(&headers, SESSION_COOKIE) {
        s.sessions.remove(&t);
    }
    if let Err(e) = record(&s, &sess, "logout", "session", serde_json::json!({})).await {
        tracing::warn!(error = %e, user = %sess.user, "logout not audited");
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&s.cfg, SESSION_COOKIE, "", Some(0)),
    );
    r
}

// ---------------------------------------------------------------- overview

pub struct Bar {
    pub x: i64,
    pub y: i64,
    pub h: i64,
    pub color: &'static str,
    pub title: String,
}

pub struct LegendItem {
    pub name: String,
    pub color: &'static str,
}

pub struct Chart {
    pub width: i64,
    pub height: i64,
    pub bar_width: i64,
    pub bars: Vec<Bar>,
    pub legend: Vec<LegendItem>,
    pub max: i64,
    pub by_block: bool,
}

const PALETTE: [&str; 8] = [
    "#3b6fb6", "#5fa55a", "#d9a03f", "#8e5ea2", "#3fa7a8", "#b36b3c", "#6c7a89", "#a2a83f",
];
const REJECTED: &str = "#c0392b";

/// Stacked bars per minute: each producer's accepted entries, then rejections on top.
pub fn chart(intake: &figures::Intake) -> Chart {
    let (width, height, bw) = (720i64, 180i64, 12i64);
    let mut producers: Vec<&String> = intake.accepted.values().flat_map(|m| m.keys()).collect();
    producers.sort();
    producers.dedup();
    let color = |p: &str| {
        producers
            .iter()
            .position(|q| q.as_str() == p)
            .map(|i| PALETTE[i % PALETTE.len()])
            .unwrap_or(PALETTE[0])
    };
    let minutes: Vec<i64> = (0..60).map(|i| intake.since + i * 60_000).collect();
    let total = |m: i64| {
        intake
            .accepted
            .get(&m)
            .map(|x| x.values().sum::<i64>())
            .unwrap_or(0)
            + intake
                .rejected
                .get(&m)
                .map(|x| x.values().sum::<i64>())
                .unwrap_or(0)
    };
    let max = minutes.iter().map(|m| total(*m)).max().unwrap_or(0).max(1);
    let mut bars = Vec::new();
    for (i, m) in minutes.iter().enumerate() {
        let mut y = height;
        let when = chrono::DateTime::from_timestamp_millis(*m)
            .map(|t| t.format("%H:%M").to_string())
            .unwrap_or_default();
        let mut push = |n: i64, color: &'static str, title: String| {
            if n <= 0 {
                return;
            }
            let h = (n * height / max).max(1);
            y -= h;
            bars.push(Bar {
                x: i as i64 * bw,
                y,
                h,
                color,
                title,
            });
        };
        if let Some(acc) = intake.accepted.get(m) {
            for (p, n) in acc {
                push(*n, color(p), format!("{when} {p}: {n} accepted"));
            }
        }
        if let Some(rej) = intake.rejected.get(m) {
            for (p, n) in rej {
                push(*n, REJECTED, format!("{when} {p}: {n} rejected"));
            }
        }
    }
    let mut legend: Vec<LegendItem> = producers
        .iter()
        .map(|p| LegendItem {
            name: (*p).clone(),
            color: color(p),
        })
        .collect();
    legend.push(LegendItem {
        name: "rejected".into(),
        color: REJECTED,
    });
    Chart {
        width,
        height,
        bar_width: bw - 2,
        bars,
        legend,
        max,
        by_block: intake.by_block,
    }
}

pub struct ProducerRow {
    pub producer: String,
    pub accepted: String,
    pub duplicate: String,
    pub rejected: String,
    pub p50: String,
    pub p99: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    user: Option<UserView>,
    refresh: u64,
    health: figures::Health,
    writers: figures::WriterFigures,
    producers: Vec<ProducerRow>,
    accepted: String,
    duplicate: String,
    rejected: String,
    dedupe: String,
    chart: Chart,
    hour_accepted: i64,
    hour_rejected: i64,
    now: String,
}

fn count(v: f64) -> String {
    format!("{}", v.round() as i64)
}

fn ms(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1} ms"))
        .unwrap_or_else(|| "–".into())
}

async fn overview(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let sess = match require(&s, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let now = chrono::Utc::now();
    let (health, intake, writers) = tokio::join!(
        figures::health(&s.db, &s.intake.js, &s.names),
        figures::intake_last_hour(&s.db, now.timestamp_millis()),
        s.writer_scrapes()
    );
    let (health, intake) = match (health, intake) {
        (Ok(h), Ok(i)) => (h, i),
        (Err(e), _) | (_, Err(e)) => return error_page(Some(&sess), &e),
    };
    let w = figures::writer_figures(&writers);
    let producers = w
        .by_producer
        .iter()
        .map(|(p, f)| ProducerRow {
            producer: p.clone(),
            accepted: count(f.accepted),
            duplicate: count(f.duplicate),
            rejected: count(f.rejected),
            p50: ms(f.p50_ms),
            p99: ms(f.p99_ms),
        })
        .collect();
    let hour_accepted = intake.accepted.values().flat_map(|m| m.values()).sum();
    let hour_rejected = intake.rejected.values().flat_map(|m| m.values()).sum();
    let page = OverviewPage {
        user: user_view(&sess),
        refresh: s.cfg.refresh.as_secs(),
        accepted: count(w.accepted),
        duplicate: count(w.duplicate),
        rejected: count(w.rejected),
        dedupe: w
            .dedupe_ratio()
            .map(|r| format!("{:.1} %", r * 100.0))
            .unwrap_or_else(|| "–".into()),
        chart: chart(&intake),
        hour_accepted,
        hour_rejected,
        health,
        writers: w,
        producers,
        now: now.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    };
    render(&sess, &page)
}

// ---------------------------------------------------------------- DLQ

pub struct CodeOption {
    pub code: &'static str,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "dlq.html")]
struct DlqPage {
    user: Option<UserView>,
    page: dlq::Page,
    producer: String,
    codes: Vec<CodeOption>,
    status: String,
    from: String,
    to: String,
    /// The filter as a query string (for the next-page link).
    query: String,
    notice: Option<String>,
}

fn query_string(pairs: &[(&'static str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn dlq_list(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let sess = match require(&s, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let notice = q.get("done").map(|d| match d.as_str() {
        "bulk" => format!(
            "Bulk retry: {} item(s) re-submitted{}.",
            q.get("n").map(String::as_str).unwrap_or("?"),
            if q.contains_key("more") {
                "; more match: retry again for the next batch"
            } else {
                ""
            }
        ),
        _ => "Done.".to_string(),
    });
    let filter = match Filter::parse(&q, &["done", "n", "more"]) {
        Ok(f) => f,
        Err(e) => return error_page(Some(&sess), &e),
    };
    let page = match dlq::list(&s.db, &filter).await {
        Ok(p) => p,
        Err(e) => return error_page(Some(&sess), &e),
    };
    let fmt = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%dT%H:%M").to_string())
            .unwrap_or_default()
    };
    let view = DlqPage {
        user: user_view(&sess),
        producer: filter.producer.clone().unwrap_or_default(),
        codes: ace_core::rejection::RejectionCode::ALL
            .iter()
            .map(|c| CodeOption {
                code: c.as_str(),
                selected: filter.code.as_deref() == Some(c.as_str()),
            })
            .collect(),
        status: filter
            .status
            .map(|x| x.as_str().to_string())
            .unwrap_or_default(),
        from: fmt(filter.from),
        to: fmt(filter.to),
        query: query_string(&filter.pairs()),
        page,
        notice,
    };
    render(&sess, &view)
}

#[derive(Template)]
#[template(path = "dlq_item.html")]
struct ItemPage {
    user: Option<UserView>,
    item: dlq::Item,
    notice: Option<String>,
}

fn item_id(raw: &str) -> Result<i64, DashError> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| bad("item id", format!("{raw:?} is not a DLQ item id")))
}

async fn dlq_item(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let sess = match require(&s, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let item = match item_id(&id) {
        Ok(id) => dlq::get(&s.db, id).await,
        Err(e) => Err(e),
    };
    match item {
        Ok(item) => {
            let notice = q.get("done").map(|d| match d.as_str() {
                "retry" => "Re-submitted to the intake: the writer will accept it, or reject it again as a new DLQ item (see the status history).".to_string(),
                "discard" => "Discarded.".to_string(),
                _ => "Done.".to_string(),
            });
            render(
                &sess,
                &ItemPage {
                    user: user_view(&sess),
                    item,
                    notice,
                },
            )
        }
        Err(e) => error_page(Some(&sess), &e),
    }
}

/// Common to every action: a session and its CSRF token. Whether the operator may act
/// is the domain's to say (`dlq::must_operate`), answered 403 like any refusal.
fn acting(
    s: &AppState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Session, Box<Response>> {
    let sess = require(s, headers)?;
    check_csrf(&sess, form).map_err(|e| Box::new(error_page(Some(&sess), &e)))?;
    Ok(sess)
}

/// After an action on one item: count it and show the item, or show why not.
fn acted(
    s: &AppState,
    sess: &Session,
    res: Result<i64, DashError>,
    action: &str,
    done: &str,
) -> Response {
    match res {
        Ok(id) => {
            s.metrics.actions.with_label_values(&[action]).inc();
            Redirect::to(&format!("/dlq/{id}?done={done}")).into_response()
        }
        Err(e) => error_page(Some(sess), &e),
    }
}

async fn dlq_retry(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let sess = match acting(&s, &headers, &form) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let res = match item_id(&id) {
        Ok(id) => dlq::retry(&s.db, &s.intake, &sess, id).await.map(|_| id),
        Err(e) => Err(e),
    };
    acted(&s, &sess, res, "dlq.retry", "retry")
}

async fn dlq_discard(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let sess = match acting(&s, &headers, &form) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let note = form.get("note").map(String::as_str).unwrap_or_default();
    let res = match item_id(&id) {
        Ok(id) => dlq::discard(&s.db, &sess, id, note).await.map(|_| id),
        Err(e) => Err(e),
    };
    acted(&s, &sess, res, "dlq.discard", "discard")
}

async fn dlq_bulk_retry(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let sess = match acting(&s, &headers, &form) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let res = match Filter::parse(&form, &["csrf"]) {
        Ok(f) => dlq::bulk_retry(&s.db, &s.intake, &sess, &f, s.cfg.bulk_retry_max)
            .await
            .map(|r| (f, r)),
        Err(e) => Err(e),
    };
    match res {
        Ok((f, r)) => {
            s.metrics
                .actions
                .with_label_values(&["dlq.bulk_retry"])
                .inc();
            let mut q = f.pairs();
            q.push(("done", "bulk".into()));
            q.push(("n", r.resubmitted.len().to_string()));
            if r.remaining {
                q.push(("more", "1".into()));
            }
            Redirect::to(&format!("/dlq?{}", query_string(&q))).into_response()
        }
        Err(e) => error_page(Some(&sess), &e),
    }
}

// ---------------------------------------------------------------- history

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    user: Option<UserView>,
    digest: String,
    timeline: Option<history::Timeline>,
}

async fn history_page(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let sess = match require(&s, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let raw = q
        .get("digest")
        .map(|d| d.trim().to_string())
        .unwrap_or_default();
    if raw.is_empty() {
        return render(
            &sess,
            &HistoryPage {
                user: user_view(&sess),
                digest: raw,
                timeline: None,
            },
        );
    }
    let res = match history::parse_digest(&raw) {
        Ok(d) => history::of_digest(&s.db, &d).await,
        Err(e) => Err(e),
    };
    match res {
        Ok(t) => render(
            &sess,
            &HistoryPage {
                user: user_view(&sess),
                digest: raw,
                timeline: Some(t),
            },
        ),
        Err(e) => error_page(Some(&sess), &e),
    }
}

// ---------------------------------------------------------------- producers, anchors

#[derive(Template)]
#[template(path = "producers.html")]
struct ProducersPage {
    user: Option<UserView>,
    producers: Vec<producers::ProducerView>,
}

async fn producers_page(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let sess = match require(&s, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let (writers, hour) = tokio::join!(
        s.writer_scrapes(),
        figures::intake_last_hour(&s.db, chrono::Utc::now().timestamp_millis())
    );
    let hour = match hour {
        Ok(h) => h,
        Err(e) => return error_page(Some(&sess), &e),
    };
    match producers::list(&s.db, &figures::writer_figures(&writers), &hour).await {
        Ok(p) => render(
            &sess,
            &ProducersPage {
                user: user_view(&sess),
                producers: p,
            },
        ),
        Err(e) => error_page(Some(&sess), &e),
    }
}

#[derive(Template)]
#[template(path = "anchors.html")]
struct AnchorsPage {
    user: Option<UserView>,
    anchors: producers::AnchorsView,
}

async fn anchors_page(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let sess = match require(&s, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let scrapes = s.anchor_scrapes().await;
    match producers::anchors(&s.db, &scrapes).await {
        Ok(a) => render(
            &sess,
            &AnchorsPage {
                user: user_view(&sess),
                anchors: a,
            },
        ),
        Err(e) => error_page(Some(&sess), &e),
    }
}

// ---------------------------------------------------------------- plumbing

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/app.css"),
    )
        .into_response()
}

async fn readyz(State(s): State<Shared>) -> Response {
    let pg = async {
        let c = s.db.client().await.map_err(|e| e.to_string())?;
        c.simple_query("SELECT 1").await.map_err(|e| e.to_string())
    };
    match pg.await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: Postgres: {e}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    s.metrics.sessions.set(s.sessions.count() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn not_found(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let sess = session(&s, &headers);
    error_page(sess.as_ref(), &DashError::NotFound("this page".into()))
}

/// Counts requests, and sets the headers that keep pages out of frames, caches and
/// other origins' reach.
async fn guard(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let mut r = next.run(req).await;
    s.metrics
        .requests
        .with_label_values(&[&route, r.status().as_str()])
        .inc();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if route != "/static/app.css" {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// Forms are small: a note of 2,000 bytes and a few fields.
const MAX_BODY: usize = 16 * 1024;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/dlq", get(dlq_list))
        .route("/dlq/bulk-retry", post(dlq_bulk_retry))
        .route("/dlq/{id}", get(dlq_item))
        .route("/dlq/{id}/retry", post(dlq_retry))
        .route("/dlq/{id}/discard", post(dlq_discard))
        .route("/history", get(history_page))
        .route("/producers", get(producers_page))
        .route("/anchors", get(anchors_page))
        .route("/static/app.css", get(css))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            guard,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; ace_session=abc; b=2"),
        );
        assert_eq!(cookie(&h, "ace_session").as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn the_chart_stacks_producers_and_rejections() {
        let mut i = figures::Intake {
            since: 0,
            ..Default::default()
        };
        i.accepted.entry(0).or_default().insert("acme".into(), 30);
        i.accepted.entry(0).or_default().insert("beta".into(), 10);
        i.rejected.entry(0).or_default().insert("acme".into(), 10);
        i.accepted
            .entry(60_000)
            .or_default()
            .insert("acme".into(), 5);
        let c = chart(&i);
        assert_eq!(c.max, 50);
        assert_eq!(c.bars.len(), 4);
        let first: i64 = c.bars.iter().filter(|b| b.x == 0).map(|b| b.h).sum();
        assert_eq!(first, c.height);
        assert!(c
            .bars
            .iter()
            .any(|b| b.color == REJECTED && b.title.contains("10 rejected")));
        assert_eq!(c.legend.len(), 3);
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            query_string(&[("from", "2026-12-01T10:00".into()), ("p", "a&b".into())]),
            "from=2026-12-01T10%3A00&p=a%26b"
        );
    }
}
