//! `acectl audit`'s check of the operators' trail (migration V7): the `operator_audit` hash
//! chain, row by row in seq order through [`ChainVerifier`], and the `dlq_actions` rows
//! that point into it. Runs on the audit's main connection, inside its snapshot, so the
//! chain and the actions are read as of the same instant as the log.
//!
//! What the chain cannot show by itself: rows removed from its end leave a shorter chain
//! that still verifies. The summary prints the head hash so that an operator can compare
//! it with one recorded earlier, and an action whose `audit_seq` names a removed row is
//! reported here.

use ace_core::db::DbError;
use ace_core::merkle::Hash;
use ace_core::operator_audit::{AuditRecord, ChainError, ChainVerifier};
use tokio_postgres::{Client, Row};

use crate::audit::{Location, Mismatch};

/// Rows fetched per query: the chain is checked page by page and never held whole.
const PAGE: i64 = 10_000;

/// What a clean check saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrailSummary {
    /// Rows in `operator_audit`, all verified.
    pub rows: i64,
    /// Hash of the last row (32 zero bytes when there is none).
    pub head: Hash,
    /// Rows in `dlq_actions`, each naming an existing audit row and DLQ item.
    pub actions: i64,
}

/// Verifies the chain, then the actions; the first problem is returned as a mismatch.
pub async fn check(c: &Client) -> Result<Result<TrailSummary, Box<Mismatch>>, DbError> {
    let (rows, head) = match check_chain(c).await? {
        Ok(v) => v,
        Err(m) => return Ok(Err(m)),
    };
    let actions = match check_actions(c, rows).await? {
        Ok(n) => n,
        Err(m) => return Ok(Err(m)),
    };
    Ok(Ok(TrailSummary {
        rows,
        head,
        actions,
    }))
}

