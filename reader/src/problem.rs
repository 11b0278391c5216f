//! Errors as RFC 9457 problem details. Every error names what was wrong: the parameter
//! and why, the id that is not in the log, or the server that did not answer.

use ace_core::db::DbError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URN naming the kind of problem (see docs/reader.md, "Errors").
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The query or path parameter at fault, for 400 and 404 answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter that is malformed or out of range.
    #[error("{parameter}: {detail}")]
    BadParameter {
        parameter: &'static str,
        detail: String,
    },
    /// A well-formed id that names nothing in the log.
    #[error("{parameter}: {detail}")]
    NotFound {
        parameter: &'static str,
        detail: String,
    },
    /// Only GET (and HEAD) are served.
    #[error("{0} is not served here: the reader answers GET and HEAD only")]
    MethodNotAllowed(String),
    /// The ledger has no block yet, so there is no checkpoint to serve or prove against.
    #[error("the ledger has no checkpoint yet: the writer has not sealed the genesis block")]
    NoCheckpoint,
    /// Postgres did not answer (down, timed out, pool exhausted). The cause is logged, not
    /// sent: it names the database server.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Anything else that is the reader's fault; the cause is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
    /// Too many requests in flight.
    #[error("the reader is at its limit of {0} requests in flight; retry shortly")]
    Overloaded(usize),
    /// The request ran past the configured limit.
    #[error("the request took longer than {0} ms")]
    Timeout(u128),
    /// Stored data that contradicts itself (`acectl audit` will say more).
    #[error("stored data is inconsistent: {0} (run `acectl audit`)")]
    Corrupt(String),
}

impl ApiError {
    pub fn bad(parameter: &'static str, detail: impl Into<String>) -> Self {
        ApiError::BadParameter {
            parameter,
            detail: detail.into(),
        }
    }

    pub fn not_found(parameter: &'static str, detail: impl Into<String>) -> Self {
        ApiError::NotFound {
            parameter,
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadParameter { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } | ApiError::NoCheckpoint => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) | ApiError::Overloaded(_) | ApiError::Timeout(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Corrupt(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn problem(&self) -> Problem {
        let (kind, title, parameter) = match self {
            ApiError::BadParameter { parameter, .. } => (
                "urn:ace-ledger:problem:bad-parameter",
                "Bad parameter",
                Some(*parameter),
            ),
            ApiError::NotFound { parameter, .. } => (
                "urn:ace-ledger:problem:not-found",
                "Not in the log",
                Some(*parameter),
            ),
            ApiError::MethodNotAllowed(_) => (
                "urn:ace-ledger:problem:method-not-allowed",
                "Method not allowed",
                None,
            ),
            ApiError::NoCheckpoint => (
                "urn:ace-ledger:problem:no-checkpoint",
                "No checkpoint yet",
                None,
            ),
            ApiError::Unavailable(_) => (
                "urn:ace-ledger:problem:database-unavailable",
                "Database unavailable",
                None,
            ),
            ApiError::Overloaded(_) => (
                "urn:ace-ledger:problem:overloaded",
                "Too many requests in flight",
                None,
            ),
            ApiError::Timeout(_) => ("urn:ace-ledger:problem:timeout", "Request timed out", None),
            ApiError::Internal(_) => ("urn:ace-ledger:problem:internal", "Internal error", None),
            ApiError::Corrupt(_) => (
                "urn:ace-ledger:problem:inconsistent-data",
                "Stored data is inconsistent",
                None,
            ),
        };
        let detail = match self {
            ApiError::BadParameter { detail, .. } | ApiError::NotFound { detail, .. } => {
                detail.clone()
            }
            ApiError::Unavailable(_) => {
                "the database did not answer in time or is unreachable; retry shortly (the cause is in the reader's log)".into()
            }
            ApiError::Internal(_) => "the reader failed; the cause is in its log".into(),
            // About the log's own data, which is public: naming the entry or tile helps.
            other => other.to_string(),
        };
        Problem {
            kind,
            title,
            status: self.status().as_u16(),
            detail,
            parameter,
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        if ace_core::db::is_statement_timeout(&e) || e.is_transient() {
            return ApiError::Unavailable(e.to_string());
        }
        match e {
            DbError::Corrupt(m) => ApiError::Corrupt(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ApiError::Unavailable(format!("no Postgres connection: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut r = (status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(self, ApiError::MethodNotAllowed(_)) {
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
        }
        if matches!(self, ApiError::Overloaded(_) | ApiError::Unavailable(_)) {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_parameter() {
        let p = ApiError::bad("limit", "must be a decimal integer, got \"x\"").problem();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["status"], 400);
        assert_eq!(v["parameter"], "limit");
        assert_eq!(v["type"], "urn:ace-ledger:problem:bad-parameter");
        assert!(v["detail"].as_str().unwrap().contains("\"x\""));
        let v = serde_json::to_value(ApiError::NoCheckpoint.problem()).unwrap();
        assert_eq!(v["status"], 404);
        assert!(v.get("parameter").is_none());
        // Server-side causes stay in the log: they name hosts, roles and queries.
        for e in [
            ApiError::Unavailable(
                "cannot connect to Postgres at db.internal:5432/ace as ace_reader".into(),
            ),
            ApiError::Internal(
                "reading an entry: permission denied for table ledger_entries".into(),
            ),
        ] {
            let v = serde_json::to_value(e.problem()).unwrap();
            let detail = v["detail"].as_str().unwrap();
            assert!(
                !detail.contains("db.internal") && !detail.contains("permission"),
                "{detail}"
            );
            assert!(detail.contains("log"), "{detail}");
        }
    }
}
