//! `/healthz`, `/readyz` (role, Postgres, and each sink's progress), `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    Starting = 0,
    Standby = 1,
    Leader = 2,
}

/// One sink's progress, as `/readyz` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkProgress {
    pub kind: &'static str,
    /// Height of the last receipt.
    pub anchored: Option<u64>,
    /// Failed attempts since the last receipt.
    pub failures: u32,
    /// The last failure, for the operator.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
pub struct Status {
    role: AtomicU8,
    postgres_ok: AtomicBool,
    sinks: Mutex<BTreeMap<String, SinkProgress>>,
}

impl Status {
    pub fn set_role(&self, r: Role) {
        self.role.store(r as u8, Ordering::Relaxed);
    }
    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Relaxed) {
            1 => Role::Standby,
            2 => Role::Leader,
            _ => Role::Starting,
        }
    }
    pub fn set_postgres(&self, ok: bool) {
        self.postgres_ok.store(ok, Ordering::Relaxed);
    }
    pub fn set_sink(&self, name: &str, p: SinkProgress) {
        if let Ok(mut m) = self.sinks.lock() {
            m.insert(name.to_string(), p);
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub status: Arc<Status>,
    pub metrics: Arc<Metrics>,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Ready when Postgres answers and the process is anchoring or standing by. A failing
/// sink does not make the anchor unready (it is retried); it shows under `sinks`.
async fn readyz(State(s): State<AppState>) -> Response {
    let role = s.status.role();
    let pg = s.status.postgres_ok.load(Ordering::Relaxed);
    let ready = pg && role != Role::Starting;
    let sinks = s.status.sinks.lock().map(|m| m.clone()).unwrap_or_default();
    let body = serde_json::json!({
        "ready": ready,
        "role": match role {
            Role::Starting => "starting",
            Role::Standby => "standby",
            Role::Leader => "leader",
        },
        "postgres": if pg { "ok" } else { "unreachable" },
        "sinks": sinks,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}
