//! `/healthz`, `/readyz`, `/metrics`. Thin handlers over `Status` and `Metrics`.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::metrics::Metrics;

/// What the writer is doing, as the HTTP endpoints report it.
#[derive(Debug, Default)]
pub struct Status {
    role: AtomicU8,
    postgres_ok: AtomicBool,
    nats_ok: AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    Starting = 0,
    Standby = 1,
    Leader = 2,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Starting => "starting",
            Role::Standby => "standby",
            Role::Leader => "leader",
        }
    }
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
    pub fn set_nats(&self, ok: bool) {
        self.nats_ok.store(ok, Ordering::Relaxed);
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

/// Ready when both servers answer and the writer is either sequencing or standing by.
async fn readyz(State(s): State<AppState>) -> Response {
    let role = s.status.role();
    let pg = s.status.postgres_ok.load(Ordering::Relaxed);
    let nats = s.status.nats_ok.load(Ordering::Relaxed);
    let ready = pg && nats && role != Role::Starting;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "ready": ready,
        "role": role.as_str(),
        "postgres": if pg { "ok" } else { "unreachable" },
        "nats": if nats { "ok" } else { "unreachable" },
    });
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn state() -> AppState {
        AppState {
            status: Arc::new(Status::default()),
            metrics: Arc::new(Metrics::new().unwrap()),
        }
    }

    async fn get(app: Router, path: &str) -> (StatusCode, String) {
        let res = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let code = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readyz_follows_status() {
        let s = state();
        let (code, body) = get(app(s.clone()), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("\"postgres\":\"unreachable\""), "{body}");
        s.status.set_postgres(true);
        s.status.set_nats(true);
        s.status.set_role(Role::Standby);
        let (code, body) = get(app(s.clone()), "/readyz").await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("standby"), "{body}");
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let s = state();
        s.metrics
            .envelopes
            .with_label_values(&["acme", "accepted"])
            .inc_by(3);
        s.metrics.tree_size.set(3);
        let (code, body) = get(app(s), "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(
            body.contains("ace_writer_envelopes_total{outcome=\"accepted\",producer=\"acme\"} 3"),
            "{body}"
        );
        assert!(body.contains("ace_writer_tree_size 3"), "{body}");
    }
}
