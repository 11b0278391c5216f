//! What can go wrong serving a page or an action, and the status each maps to. Pages show
//! the message (it names what failed and why); causes from Postgres and NATS also go to
//! the log.

use std::time::Duration;

use ace_core::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum DashError {
    #[error("Postgres: {0}")]
    Db(#[from] DbError),
    #[error("NATS ({url}): {what}: {why}")]
    Nats {
        url: String,
        what: &'static str,
        why: String,
    },
    #[error("{0} not found")]
    NotFound(String),
    #[error("bad {field}: {why}")]
    BadRequest { field: &'static str, why: String },
    #[error("{0}")]
    Forbidden(String),
    #[error("the form's CSRF token is missing or wrong: reload the page and try again")]
    Csrf,
    #[error("too many failed logins: try again in {} s", .0.as_secs().max(1))]
    RateLimited(Duration),
    #[error("rendering the page: {0}")]
    Template(#[from] askama::Error),
    #[error("operator audit: {0}")]
    Audit(String),
}

impl DashError {
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode as S;
        match self {
            DashError::Db(e) if e.is_transient() || ace_core::db::is_statement_timeout(e) => {
                S::SERVICE_UNAVAILABLE
            }
            DashError::Db(_) | DashError::Template(_) | DashError::Audit(_) => {
                S::INTERNAL_SERVER_ERROR
            }
            DashError::Nats { .. } => S::SERVICE_UNAVAILABLE,
            DashError::NotFound(_) => S::NOT_FOUND,
            DashError::BadRequest { .. } => S::BAD_REQUEST,
            DashError::Forbidden(_) | DashError::Csrf => S::FORBIDDEN,
            DashError::RateLimited(_) => S::TOO_MANY_REQUESTS,
        }
    }
}

pub fn bad(field: &'static str, why: impl Into<String>) -> DashError {
    DashError::BadRequest {
        field,
        why: why.into(),
    }
}