async fn check_chain(c: &Client) -> Result<Result<(i64, Hash), Box<Mismatch>>, DbError> {
    let stmt = c
        .prepare(
            "SELECT seq, at, actor, role, action, target, detail, prev_hash, hash \
             FROM operator_audit WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .await
        .map_err(DbError::query("preparing the operator_audit query"))?;
    let mut verifier = ChainVerifier::default();
    // Keyset paging on seq rather than on the verifier's count: a removed row must reach
    // the verifier as the gap it is, not shift the pages.
    let mut after = 0i64;
    loop {
        let page = c
            .query(&stmt, &[&after, &PAGE])
            .await
            .map_err(DbError::query("reading operator_audit"))?;
        for row in &page {
            let (rec, prev_hash, hash) =
                decode(row).map_err(DbError::query("decoding operator_audit"))?;
            if let Err(e) = verifier.push(&rec, &prev_hash, &hash) {
                return Ok(Err(chain_mismatch(&e)));
            }
            after = rec.seq;
        }
        if page.len() < PAGE as usize {
            return Ok(Ok(verifier.finish()));
        }
    }
}

fn decode(r: &Row) -> Result<(AuditRecord, Vec<u8>, Vec<u8>), tokio_postgres::Error> {
    Ok((
        AuditRecord {
            seq: r.try_get(0)?,
            at: r.try_get(1)?,
            actor: r.try_get(2)?,
            role: r.try_get(3)?,
            action: r.try_get(4)?,
            target: r.try_get(5)?,
            detail: r.try_get(6)?,
        },
        r.try_get(7)?,
        r.try_get(8)?,
    ))
}

/// The chain error as a mismatch whose first line reads exactly as the error does
/// (`operator_audit row N: …`), with the values it compared on the expected/found lines.
fn chain_mismatch(e: &ChainError) -> Box<Mismatch> {
    let seq = match e {
        ChainError::Detail { seq, .. }
        | ChainError::Canonical { seq, .. }
        | ChainError::Sequence { seq, .. }
        | ChainError::PrevHash { seq, .. }
        | ChainError::Hash { seq, .. } => *seq,
    };
    let location = Location::OperatorAudit(seq);
    let text = e.to_string();
    // The error already names the row; the location prints it once, before the colon.
    let what = text
        .strip_prefix(&format!("{location}: "))
        .unwrap_or(&text)
        .to_owned();
    let (expected, found) = match e {
        ChainError::Detail { why, .. } => {
            ("JSON text (detail is hashed as JSON)".into(), why.clone())
        }
        ChainError::Canonical { why, .. } => ("a row RFC 8785 can encode".into(), why.clone()),
        ChainError::Sequence { seq, expected } => (
            format!("seq {expected} (the rows are numbered from 1 without a gap)"),
            format!("seq {seq}"),
        ),
        ChainError::PrevHash {
            seq,
            expected,
            found,
        } => (
            format!("{expected} (the hash of row {})", seq - 1),
            format!("{found} (stored prev_hash)"),
        ),
        ChainError::Hash {
            expected, found, ..
        } => (
            format!("{expected} (recomputed from the row)"),
            format!("{found} (stored hash)"),
        ),
    };
    Box::new(Mismatch {
        location,
        what,
        expected,
        found,
    })
}

/// Every action names an audit row that exists and a DLQ item that exists. Foreign keys
/// would say so for `dlq_id`, but a superuser can disable them; `audit_seq` has none.
async fn check_actions(c: &Client, rows: i64) -> Result<Result<i64, Box<Mismatch>>, DbError> {
    // One anti-join on the server: the actions are never fetched, only the first bad one.
    let bad = c
        .query_opt(
            "SELECT a.id, a.dlq_id, a.audit_seq, \
                    EXISTS (SELECT 1 FROM operator_audit o WHERE o.seq = a.audit_seq), \
                    EXISTS (SELECT 1 FROM dlq_items d WHERE d.id = a.dlq_id) \
             FROM dlq_actions a \
             WHERE NOT EXISTS (SELECT 1 FROM operator_audit o WHERE o.seq = a.audit_seq) \
                OR NOT EXISTS (SELECT 1 FROM dlq_items d WHERE d.id = a.dlq_id) \
             ORDER BY a.id LIMIT 1",
            &[],
        )
        .await
        .map_err(DbError::query("checking dlq_actions"))?;
    if let Some(r) = bad {
        let decode = DbError::query("decoding dlq_actions");
        let (id, dlq_id, audit_seq, has_audit, _has_item): (i64, i64, i64, bool, bool) = match (
            r.try_get(0),
            r.try_get(1),
            r.try_get(2),
            r.try_get(3),
            r.try_get(4),
        ) {
            (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e)) => (a, b, c, d, e),
            (Err(e), ..)
            | (_, Err(e), ..)
            | (_, _, Err(e), ..)
            | (_, _, _, Err(e), _)
            | (.., Err(e)) => return Err(decode(e)),
        };
        let location = Location::DlqAction(id);
        // The query only returns an action one of the two checks failed for.
        let m = if !has_audit {
            Mismatch {
                location,
                what: format!("audit_seq {audit_seq} names no operator_audit row"),
                expected: format!("an operator_audit row with seq {audit_seq}"),
                found: if rows == 0 {
                    "operator_audit is empty".into()
                } else {
                    format!("operator_audit holds rows 1..{rows}")
                },
            }
        } else {
            Mismatch {
                location,
                what: format!("dlq_id {dlq_id} names no dlq_items row"),
                expected: format!("a dlq_items row with id {dlq_id}"),
                found: "no such row".into(),
            }
        };
        return Ok(Err(Box::new(m)));
    }
    let n: i64 = c
        .query_one("SELECT count(*) FROM dlq_actions", &[])
        .await
        .map_err(DbError::query("counting dlq_actions"))?
        .try_get(0)
        .map_err(DbError::query("counting dlq_actions"))?;
    Ok(Ok(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_error_reads_as_itself_after_the_location() {
        let e = ChainError::Hash {
            seq: 3,
            expected: "aa".into(),
            found: "bb".into(),
        };
        let m = chain_mismatch(&e);
        assert_eq!(format!("{}: {}", m.location, m.what), e.to_string());
        assert_eq!(m.expected, "aa (recomputed from the row)");
        assert_eq!(m.found, "bb (stored hash)");

        let e = ChainError::PrevHash {
            seq: 4,
            expected: "cc".into(),
            found: "dd".into(),
        };
        let m = chain_mismatch(&e);
        assert_eq!(format!("{}: {}", m.location, m.what), e.to_string());
        assert_eq!(m.expected, "cc (the hash of row 3)");
    }
}
