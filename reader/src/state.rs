//! `GET /v1/state/{service}?at=TIME`: the state snapshot of a service in force at a time,
//! its components and the mutations recorded after it, located from the log (issue 11,
//! docs/state.md). The reader only locates and decodes; `acectl state resolve` fetches
//! every entry it names and verifies each against a signed checkpoint.

use std::collections::HashMap;

use ace_core::db::stored_u64;
use ace_core::envelope::Envelope;
use ace_core::state::{service_subject, SnapshotPredicate, MUTATION_V1, SNAPSHOT_V1};
use ace_core::statement::Statement;
use serde::Serialize;
use tokio_postgres::Client;
use utoipa::ToSchema;

use crate::problem::ApiError;

/// Mutations listed at most, after a snapshot; more is said with `truncated`.
pub const MAX_MUTATIONS: i64 = 10_000;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoggedRef {
    pub index: u64,
    pub digest: String,
    /// Unix ms.
    pub integrated_time: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ComponentRef {
    /// code, config or environment.
    pub kind: String,
    /// The component's envelope digest, as the snapshot names it.
    pub envelope: String,
    /// accepted (with its index), rejected, or unknown.
    pub status: &'static str,
    pub index: Option<u64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StateAt {
    pub service: String,
    /// The time asked about, unix ms.
    pub at: i64,
    pub snapshot: LoggedRef,
    /// The snapshot's predicate, as decoded from its envelope.
    #[schema(value_type = Object)]
    pub predicate: serde_json::Value,
    pub components: Vec<ComponentRef>,
    /// Mutation statements of the service after the snapshot and at or before `at`, in
    /// log order.
    pub mutations: Vec<LoggedRef>,
    /// True when there were more than 10,000 mutations (only the first are listed).
    pub truncated: bool,
}

/// `[a-z0-9][a-z0-9._-]{0,127}`.
pub fn check_service(s: &str) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || (i > 0 && matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(
            "service",
            "must be 1-128 of a-z 0-9 . _ - (starting with a letter or digit)",
        ))
    }
}

/// `at`: RFC 3339, or unix milliseconds.
pub fn parse_at(v: &str) -> Result<i64, ApiError> {
    if !v.is_empty() && v.len() <= 16 && v.bytes().all(|b| b.is_ascii_digit()) {
        return v
            .parse()
            .map_err(|_| ApiError::bad("at", "unix milliseconds out of range"));
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| ApiError::bad("at", "must be an RFC 3339 time or unix milliseconds"))
}

async fn q(
    c: &Client,
    what: &'static str,
    sql: &str,
    p: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, ApiError> {
    crate::store::query_unnamed(c, what, sql, p)
        .await
        .map_err(ApiError::from)
}

pub async fn state_at(c: &Client, service: &str, at: i64) -> Result<StateAt, ApiError> {
    let (_, subject) = service_subject(service);
    let rows = q(
        c,
        "finding the service's snapshot",
        "SELECT e.idx, e.digest, e.integrated_time, e.envelope FROM ledger_subjects s \
         JOIN ledger_entries e ON e.idx = s.idx \
         WHERE s.algorithm = 'sha256' AND s.value = $1 AND e.predicate_type = $2 AND e.integrated_time <= $3 \
         ORDER BY s.idx DESC LIMIT 1",
        &[&subject, &SNAPSHOT_V1, &at],
    )
    .await?;
    let r = rows.first().ok_or_else(|| {
        ApiError::not_found(
            "at",
            format!(
                "no state snapshot of service {service:?} was logged at or before {at} (unix ms)"
            ),
        )
    })?;
    let idx: i64 = r.get(0);
    let snapshot = LoggedRef {
        index: stored_u64(idx, "ledger_entries.idx")?,
        digest: r.get(1),
        integrated_time: r.get(2),
    };
    let raw: &[u8] = r.get(3);
    // Admitted envelopes parse; a predicate that is not a snapshot is the producer's
    // error, reported to the client rather than hidden.
    let predicate = Envelope::parse(raw)
        .ok()
        .and_then(|e| Statement::parse(&e.payload).ok())
        .and_then(|s| s.predicate)
        .unwrap_or(serde_json::Value::Null);
    let components = match serde_json::from_value::<SnapshotPredicate>(predicate.clone()) {
        Ok(p) => {
            let digests: Vec<String> = p.components.iter().map(|c| c.envelope.clone()).collect();
            let found: HashMap<String, i64> = q(
                c,
                "looking up the snapshot's components",
                "SELECT digest, idx FROM ledger_entries WHERE digest = ANY($1)",
                &[&digests],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
            let rejected: Vec<String> = q(
                c,
                "looking up the snapshot's components in the DLQ",
                "SELECT DISTINCT digest FROM dlq_items WHERE digest = ANY($1)",
                &[&digests],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
            let mut out = Vec::new();
            for comp in p.components {
                let (status, index) = match found.get(&comp.envelope) {
                    Some(i) => ("accepted", Some(stored_u64(*i, "ledger_entries.idx")?)),
                    None if rejected.contains(&comp.envelope) => ("rejected", None),
                    None => ("unknown", None),
                };
                out.push(ComponentRef {
                    kind: comp.kind.as_str().to_string(),
                    envelope: comp.envelope,
                    status,
                    index,
                });
            }
            out
        }
        Err(_) => Vec::new(),
    };
    let rows = q(
        c,
        "listing the service's mutations",
        &format!(
            "SELECT e.idx, e.digest, e.integrated_time FROM ledger_subjects s \
             JOIN ledger_entries e ON e.idx = s.idx \
             WHERE s.algorithm = 'sha256' AND s.value = $1 AND e.predicate_type = $2 \
               AND s.idx > $3 AND e.integrated_time <= $4 \
             ORDER BY s.idx LIMIT {}",
            MAX_MUTATIONS + 1
        ),
        &[&subject, &MUTATION_V1, &idx, &at],
    )
    .await?;
    let truncated = rows.len() as i64 > MAX_MUTATIONS;
    let mut mutations = Vec::new();
    for r in rows.iter().take(MAX_MUTATIONS as usize) {
        mutations.push(LoggedRef {
            index: stored_u64(r.get(0), "ledger_entries.idx")?,
            digest: r.get(1),
            integrated_time: r.get(2),
        });
    }
    Ok(StateAt {
        service: service.to_string(),
        at,
        snapshot,
        predicate,
        components,
        mutations,
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_times_are_checked() {
        assert!(check_service("billing-api.v2").is_ok());
        for bad in ["", "Billing", "-x", "a b", &"a".repeat(129)] {
            assert!(check_service(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_at("1764600000000").expect("ms"), 1_764_600_000_000);
        assert_eq!(
            parse_at("2025-12-01T14:40:00Z").expect("rfc3339"),
            1_764_600_000_000
        );
        assert!(parse_at("yesterday").is_err());
        assert!(parse_at("99999999999999999999").is_err());
    }
}
