//! Appending to the operators' hash-chained audit trail (`operator_audit`, V7), inside the
//! transaction of the action it records, so that an action and its record commit or fail
//! together.

use ace_core::canonical::to_canonical_json;
use ace_core::db::{stored_hash, DbError};
use ace_core::operator_audit::{row_hash, AuditRecord, GENESIS};
use deadpool_postgres::Transaction;

use crate::auth::Session;
use crate::error::DashError;

/// Serialises appends across dashboard processes: each row names the hash of the one
/// before, so two appends must not read the same head. ("ace_audt")
const AUDIT_LOCK: i64 = 0x6163_655f_6175_6474;

/// Appends one row and returns its seq.
pub async fn append(
    tx: &Transaction<'_>,
    who: &Session,
    action: &str,
    target: &str,
    detail: &serde_json::Value,
) -> Result<i64, DashError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
        .await
        .map_err(DbError::query("locking the operator audit"))?;
    let head = tx
        .query_opt(
            "SELECT seq, hash FROM operator_audit ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(DbError::query("reading the operator audit's head"))?;
    let (seq, prev) = match head {
        Some(r) => (
            r.get::<_, i64>(0) + 1,
            stored_hash(r.get::<_, &[u8]>(1), "operator_audit.hash")?,
        ),
        None => (1, GENESIS),
    };
    let detail = to_canonical_json(detail)
        .map_err(|e| DashError::Audit(e.to_string()))
        .and_then(|b| String::from_utf8(b).map_err(|e| DashError::Audit(e.to_string())))?;
    let rec = AuditRecord {
        seq,
        at: chrono::Utc::now().timestamp_millis(),
        actor: who.user.clone(),
        role: who.role.as_str().into(),
        action: action.into(),
        target: target.into(),
        detail,
    };
    let hash = row_hash(&prev, &rec).map_err(|e| DashError::Audit(e.to_string()))?;
    tx.execute(
        "INSERT INTO operator_audit (seq, at, actor, role, action, target, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &rec.seq,
            &rec.at,
            &rec.actor,
            &rec.role,
            &rec.action,
            &rec.target,
            &rec.detail,
            &prev.as_slice(),
            &hash.as_slice(),
        ],
    )
    .await
    .map_err(DbError::query("appending to the operator audit"))?;
    Ok(seq)
}
